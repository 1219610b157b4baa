"""Names in __main__ for the shell to see: `cache` (five strings), `LIMIT`
(7), `counter` (0), bump(), which rebinds `counter` in __main__ and
returns it, and `round`, which shadows the builtin of that name. The main thread sleeps; nothing leaks. Prints "ready <pid>".
"""
from __future__ import print_function

import _target

cache = ['item-%d' % i for i in range(5)]
LIMIT = 7
counter = 0
round = 'main round'


def bump():
    global counter
    counter += 1
    return counter


def main():
    p = _target.parser(__doc__, rate=0.0, initial=0)
    args = p.parse_args()
    _target.run(args, None)


if __name__ == "__main__":
    main()
