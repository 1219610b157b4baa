"""glibc heap fragmentation: a burst of small C allocations, mostly freed.

Before "ready", mallocs --count blocks of --size bytes through ctypes
(touching each), then frees 63 of every 64. The survivors are spread over
the whole burst, so brk cannot shrink and RSS stays high; malloc_trim(0)
gives most of it back (procmem.md section 3: 200k x 1000 B, -181 MB).
Prints "burst <bytes>" and "kept <n>" before "ready <pid>".
"""
from __future__ import print_function

import ctypes

import _target


def main():
    p = _target.parser(__doc__, rate=0.0, initial=0)
    p.add_argument("--count", type=int, default=200000)
    p.add_argument("--size", type=int, default=1000)
    args = p.parse_args()
    libc = _target.libc()
    malloc = libc.malloc
    malloc.argtypes = [ctypes.c_size_t]
    malloc.restype = ctypes.c_void_p
    free = libc.free
    free.argtypes = [ctypes.c_void_p]
    free.restype = None
    blocks = []
    for _ in range(args.count):
        addr = malloc(args.size)
        if not addr:
            raise MemoryError("malloc(%d) failed" % args.size)
        ctypes.memset(addr, 0x5A, args.size)
        blocks.append(addr)
    kept = []
    for i, addr in enumerate(blocks):
        if i % 64 == 0:
            kept.append(addr)
        else:
            free(addr)
    del blocks
    _target.emit("burst", args.count * args.size)
    _target.emit("kept", len(kept))
    _target.run(args)


if __name__ == "__main__":
    main()
