// The most bytes one write(2) into a file carries (src/lib/writepiece holds the same number and
// says why): a buffered write as large as a 2 MiB page-cache folio takes an order-9 block of free
// memory, which a VM with free page reporting must fault back in from its host.
#ifndef FANOUT_WRITEPIECE_H
#define FANOUT_WRITEPIECE_H

#include <stddef.h>

#define FANOUT_WRITE_PIECE ((size_t)1 << 20)

#endif
