"""A process whose main thread sits in C code holding the GIL.

ctypes.PyDLL calls do not release the GIL, so libc sleep() through it keeps
the GIL for the whole sleep: no pending call and no PEP 768 request can run,
and no thread may be called into. A worker thread waits for the GIL meanwhile
(so the direct path has a thread to refuse, too). With --hold N, N
StuckPayload instances are kept in a module list first (a known population
for readers of the heap from outside).
"""
from __future__ import print_function

import os
import sys
import threading
import time

import _target


class StuckPayload(object):
    def __init__(self, i):
        self.i = i


_held = []


def main():
    p = _target.parser(__doc__)
    p.add_argument("--hold", type=int, default=0, help="StuckPayload instances to keep")
    args = p.parse_args()
    _held.extend(StuckPayload(i) for i in range(args.hold))
    import ctypes
    libc = ctypes.PyDLL(None)

    def beat():
        while True:
            _target.emit("beat", time.time())
            time.sleep(0.2)

    t = threading.Thread(target=beat, name="beat")
    t.daemon = True
    t.start()
    _target.emit("ready", os.getpid())
    while True:
        libc.sleep(30)


if __name__ == "__main__":
    main()
