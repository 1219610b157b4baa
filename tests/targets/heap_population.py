"""Known populations for the read-only heap reader (Python 2.7 and 3.6+).

Builds instances with a __dict__, with __slots__, wide instances, dicts of
str, nested containers, big ints, UCS-2/UCS-4 strs, bytearrays, sets and
untracked tuples; collects; then blocks in os.read() on a FIFO (GIL
released, nothing allocated), so a read from outside sees a quiescent heap.

Info lines before `ready`:
    fifo PATH               write a line here to get a report
    pop NAME ID COUNT SIZE  a container (list) holding a population: its id,
                            how many items, and the sum of sys.getsizeof
Each line written to the FIFO makes it print
    report JSON  {"types": {id(type): gc-tracked count}, "audit": [events],
                  "frozen": gc.get_freeze_count()}
computed from gc.get_objects() before anything else is allocated, with the
audit events (compile/exec/import, 3.8+) seen while it was blocked.
"""
from __future__ import print_function

import gc
import json
import os
import sys

import _target

_p = _target.parser("heap populations")
_p.add_argument("--scale", type=int, default=1, help="multiply the populations")
S = _p.parse_known_args()[0].scale


class WithDict(object):
    def __init__(self, i):
        self.a = i * 1000003
        self.b = "name-%d" % i
        self.c = (i, "x%d" % i)


class WithSlots(object):
    __slots__ = ("x", "y")

    def __init__(self, i):
        self.x = "slot-%d" % i
        self.y = float(i) + 0.5


class Wide(object):
    def __init__(self, i):
        for k in range(40):
            setattr(self, "attr_%d" % k, "w%d-%d" % (i, k))


class Node(object):
    pass


if sys.version_info[0] == 2:
    chr_ = unichr  # noqa: F821
else:
    chr_ = chr

pops = {}
pops["with_dict"] = [WithDict(i) for i in range(3000 * S)]
pops["with_slots"] = [WithSlots(i) for i in range(2000 * S)]
pops["wide"] = [Wide(i) for i in range(150 * S)]
pops["str_dicts"] = [dict(("key-%d-%d" % (i, k), "value-%d" % k) for k in range(6))
                     for i in range(1000 * S)]
pops["nested"] = [[i, [str(i), [i * 2.5]], (i, (str(i),))] for i in range(800 * S)]
pops["big_ints"] = [2 ** (30 * (i % 7 + 1)) + i for i in range(1500 * S)]
pops["neg_ints"] = [-(2 ** 70) - i for i in range(300 * S)]
pops["ucs2"] = [chr_(0x400 + i % 200) * (i % 50 + 1) for i in range(700 * S)]
pops["ucs4"] = [chr_(0x1F600 + i % 50) * (i % 30 + 1) for i in range(500 * S)]
pops["latin1"] = [chr_(0xe9) * (i % 40 + 1) + "x" for i in range(400 * S)]
pops["bytearrays"] = [bytearray(b"z" * (i % 300)) for i in range(600 * S)]
pops["bytes"] = [("b%d" % i).encode("ascii") * (i % 9 + 1) for i in range(900 * S)]
pops["floats"] = [i * 1.25 for i in range(1200 * S)]
pops["tuples"] = [(i, "t%d" % i) for i in range(1000 * S)]
pops["sets"] = [set(range(i % 20)) for i in range(300 * S)]
pops["frozensets"] = [frozenset(("f%d" % i, i)) for i in range(300 * S)]
pops["big_dicts"] = [dict((j, j) for j in range(i * 50)) for i in range(1, 6)]
pops["classes"] = [WithDict, WithSlots, Wide, Node, int, str, dict, type, object]

# Subclasses of builtins (2.7 str.__sizeof__ counts str's header, not the
# subclass's).
class Text(str):
    pass


class Blob(bytes):
    pass


class Count(int):
    pass


pops["subclassed"] = ([Text("text-%d" % i) for i in range(300 * S)]
                      + [Blob(b"b" * (i % 33)) for i in range(300 * S)]
                      + [Count(i * 7) for i in range(300 * S)])

