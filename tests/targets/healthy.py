"""Healthy control: allocation churn plus a bounded LRU cache (1000 entries).

The cache is filled to capacity before "ready"; afterwards every event churns
short-lived dicts/lists/strings and does one cache lookup/insert with LRU
eviction, so RSS stays flat.
Prints "capacity <n>" before "ready <pid>".
"""
from __future__ import print_function

from collections import OrderedDict

import _target

CAPACITY = 1000
KEYSPACE = 3000

_cache = OrderedDict()


def _value(key):
    return {"key": key, "name": "item-%d" % key, "blob": "v" * 512,
            "tags": ["a", "b", str(key)]}


def _get(key):
    try:
        v = _cache.pop(key)  # re-inserted below: most recently used
    except KeyError:
        v = _value(key)
        if len(_cache) >= CAPACITY:
            _cache.popitem(last=False)
    _cache[key] = v
    return v


def _churn(i):
    for j in range(50):
        d = {"id": j, "name": "tmp-%d-%d" % (i, j), "items": list(range(20))}
        s = ",".join(str(x) for x in d["items"])
        l = [d, s] * 10
        del d, s, l
    _get((i * 7919) % KEYSPACE)


def main():
    p = _target.parser(__doc__)
    args = p.parse_args()
    for k in range(CAPACITY):
        _get(k)
    _target.emit("capacity", CAPACITY)
    _target.run(args, _churn)


if __name__ == "__main__":
    main()
