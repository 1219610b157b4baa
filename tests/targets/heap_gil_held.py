"""A known heap in a process whose main thread sits in C holding the GIL
(Python 2.7 and 3.6+): nothing can be injected, the heap can only be read
from outside.

Builds 1234 instances of a plain class (with a __dict__), 777 with
__slots__ and a list of 500 distinct str, collects, prints `ready`, then
calls libc sleep() through ctypes.PyDLL, which keeps the GIL. A worker
thread waits for the GIL meanwhile.
"""
from __future__ import print_function

import ctypes
import gc
import os
import threading
import time

import _target


class Held(object):
    def __init__(self, i):
        self.i = i
        self.name = "held-%d" % i


class Slotted(object):
    __slots__ = ("a", "b")

    def __init__(self, i):
        self.a = i
        self.b = "slot-%d" % i


HELD = [Held(i) for i in range(1234)]
SLOTTED = [Slotted(i) for i in range(777)]
STRS = ["str-number-%d" % i for i in range(500)]


def main():
    _target.parser(__doc__).parse_args()
    libc = ctypes.PyDLL(None)

    def wait():
        while True:
            time.sleep(0.2)

    t = threading.Thread(target=wait, name="waiter")
    t.daemon = True
    t.start()
    gc.collect()
    _target.emit("ready", os.getpid())
    while True:
        libc.sleep(30)


if __name__ == "__main__":
    main()