try:
    pops["frozendicts"] = [frozendict(("fk-%d-%d" % (i, k), k) for k in range(i % 9))  # noqa: F821
                           for i in range(300 * S)]
except NameError:
    pass  # (3.15+)

# Types whose __sizeof__ counts memory outside the object.
import array
import collections
import io
pops["arrays"] = [array.array("d" if i % 2 else "b", range(i % 40)) for i in range(400 * S)]
pops["bytesios"] = [io.BytesIO(b"q" * (i % 90)) for i in range(300 * S)]
pops["deques"] = [collections.deque(range(i % 200)) for i in range(200 * S)]
if sys.version_info >= (3,):
    # (2.7's OrderedDict is a Python class.)
    pops["ordered_dicts"] = [collections.OrderedDict((k, k) for k in range(i % 12))
                             for i in range(300 * S)]


# Frames and generators: sized by their code object; what their locals
# hold is theirs ("holds NAME HOLDER HELD": HELD is a referent of HOLDER).
def held_gen(i):
    buf = ("gen-local-%d" % i).encode("ascii")
    yield buf
    yield i


def failing(i):
    payload = ("frame-local-%d" % i).encode("ascii")
    raise KeyError(payload)


holds = []
gens = [held_gen(i) for i in range(300 * S)]
for g in gens[::2]:
    held = next(g)
    # (Up to 3.10 a generator's frame is an object of its own.)
    holds.append(("generator", g if sys.version_info >= (3, 11) else g.gi_frame, held))
finished = [held_gen(i) for i in range(100 * S)]
for g in finished:
    list(g)
pops["generators"] = gens + finished
frames = []
for i in range(200 * S):
    try:
        failing(i)
    except KeyError:
        tb = sys.exc_info()[2]
        frames.append(tb.tb_next.tb_frame)
        holds.append(("frame", tb.tb_next.tb_frame, sys.exc_info()[1].args[0]))
        del tb
pops["frames"] = frames
# A tree of plain instances (dicts of Node).
root = Node()
cur = root
for i in range(200):
    cur.child = Node()
    cur.value = i
    cur = cur.child
pops["chain"] = [root]

gc.collect()
gc.collect()

for name in sorted(pops):
    items = pops[name]
    size = sum(sys.getsizeof(o) for o in items)
    _target.emit("pop", "%s %d %d %d" % (name, id(items), len(items), size))

for name, holder, held in holds[:50]:
    _target.emit("holds", "%s %d %d" % (name, id(holder), id(held)))

fifo = os.path.join(os.environ.get("TMPDIR", "/tmp"), "heap_population.fifo")
os.mkfifo(fifo)
_target.on_cleanup(lambda: os.unlink(fifo))
fd = os.open(fifo, os.O_RDWR)
_target.emit("fifo", fifo)

audit = []
armed = [False]
if hasattr(sys, "addaudithook"):
    def _hook(event, args, audit=audit, armed=armed):
        if armed[0] and (event in ("compile", "exec") or event.startswith("import")):
            audit.append(event)
    sys.addaudithook(_hook)

def count_tracked():
    """gc.get_objects() per id(type), in a function: a module-level loop
    variable is a global, and on 3.15 loading a lazy import object from the
    globals imports it."""
    objs = gc.get_objects()
    counts = {}
    # Neither the list nor this call's frame (an object up to 3.10).
    mine = (id(objs), id(sys._getframe()))
    for o in objs:
        if id(o) not in mine:
            t = id(type(o))
            counts[t] = counts.get(t, 0) + 1
    # Up to 3.6 the list holds this running frame: break the cycle (the
    # collector is off).
    del objs[:]
    return counts


freeze_count = getattr(gc, "get_freeze_count", lambda: 0)
gc.disable()
_target.emit("ready", os.getpid())
while True:
    armed[0] = True
    line = os.read(fd, 4096)
    armed[0] = False
    counts = count_tracked()
    events = list(audit)
    del audit[:]
    _target.emit("report", json.dumps({"types": dict((str(k), v) for k, v in counts.items()),
                                       "audit": events, "frozen": freeze_count()}))
    counts = None
