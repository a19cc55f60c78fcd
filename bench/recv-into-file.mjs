#!/usr/bin/env node
// What does it cost the kernel to land received bytes in a tmpfs file, by the shape of the
// receiver's memory? Answers "would receiving straight into the destination (mmap) or a smaller
// receive footprint make `fanout cp` cheaper per byte?" without fanout in the way: a small C
// program (compiled here with the system's cc) sends a 1 GiB tmpfs file to itself over loopback
// with sendfile and receives it in one of these shapes, writing it to another tmpfs file:
//   copy64k  — read 64 KiB into one reused buffer, write it (curl's shape)
//   ring:N   — read whole 4 MiB pages into a ring of N pages, write each page in 1 MiB pieces once
//              complete (fanout's shape: a window of pages in flight, written once verified);
//              ring:N:huge asks for transparent huge pages on the ring (lib/memory does for slabs);
//              ring:N:warm (or ring:N:huge:warm) touches the ring before the transfer and leaves that
//              first touch out of the figure (a long-lived reader's steady state)
//   stream:N — the ring of N pages, each 256 KiB written as soon as it is read (the bytes still
//              in the CPU's caches)
//   mmap     — ftruncate the destination, map it, read straight into the mapping (no write copy,
//              one page fault per 4 KiB)
//   mmap-pop — fallocate it, map it, MADV_POPULATE_WRITE each 4 MiB before reading into it
// Prints the receiver's system CPU seconds per GiB (median of --runs) and each shape ÷ copy64k in
// the same run. `--parallel 8` runs 8 receivers at once (their CPU summed), as the lab's clients.
//
//   node bench/recv-into-file.mjs [--runs 3] [--parallel 1] [--modes copy64k,ring:2,ring:32,...]
//                                 [--dir /dev/shm]
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { benchArgs, median, writeRandomFile } from './common.mjs';

const args = benchArgs({ runs: '3', parallel: '1', modes: 'copy64k,ring:2,ring:32,ring:32:huge,stream:32,mmap,mmap-pop', dir: '/dev/shm' });
const GIB = 1 << 30;

