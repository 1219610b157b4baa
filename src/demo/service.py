"""memsleuth demo: a small "service" that handles fake requests and leaks.

Started by `memsleuth demo`, which runs `memsleuth doctor` on it and stops it.
One source for Python 2.7 and 3.x, stdlib only. Prints "ready <pid>" once it
serves. Scenarios (--scenario):

  sysv-shm         every request attaches the shared config segment again
                   with shmat() and never calls shmdt()
  unbounded-cache  every login is remembered in sessions._cache, forever
  threads          every request starts a helper thread that never ends
  native-heap      every request mallocs a buffer through ctypes, never freed
  healthy          requests churn objects; a bounded cache; nothing leaks
"""
from __future__ import print_function

import argparse
import os
import sys
import threading
import time

import sessions


def sysv_shm():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    libc.shmget.restype = ctypes.c_int
    libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    libc.shmat.restype = ctypes.c_void_p
    libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    size = 256 * 1024
    shmid = libc.shmget(0, size, 0o1000 | 0o600)  # IPC_PRIVATE, IPC_CREAT
    if shmid < 0:
        raise OSError(ctypes.get_errno(), "shmget failed")

    def handle(i):
        addr = libc.shmat(shmid, None, 0)  # the bug: no shmdt(addr) afterwards
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "shmat failed")
        ctypes.memset(addr, 0x42, size)  # "read the config": touches every page
        if i == 0:
            libc.shmctl(shmid, 0, None)  # IPC_RMID: gone when we exit
    return handle


def native_heap():
    import ctypes
    libc = ctypes.CDLL(None)
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.malloc.restype = ctypes.c_void_p

    def handle(i):
        buf = libc.malloc(64 * 1024)  # the bug: never free()d
        ctypes.memset(buf, 0x42, 64 * 1024)
    return handle


_never = threading.Event()


def threads():
    def helper(i):
        _never.wait()  # the bug: waits for an event nobody sets

    def handle(i):
        t = threading.Thread(target=helper, args=(i,), name="helper-%d" % i)
        t.daemon = True
        t.start()
    return handle


def unbounded_cache():
    def handle(i):
        sessions.login("user%d" % i)
    return handle


def healthy():
    lru = sessions.BoundedCache(500)

    def handle(i):
        work = [{"id": j, "name": "tmp-%d" % j} for j in range(50)]
        lru.put(i % 2000, "x" * 256)
        del work
    return handle


SCENARIOS = {
    "sysv-shm": (sysv_shm, 20),
    "unbounded-cache": (unbounded_cache, 50),
    "threads": (threads, 10),
    "native-heap": (native_heap, 50),
    "healthy": (healthy, 50),
}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="sysv-shm")
    args = p.parse_args()
    make, rate = SCENARIOS[args.scenario]
    handle = make()
    for i in range(5):
        handle(i)
    print("ready %d" % os.getpid())
    sys.stdout.flush()
    i = 5
    period = 1.0 / rate
    next_t = time.time()
    while True:
        handle(i)
        i += 1
        next_t += period
        time.sleep(max(0.0, next_t - time.time()))


if __name__ == "__main__":
    main()
