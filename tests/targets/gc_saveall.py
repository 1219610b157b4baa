"""gc.set_debug(gc.DEBUG_SAVEALL): every collected cycle is kept in gc.garbage.

The collector stays on; each event drops --cycles reference cycles of
SavedNode objects, which the collector finds and, because of DEBUG_SAVEALL,
appends to gc.garbage instead of freeing. Prints "class SavedNode" before
"ready <pid>".
"""
from __future__ import print_function

import gc

import _target


class SavedNode(object):
    pass


def main():
    p = _target.parser(__doc__, rate=20.0, initial=5)
    p.add_argument("--cycles", type=int, default=200, help="cycles made per event")
    args = p.parse_args()
    gc.set_debug(gc.DEBUG_SAVEALL)

    def leak(i):
        for _ in range(args.cycles):
            a = SavedNode()
            b = SavedNode()
            a.other = b
            b.other = a

    _target.emit("class", "SavedNode")
    _target.run(args, leak)


if __name__ == "__main__":
    main()
