"""Healthy control: does nothing. The main thread sleeps (or, with --main
event|accept, parks in Event().wait() / socket.accept()); no worker thread.
Prints only "ready <pid>" (plus "port <n>" with --main accept).
"""
from __future__ import print_function

import _target


def main():
    p = _target.parser(__doc__)
    args = p.parse_args()
    _target.run(args, None)


if __name__ == "__main__":
    main()
