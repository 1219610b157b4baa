"""SysV shm leak: the same segment is shmat()ed again and again, never shmdt()ed.

The segment is marked IPC_RMID right after the first attach, so it disappears
with the process (Linux still allows shmat of an RMID-marked, attached segment).
Prints "shmid <id>" and "size <bytes>" before "ready <pid>".
"""
from __future__ import print_function

import ctypes
import os

import _target

IPC_PRIVATE = 0
IPC_CREAT = 0o1000
IPC_RMID = 0


def main():
    p = _target.parser(__doc__)
    p.add_argument("--size", type=int, default=65536, help="segment size in bytes")
    args = p.parse_args()

    libc = _target.libc()
    shmget = libc.shmget
    shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    shmget.restype = ctypes.c_int
    shmat = libc.shmat
    shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    shmat.restype = ctypes.c_void_p
    shmctl = libc.shmctl
    shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    shmctl.restype = ctypes.c_int
    failed = ctypes.c_void_p(-1).value
    page = _target.page_size()
    size = args.size

    def attach(shmid):
        addr = shmat(shmid, None, 0)
        if addr is None or addr == failed:
            e = ctypes.get_errno()
            raise OSError(e, "shmat: %s" % os.strerror(e))
        for off in range(0, size, page):
            ctypes.memset(addr + off, 0x5A, 1)
        return addr

    shmid = shmget(IPC_PRIVATE, size, IPC_CREAT | 0o600)
    if shmid < 0:
        e = ctypes.get_errno()
        raise OSError(e, "shmget: %s" % os.strerror(e))
    try:
        attach(shmid)
    finally:
        if shmctl(shmid, IPC_RMID, None) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "shmctl(IPC_RMID): %s" % os.strerror(e))

    _target.emit("shmid", shmid)
    _target.emit("size", size)
    _target.run(args, lambda i: attach(shmid))


if __name__ == "__main__":
    main()
