"""Reference cycles of objects whose class defines __del__.

Python 2 cannot collect such a cycle: the collector moves its objects to
gc.garbage, which grows with every collection. Python 3.4+ collects them
(PEP 442), so there gc.garbage stays empty. Both a new-style and an
old-style (classic, 2.7) class take part. Prints "class Finalized" and
"classic Classic" before "ready <pid>".
"""
from __future__ import print_function

import _target


class Finalized(object):
    def __del__(self):
        pass


class Classic:
    def __del__(self):
        pass


def main():
    p = _target.parser(__doc__, rate=20.0, initial=5)
    p.add_argument("--cycles", type=int, default=200, help="cycles made per event")
    args = p.parse_args()

    def leak(i):
        for _ in range(args.cycles):
            a = Finalized()
            b = Finalized()
            a.other = b
            b.other = a
        c = Classic()
        c.me = c

    _target.emit("class", "Finalized")
    _target.emit("classic", "Classic")
    _target.run(args, leak)


if __name__ == "__main__":
    main()
