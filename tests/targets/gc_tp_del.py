"""Reference cycles of objects whose type has a legacy tp_del finalizer.

Since Python 3.4 (PEP 442) only tp_del, not __del__, makes a cycle
uncollectable: the collector puts such objects in gc.garbage. The type gets
its tp_del slot from _testcapi.with_tp_del (CPython's test helper); where
that is missing (2.7, builds without _testcapi) the target reports
unsupported. Prints "class LegacyFinalized" before "ready <pid>".
"""
from __future__ import print_function

import _target


def main():
    p = _target.parser(__doc__, rate=20.0, initial=5)
    p.add_argument("--cycles", type=int, default=200, help="cycles made per event")
    args = p.parse_args()
    try:
        import _testcapi
        with_tp_del = _testcapi.with_tp_del
    except (ImportError, AttributeError) as e:
        _target.unsupported("no _testcapi.with_tp_del: %s" % (e,))

    LegacyFinalized = with_tp_del(type("LegacyFinalized", (object,), {
        "__module__": "__main__",
        "__tp_del__": lambda self: None,
    }))

    def leak(i):
        for _ in range(args.cycles):
            a = LegacyFinalized()
            b = LegacyFinalized()
            a.other = b
            b.other = a

    _target.emit("class", "LegacyFinalized")
    _target.run(args, leak)


if __name__ == "__main__":
    main()
