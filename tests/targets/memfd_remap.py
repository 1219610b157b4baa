"""memfd leak: one memfd, mmapped again and again, every mapping kept.

Uses os.memfd_create (3.8+) or, on older interpreters, libc memfd_create via
ctypes. Mappings show in /proc/PID/maps as "/memfd:<memfd> (deleted)".
Prints "memfd <name>", "method os|ctypes" and "size <bytes>" before "ready <pid>".
"""
from __future__ import print_function

import mmap
import os

import _target

NAME = "memsleuth-memfd"


def memfd_create(name):
    if hasattr(os, "memfd_create"):
        return os.memfd_create(name), "os"
    import ctypes
    libc = _target.libc()
    try:
        fn = libc.memfd_create
    except AttributeError:
        _target.unsupported("no os.memfd_create and no memfd_create in libc")
    fn.argtypes = [ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    fd = fn(name.encode("ascii"), 0)
    if fd < 0:
        e = ctypes.get_errno()
        _target.unsupported("memfd_create failed: %s" % os.strerror(e))
    return fd, "ctypes"


def main():
    p = _target.parser(__doc__)
    p.add_argument("--size", type=int, default=65536, help="memfd size in bytes")
    args = p.parse_args()

    fd, method = memfd_create(NAME)
    os.ftruncate(fd, args.size)
    page = _target.page_size()
    maps = []

    def leak(i):
        m = mmap.mmap(fd, args.size)
        for off in range(0, args.size, page):
            m[off:off + 1] = b"\x01"
        maps.append(m)

    _target.emit("memfd", NAME)
    _target.emit("method", method)
    _target.emit("size", args.size)
    _target.run(args, leak)


if __name__ == "__main__":
    main()
