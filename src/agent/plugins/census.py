# memsleuth agent plugin: census, the heap census behind `memsleuth types`
# and `memsleuth growth`. Sent after census_own.py (what is ours) and
# census_types.py (the building blocks and the registry of types).
#
# Appended to agent.py and run in the same namespace, so every global here is
# prefixed `_census_`. Stdlib only, one source for 2.7 and 3.6-3.15; imports
# happen inside the op (array, itertools, operator, _weakref), and the agent
# removes what it imported at detach. No threads, no state kept between
# requests.
#
# Op `census` {gc_only, collect, fingerprint, chunk_s, chunk_max, mem_reads}:
# optionally gc.collect(), then gc.get_objects() minus the agent's own
# objects, in chunks of gc-tracked objects (sized to take about `chunk_s` of
# work, at most `chunk_max` objects); one frame per chunk, written with one
# blocking send (which releases the GIL), so the longest hold is about one
# chunk's work. Per chunk, at C speed (map/compress/array, no Python loop
# per object), the agent collects and the tool computes:
#
#   tracked:   ids, type ids and sizes of the chunk's objects;
#   owners:    (dict id, owner type id) for dicts that are the __dict__ of
#              an instance, a module or a class;
#   untracked: (unless gc_only) the objects the chunk refers to
#              (gc.get_referents, plus the keys of dicts, which dicts with str
#              keys do not traverse, plus the constants/names/bytecode of code
#              objects) that the collector does not track, and recursively
#              what untracked containers (tuples, dicts) hold, a level at a
#              time; not deduplicated here (the tool does it).
#
# Ids and type ids are pointers: the item array of one list per frame,
# read through /proc/self/mem (two reads per frame: every read releases the
# GIL, which a busy thread then keeps for a switch interval; an unreadable
# address is an error, never a crash), else (or with mem_reads false) id()
# per object. Sizes are type(o).__sizeof__(o) (through
# operator.call, 3.11+; cheaper than sys.getsizeof): the tool adds `pre` per
# type, what getsizeof adds (GC header, pre-header). Before 3.11, and for
# classes, sys.getsizeof with pre 0.
#
# Frame header: {"id", "chunk": true, "k": "census", "v": 2, "w": W,
# "le": bool, "dt": id(dict), "seg": [[kind, n(, nf)], ...], "fpt": [ids of
# fingerprinted types]}; the payload is native W-byte words: first the two
# id arrays of every segment, in order (all read at once), then the sizes
# (and hashes) of every segment that has them, in order:
#   ["t", n]      ids[n] tids[n]              | sizes[n]      gc-tracked objects
#   ["u", n, nf]  ids[n] tids[n]              | sizes[n] hashes[nf]
#                 untracked objects; with `fingerprint` (growth), the value
#                 hashes of those whose type is in fpt (exact ints and
#                 floats: their addresses are reused at once), in order
#   ["o", n]      dict_ids[n] owner_tids[n]   |
#
# Result: {types: [[type id, module, qualname, pre], ...], dict_tid,
# drop_dicts, word, little_endian, gc_only, listed, tracked, untracked_sent,
# owned_dicts, excluded, frozen, collected, collect_s, get_objects_s, own_s,
# chunks, sent_bytes, size_errors, reads, max_hold_s (longest stretch
# between two socket writes), hold_total_s, holds, elapsed_s, cpu_s}.

# Chunks of gc-tracked objects: the first, and the bounds of the others
# (which otherwise aim at chunk_s of work). The top bound keeps the agent's
# extra memory small: about 250 bytes per tracked object in a chunk.
_CENSUS_CHUNK_FIRST = 4000
_CENSUS_CHUNK_MIN = 1000
_CENSUS_CHUNK_MAX = 16000
# Containers bigger than this (bytes) are iterated rather than copied by
# gc.get_referents.
_CENSUS_BIG = 1 << 16