const SOURCE = String.raw`
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define PAGE (4UL << 20)
#define PIECE (1UL << 20)
static void die(const char *what) { perror(what); exit(1); }
static size_t readFull(int s, char *p, size_t n) {
  size_t got = 0;
  while (got < n) { ssize_t r = read(s, p + got, n - got); if (r <= 0) break; got += r; }
  return got;
}
int main(int argc, char **argv) {
  if (argc != 6) { fprintf(stderr, "usage: recv MODE RING FLAGS SRC DST\n"); return 2; }
  const char *mode = argv[1]; size_t ring = atol(argv[2]); int huge = atoi(argv[3]) & 1, warm = atoi(argv[3]) & 2;
  struct rusage r0 = { 0 };
  int src = open(argv[4], O_RDONLY); if (src < 0) die("open source");
  size_t size = lseek(src, 0, SEEK_END);
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
  socklen_t len = sizeof a;
  if (bind(ls, (void *)&a, sizeof a) || getsockname(ls, (void *)&a, &len) || listen(ls, 1)) die("listen");
  if (fork() == 0) {
    int c = accept(ls, 0, 0); off_t at = 0;
    while ((size_t)at < size) if (sendfile(c, src, &at, size - at) <= 0) break;
    _exit(0);
  }
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(s, (void *)&a, sizeof a)) die("connect");
  unlink(argv[5]);
  int d = open(argv[5], O_RDWR | O_CREAT | O_TRUNC, 0600); if (d < 0) die("open destination");
  size_t got = 0;
  if (!strcmp(mode, "copy64k")) {
    char *b = malloc(65536); ssize_t r;
    while (got < size && (r = read(s, b, 65536)) > 0) { if (write(d, b, r) != r) die("write"); got += r; }
  } else if (!strcmp(mode, "ring") || !strcmp(mode, "stream")) {
    int stream = !strcmp(mode, "stream");
    char *pages = aligned_alloc(2 << 20, ring * PAGE);
    if (huge) madvise(pages, ring * PAGE, MADV_HUGEPAGE);
    // A warm ring is touched before the transfer and that first touch left out of the figure:
    // a long-lived reader's steady state, where its buffers were faulted in long ago.
    if (warm) { memset(pages, 1, ring * PAGE); getrusage(RUSAGE_SELF, &r0); }
    for (size_t i = 0; got < size; i++) {
      char *p = pages + (i % ring) * PAGE; size_t n = size - got < PAGE ? size - got : PAGE;
      if (stream) {
        for (size_t at = 0; at < n; at += 256 << 10) {
          size_t piece = n - at < (256 << 10) ? n - at : (256 << 10);
          if (readFull(s, p + at, piece) != piece || pwrite(d, p + at, piece, got + at) != (ssize_t)piece) die("stream");
        }
      } else {
        if (readFull(s, p, n) != n) die("read");
        for (size_t at = 0; at < n; at += PIECE) {
          size_t piece = n - at < PIECE ? n - at : PIECE;
          if (pwrite(d, p + at, piece, got + at) != (ssize_t)piece) die("pwrite");
        }
      }
      got += n;
    }
  } else {
    int populate = !strcmp(mode, "mmap-pop");
    if (populate ? fallocate(d, 0, 0, size) : ftruncate(d, size)) die("size destination");
    char *m = mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, d, 0); if (m == MAP_FAILED) die("mmap");
    for (; got < size; got += PAGE) {
      size_t n = size - got < PAGE ? size - got : PAGE;
      if (populate) madvise(m + got, n, MADV_POPULATE_WRITE);
      if (readFull(s, m + got, n) != n) die("read into mapping");
    }
    munmap(m, size);
  }
  close(s); wait(0);
  struct rusage r; getrusage(RUSAGE_SELF, &r);
  printf("%zu %.3f %.3f\n", got, r.ru_utime.tv_sec - r0.ru_utime.tv_sec + (r.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6,
         r.ru_stime.tv_sec - r0.ru_stime.tv_sec + (r.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6);
  unlink(argv[5]);
  return got == size ? 0 : 1;
}
`;

const dir = await mkdtemp(join(args.dir, 'fanout-recv-'));
try {
  await writeFile(join(dir, 'recv.c'), SOURCE);
  execFileSync('cc', ['-O2', '-o', join(dir, 'recv'), join(dir, 'recv.c')]);
  const source = join(dir, 'source.bin');
  await writeRandomFile(source, GIB);
  const modes = args.modes.split(',');
  const parallel = Number(args.parallel);
  const receive = (shape, k) =>
    new Promise((resolve, reject) => {
      const [mode, ring = '1', ...flags] = shape.split(':');
      const flagBits = (flags.includes('huge') ? 1 : 0) | (flags.includes('warm') ? 2 : 0);
      const proc = spawn(join(dir, 'recv'), [mode, ring, String(flagBits), source, join(dir, `dest${k}`)], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      proc.stdout.on('data', (d) => (out += d));
      proc.once('exit', (code) => (code === 0 ? resolve(Number(out.trim().split(' ')[2])) : reject(new Error(`${shape} exited ${code}`))));
    });
  const sys = Object.fromEntries(modes.map((m) => [m, []]));
  for (let run = 0; run < Number(args.runs); run++) {
    // Shapes alternate within a run, so a busy moment of the machine spreads over all of them.
    for (const mode of modes) {
      const each = await Promise.all(Array.from({ length: parallel }, (_, k) => receive(mode, k)));
      sys[mode].push(each.reduce((a, b) => a + b, 0) / parallel);
    }
  }
  const base = median(sys[modes[0]]);
  console.log(`receiver's system CPU s per GiB, median of ${args.runs}, ${parallel} receiver(s) at once, into ${args.dir}`);
  for (const mode of modes) {
    const m = median(sys[mode]);
    console.log(`  ${mode.padEnd(14)} ${m.toFixed(3)}  ÷ ${modes[0]} ${(m / base).toFixed(2)}   runs ${sys[mode].map((x) => x.toFixed(2)).join(' ')}`);
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
