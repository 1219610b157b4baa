"""A leaking loop for tracemalloc: every event appends a new 1000-byte
string to a module-level list, at a known line.

Prints "leak_file <path>" and "leak_line <n>" (the line that allocates)
before "ready <pid>".
"""
from __future__ import print_function

import os

import _target

_sink = []


def leak(i):
    _sink.append(("%08d" % i) * 125)  # LEAK-LINE


def _leak_line():
    with open(__file__) as f:
        for n, line in enumerate(f, 1):
            if line.rstrip().endswith("# LEAK-LINE") and "_sink.append" in line:
                return n
    raise RuntimeError("leak line not found")


def main():
    p = _target.parser(__doc__, rate=200.0, initial=10)
    args = p.parse_args()
    _target.emit("leak_file", os.path.abspath(__file__))
    _target.emit("leak_line", _leak_line())
    _target.run(args, leak)


if __name__ == "__main__":
    main()
