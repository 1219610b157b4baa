"""Collector switched off: gc.disable(), then reference cycles every event.

Each event makes --cycles pairs of objects that point at each other and
drops them; with the collector off nothing ever frees them, and the gen-0
count only grows. Prints "cycles <n>" before "ready <pid>".
"""
from __future__ import print_function

import gc

import _target


class Pair(object):
    pass


def main():
    p = _target.parser(__doc__, rate=20.0, initial=5)
    p.add_argument("--cycles", type=int, default=50, help="cycles made per event")
    args = p.parse_args()
    gc.disable()

    def leak(i):
        for _ in range(args.cycles):
            a = Pair()
            b = Pair()
            a.other = b
            b.other = a

    _target.emit("cycles", args.cycles)
    _target.run(args, leak)


if __name__ == "__main__":
    main()