class _census_Census(_census_Registry):
    """One census: state for a single request, dropped when it ends."""

    def __init__(self, agent, req):
        self.agent = agent
        self.req = req
        self.rid = req.get('id', 0)
        self.gc_only = bool(req.get('gc_only'))
        self.collect = bool(req.get('collect'))
        self.chunk_s = float(req.get('chunk_s') or 0.05)
        self.chunk_max = int(req.get('chunk_max') or _CENSUS_CHUNK_MAX)
        # Value fingerprints of ints and floats (growth: their addresses are
        # reused at once, so an id alone does not tell a new one apart).
        self.fingerprint = bool(req.get('fingerprint'))
        self.mem_reads = req.get('mem_reads', True) is not False
        self.t = t = _census_tools()
        self.ids = _census_Ids(t)
        self.call = t['call']
        self.own = set()
        self.own_types = set()   # the types of our objects
        self.own_keys = set()    # ... as keys
        self.names = set()
        # Lists of ours are made only once the objects are listed (and ours
        # found): then no list can be ours, and lists need no checking.
        self.drop_dicts = None
        self.max_hold = 0.0
        self.hold_total = 0.0
        self.holds = 0
        self.seg = _clock()
        self.chunks = 0
        self.sent_bytes = 0
        self.size_errors = 0
        self.n_tracked = 0
        self.n_untracked = 0
        self.n_owned = 0
        self.registry_init()
        self.tail = bytearray()   # sizes (and hashes) of the pending segments
        self.segs = None
        self.pending = None       # the objects whose ids the frame carries

    # -- GIL segments and frames ---------------------------------------------

    def end_segment(self):
        now = _clock()
        d = now - self.seg
        self.hold_total += d
        self.holds += 1
        if d > self.max_hold:
            self.max_hold = d
        return now

    def flush(self, extra=None):
        """Sends the segments collected so far as one chunk frame (the
        agent's framing: 4-byte length, header line, payload) in one
        blocking write, after one read of all their ids."""
        segs = self.segs or []
        head = {'id': self.rid, 'chunk': True, 'k': 'census', 'v': 2, 'w': self.t['w'],
                'le': sys.byteorder == 'little', 'dt': id(dict), 'seg': segs}
        if self.fingerprint:
            head['fpt'] = [id(tp) for tp in self.fp_types()]
        if extra:
            head.update(extra)
        line = self.agent.dumps(head)
        if not isinstance(line, bytes):
            line = line.encode('ascii')
        items = self.pending
        tail = self.tail
        size = len(line) + 1 + (len(items) if items else 0) * self.t['w'] + len(tail)
        buf = bytearray(4 + size)
        buf[0:4] = bytearray([(size >> 24) & 255, (size >> 16) & 255, (size >> 8) & 255,
                              size & 255])
        at = 4 + len(line) + 1
        buf[4:at] = line + b'\n'
        if items:
            at = self.ids.put(buf, at, items)
        buf[at:] = tail
        if self.segs is not None:
            self.segs = []
            self.pending = []
        self.tail = bytearray()
        items = tail = None
        self.end_segment()
        self.agent.sock.sendall(buf, MSG_NOSIGNAL)
        self.sent_bytes += len(buf)
        buf = None
        self.seg = _clock()

    def fp_types(self):
        return (int, long, float) if PY2 else (int, float)  # noqa: F821

    def add_records(self, kind, objs, tl, sizes, hashes=None):
        """A segment. The ids of objs and tl are read when the frame goes
        (copied now, while the objects are in the cache)."""
        self.pending.extend(objs)
        self.pending.extend(tl)
        tail = self.tail
        tail += _census_tobytes(sizes)
        seg = [kind, len(objs)]
        if kind == 'u':
            seg.append(len(hashes) if hashes is not None else 0)
            if hashes is not None:
                tail += _census_tobytes(hashes)
        self.segs.append(seg)

    # -- the census ------------------------------------------------------------

    def drop_own(self, objs, tl, keys, present):
        """objs, tl, keys without the agent's own objects. Only objects of a
        type that some of ours have can be ours (id() per object is
        costly), and weak references to ours."""
        t = self.t
        own = self.own
        found = False
        m = self.mask(keys, present, self.groups[_CENSUS_F_WEAKREF])
        if m is not None:
            deref = t['weakref'].__call__
            for w in t['compress'](objs, m):
                if id(deref(w)) in own:
                    own.add(id(w))
                    found = True
        m = self.mask(keys, present, self.own_keys)
        if not found and (m is None or own.isdisjoint(self.ids.array(list(t['compress'](objs, m))))):
            return objs, tl, keys
        keep = list(t['map'](t['not_'], t['map'](own.__contains__, t['map'](id, objs))))
        comp = t['compress']
        return list(comp(objs, keep)), list(comp(tl, keep)), list(comp(keys, keep))

    def plain_owners(self, inst, itl, flat, dicts, otypes):
        """(dict, owner type) for instances of plain classes whose referents
        (flat) include their __dict__."""
        t = self.t
        mp = t['map']
        # A plain instance refers to [its dict, its type] when it has a dict
        # (2.7-3.10: always; 3.11+: when its __dict__ was materialised, else
        # to its attribute values and its type). When every instance has as
        # many referents as the first, its type last, and that is not 2,
        # none has a dict (one with a dict has 2).
        n = len(inst)
        if not n:
            # (The mask was made before our own objects were dropped.)
            return
        k = len(gc.get_referents(inst[0]))
        if k >= 2 and len(flat) == k * n and all(mp(t['is_'], flat[k - 1::k], itl)):
            if k != 2:
                return
            first = flat[0::2]
            tl2 = itl
        elif self.dict_set.isdisjoint(mp(type, flat)):
            return
        else:
            two = list(mp(t['eq'], mp(len, mp(gc.get_referents, inst)), t['repeat'](2)))
            if not any(two):
                return
            inst = list(t['compress'](inst, two))
            tl2 = list(t['compress'](itl, two))
            rl2 = list(mp(gc.get_referents, inst))
            if all(mp(t['is_'], mp(t['itemgetter'](1), rl2), tl2)):
                first = list(mp(t['itemgetter'](0), rl2))
            else:
                first = [r[0] if r[1] is tp else None for r, tp in zip(rl2, tl2)]
        ok = list(mp(t['is_'], mp(type, first), t['repeat'](dict)))
        if any(ok):
            dicts.extend(t['compress'](first, ok))
            otypes.extend(t['compress'](tl2, ok))

    def other_owners(self, objs, tl, keys, dicts, otypes):
        """(dict, owner type) for modules, classes and old-style instances."""
        modules = self.groups[_CENSUS_F_MODULE]
        oldstyle = self.groups[_CENSUS_F_OLDSTYLE]
        for o, tp, k in zip(objs, tl, keys):
            try:
                if k in modules:
                    d = self.module_dict.__get__(o)
                elif k in oldstyle:
                    d = o.__dict__
                elif _census_tget(o, '__flags__', 0) & _CENSUS_HEAPTYPE:
                    rl = gc.get_referents(o)
                    d = rl[0] if rl else None
                else:
                    d = None
            except Exception:
                d = None
            if type(d) is dict:
                dicts.append(d)
                otypes.append(tp)

    def extra_refs(self, objs, keys, present):
        """Iterables of what gc.get_referents does not show: the keys of
        dicts (a dict with only str keys does not traverse them), and the
        constants, names and bytecode of code objects (not traversed)."""
        t = self.t
        out = []
        # (No type has the frozendict flag where frozendict does not exist.)
        for g, fn in ((_CENSUS_F_DICT, t['keys']), (_CENSUS_F_FDICT, t['fdkeys']),
                      (_CENSUS_F_CODE, t['code_attrs'])):
            m = self.mask(keys, present, self.groups[g])
            if m is not None:
                out.append(t['chain'](t['map'](fn, t['compress'](objs, m))))
        return out

    def referents(self, objs, sizes):
        """Iterables of what objs refer to, without copying the items of
        big containers (gc.get_referents would copy a million-entry dict's
        values into a list): exact lists, tuples, sets and dicts over
        _CENSUS_BIG bytes (per `sizes`, None: there are none) are iterated
        instead."""
        t = self.t
        if sizes is None:
            return [gc.get_referents(*objs)]
        big = list(t['compress'](t['count'](), t['map'](t['le'], t['repeat'](_CENSUS_BIG), sizes)))
        rest = list(objs)
        out = []
        for i in reversed(big):
            o = rest.pop(i)
            tp = type(o)
            if tp is list or tp is tuple or tp is set or tp is frozenset:
                out.append(o)
            elif tp is dict:
                out.append(dict.values(o))  # (its keys: extra_refs)
            else:
                out.append(gc.get_referents(o))
        out.append(gc.get_referents(*rest))
        return out

    def chunk(self, objs):
        t = self.t
        comp = t['compress']
        tl, keys, present = self.describe(objs)
        objs, tl, keys = self.drop_own(objs, tl, keys, present)
        # Modules and classes under a module name that is not the target's.
        m = self.mask(keys, present, self.stale_keys)
        if m is not None:
            mods = list(t['map'](self.groups[_CENSUS_F_MODULE].__contains__, comp(keys, m)))
            if _census_stale(self, list(comp(objs, m)), mods):
                self.own_keys_add()
                objs, tl, keys = self.drop_own(objs, tl, keys, present)
        m = None
        sizes = self.sizes(objs, keys)
        self.add_records('t', objs, tl, sizes)
        self.n_tracked += len(objs)
        self.chunks += 1
        dicts = []
        otypes = []
        refs = []
        plain = self.mask(keys, present, self.groups[_CENSUS_F_PLAIN])
        if plain is not None:
            inst = list(comp(objs, plain))
            flat = gc.get_referents(*inst)
            self.plain_owners(inst, list(comp(tl, plain)), flat, dicts, otypes)
            inst = None
            refs.append(flat)
            flat = None
        m = self.mask(keys, present, self.owner_keys)
        if m is not None:
            self.other_owners(list(comp(objs, m)), list(comp(tl, m)), list(comp(keys, m)),
                              dicts, otypes)
        if dicts:
            self.pending.extend(dicts)
            self.pending.extend(otypes)
            self.segs.append(['o', len(dicts)])
            self.n_owned += len(dicts)
        dicts = otypes = None
        if self.gc_only:
            return
        if sizes and max(sizes) < _CENSUS_BIG:
            sizes = None
        if plain is not None:
            rest = list(comp(objs, t['map'](t['not_'], plain)))
            if sizes is not None:
                sizes = list(comp(sizes, t['map'](t['not_'], plain)))
        else:
            rest = objs
        plain = None
        if rest:
            refs.extend(self.referents(rest, sizes))
        rest = sizes = None
        refs.extend(self.extra_refs(objs, keys, present))
        tl = keys = present = objs = None
        level = list(t['filterfalse'](gc.is_tracked, t['chain'](refs)))
        refs = None
        self.untracked(level)

    def untracked(self, level):
        """Records the untracked objects in level, and what untracked
        containers among them hold, recursively, a level at a time. No
        deduplication here (the tool does it): the recursion ends because
        untracked containers only nest (tuples in tuples or dicts,
        constants in code objects), they cannot form cycles."""
        t = self.t
        fp = self.groups[_CENSUS_F_FP]
        depth = 0
        while level and depth < 100:
            depth += 1
            ltl, keys, present = self.describe(level)
            hashes = None
            if self.fingerprint:
                hashes = t['array'](t['stc'])
                m = self.mask(keys, present, fp)
                if m is not None:
                    hashes = t['array'](t['stc'], t['map'](hash, t['compress'](level, m)))
                m = None
            self.add_records('u', level, ltl, self.sizes(level, keys), hashes)
            self.n_untracked += len(level)
            hashes = ltl = None
            if self.groups[_CENSUS_F_GC].isdisjoint(present):
                break
            refs = [gc.get_referents(*level)] + self.extra_refs(level, keys, present)
            keys = present = level = None
            level = list(t['filterfalse'](gc.is_tracked, t['chain'](refs)))
            refs = None

    def run(self):
        t0 = _clock()
        cpu = getattr(time, 'thread_time', None)
        cpu0 = cpu() if cpu is not None else None
        collected = None
        collect_s = 0.0
        if self.collect:
            collected = gc.collect()
            collect_s = _clock() - t0
            self.flush({'stage': 'collected'})
        t1 = _clock()
        objs = gc.get_objects()
        get_objects_s = _clock() - t1
        n_listed = len(objs)
        t1 = _clock()
        if self.mem_reads:
            self.ids.open()
        _census_own_walk(self, objs)
        self.own_keys_add()
        self.segs = []
        self.pending = []
        self.drop_dicts = []
        own_s = _clock() - t1
        i = 0
        n = _CENSUS_CHUNK_FIRST
        while i < n_listed:
            c0 = _clock()
            part = objs[i:i + n]
            i += len(part)
            self.chunk(part)
            part = None
            took = _clock() - c0
            self.flush()
            # Aim each chunk at chunk_s of work (the send is not work: the
            # socket drains while the tool aggregates).
            if took > 0:
                n = int(n * max(0.25, min(4.0, self.chunk_s / took)))
            n = max(_CENSUS_CHUNK_MIN, min(n, self.chunk_max))
        objs = None
        excluded = len(self.own)
        self.own = set()
        self.own_types = set()
        types = []
        for tid, tp in self.types.items():
            mod, qual = _census_type_name(tp)
            types.append([tid, _text(mod) if mod is not None else None, _text(qual),
                          self.pre_by_tid.get(tid, 0)])
        self.types = {}
        frozen = 0
        try:
            frozen = gc.get_freeze_count()
        except Exception:
            pass
        self.end_segment()
        return {
            'types': types,
            'dict_tid': id(dict),
            'drop_dicts': self.drop_dicts,
            'word': self.t['w'],
            'little_endian': sys.byteorder == 'little',
            'gc_only': self.gc_only,
            'listed': n_listed,
            'tracked': self.n_tracked,
            'untracked_sent': self.n_untracked,
            'owned_dicts': self.n_owned,
            'excluded': excluded,
            'frozen': frozen,
            'collected': collected,
            'collect_s': collect_s,
            'get_objects_s': get_objects_s,
            'own_s': own_s,
            'chunks': self.chunks,
            'sent_bytes': self.sent_bytes,
            'size_errors': self.size_errors,
            'reads': 'mem' if self.ids.slow == 0 and self.ids.mem else 'id',
            'max_hold_s': self.max_hold,
            'hold_total_s': self.hold_total,
            'holds': self.holds,
            'elapsed_s': _clock() - t0,
            # CPU time of the agent thread (3.7+): what the census cost,
            # whatever else the machine was doing.
            'cpu_s': (cpu() - cpu0) if cpu0 is not None else None,
        }


def _census_op(agent, req):
    c = _census_Census(agent, req)
    try:
        return c.run()
    finally:
        c.ids.close()
        c.agent = c.req = c.t = c.ids = None
        c = None


EXTRA_OPS['census'] = _census_op
