"""A Python process for the heap-source tests: a known object graph, and
either idle threads (memory stays still: copies can be compared) or busy
ones (every thread runs Python code: a pause must stop them all).

Info lines: "threads N" (threads besides the main one), "marker ADDR LEN"
(the address and length of a bytes object's payload), then ready.
--busy: the worker threads allocate and free all the time.
"""
from __future__ import print_function

import os
import sys
import threading
import time

import _target


class Node(object):
    def __init__(self, i):
        self.i = i
        self.name = "node-%d" % i


def main():
    p = _target.parser(__doc__)
    p.add_argument("--threads", type=int, default=3)
    p.add_argument("--busy", action="store_true")
    args = p.parse_args()
    keep = [Node(i) for i in range(5000)]
    marker = b"memsleuth-heapsrc-marker-" + b"x" * 64
    # The payload of a bytes object starts after its fixed header; the
    # header size is its basic size minus the trailing NUL.
    header = sys.getsizeof(b"") - 1
    counter = [0]

    def work():
        while True:
            if args.busy:
                junk = [Node(i) for i in range(200)]
                counter[0] += len(junk)
                del junk
            else:
                time.sleep(3600)

    for n in range(args.threads):
        t = threading.Thread(target=work, name="work-%d" % n)
        t.daemon = True
        t.start()
    _target.emit("threads", args.threads)
    _target.emit("marker", "%d %d" % (id(marker) + header, len(marker)))
    _target.emit("ready", os.getpid())
    while True:
        if args.busy:
            counter[0] += 1
        else:
            time.sleep(3600)


if __name__ == "__main__":
    main()
