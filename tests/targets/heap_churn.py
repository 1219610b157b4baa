"""A process that allocates all the time, over a heap of ~400k objects.

Builds 50k small records (an instance, its dict, a str, a list), then the
main thread churns without sleeping: it makes lists of fresh lists and
tuples, keeps the last few hundred and drops the rest, so the collector's
youngest list is relinked and collected many times a second. A copy taken
without pausing (`--nonblocking`) sees its lists torn.
"""
from __future__ import print_function

import collections
import os

import _target


class Record(object):
    def __init__(self, i):
        self.name = "record-%d" % i
        self.tags = [i, "t%d" % (i % 100)]


HELD = [Record(i) for i in range(50000)]


def main():
    p = _target.parser(__doc__)
    p.parse_args()
    recent = collections.deque(maxlen=300)
    _target.emit("ready", os.getpid())
    n = 0
    while True:
        recent.append([[n, (n, str(n))] for _ in range(20)])
        n += 1


if __name__ == "__main__":
    main()
