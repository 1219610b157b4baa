"""Native heap leak: libc malloc(--size) via ctypes, memset, never freed.

No Python object is kept per event (the addresses are dropped), so RssAnon
grows while Python object counts stay flat.
Prints "size <bytes>" before "ready <pid>".
"""
from __future__ import print_function

import ctypes

import _target


def main():
    p = _target.parser(__doc__)
    p.add_argument("--size", type=int, default=65536, help="bytes per malloc")
    args = p.parse_args()

    libc = _target.libc()
    malloc = libc.malloc
    malloc.argtypes = [ctypes.c_size_t]
    malloc.restype = ctypes.c_void_p
    size = args.size

    def leak(i):
        addr = malloc(size)
        if not addr:
            raise MemoryError("malloc(%d) failed" % size)
        ctypes.memset(addr, 0x5A, size)

    _target.emit("size", size)
    _target.run(args, leak)


if __name__ == "__main__":
    main()
