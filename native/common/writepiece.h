// The most bytes one write(2) into a file carries (src/lib/writepiece holds the same number and
// says why): a buffered write as large as a 2 MiB page-cache folio gets one, and on a VM that
// reports free 2 MiB blocks to its host a new 2 MiB folio cost several times more to fill.
#ifndef FANOUT_WRITEPIECE_H
#define FANOUT_WRITEPIECE_H

#include <stddef.h>

#define FANOUT_WRITE_PIECE ((size_t)1 << 20)

#endif
