"""Exception retention: a service keeps every failed request's exception.

Each event handles --requests requests that all fail. handle() fills a
local buffer of --buffer bytes before it raises RequestFailed; the service
keeps sys.exc_info() of every failure in `_failures`, so each traceback
pins handle()'s frame and with it the buffer. Prints "class RequestFailed"
and "buffer <n>" before "ready <pid>".
"""
from __future__ import print_function

import sys

import _target

_failures = []


class RequestFailed(Exception):
    pass


def handle(request, size):
    buf = bytearray(size)
    buf[0] = request & 0xFF
    raise RequestFailed("request %d failed after reading %d bytes" % (request, len(buf)))


def main():
    p = _target.parser(__doc__)
    p.add_argument("--requests", type=int, default=5, help="failed requests per event")
    p.add_argument("--buffer", type=int, default=16384, help="local buffer per request")
    args = p.parse_args()
    counter = [0]

    def leak(i):
        for _ in range(args.requests):
            counter[0] += 1
            try:
                handle(counter[0], args.buffer)
            except RequestFailed:
                _failures.append(sys.exc_info())

    _target.emit("class", "RequestFailed")
    _target.emit("buffer", args.buffer)
    _target.run(args, leak)


if __name__ == "__main__":
    main()
