"""Thread leak: every event starts a thread "worker-<n>" that never ends.

The thread function is _leaked_worker; it blocks forever on an Event
(--block event, default) or sleeps in a loop (--block sleep).
Prints "block <mode>" before "ready <pid>".
"""
from __future__ import print_function

import threading
import time

import _target

_never = threading.Event()
_threads = []


def _leaked_worker(block):
    if block == "sleep":
        while True:
            time.sleep(3600)
    else:
        while True:
            _never.wait()


def main():
    p = _target.parser(__doc__)
    p.add_argument("--block", choices=("event", "sleep"), default="event",
                   help="how each leaked thread blocks")
    args = p.parse_args()

    def leak(i):
        t = threading.Thread(target=_leaked_worker, args=(args.block,),
                             name="worker-%d" % i)
        t.daemon = True
        t.start()
        _threads.append(t)

    _target.emit("block", args.block)
    _target.run(args, leak)


if __name__ == "__main__":
    main()
