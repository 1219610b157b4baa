# memsleuth agent plugin: retained -- the whole reference graph with sizes,
# for retained sizes (`memsleuth retained`; `why` and `view` show them too).
#
# Sent after the census plugins and refgraph.py (it is the census, plus the
# references, plus the roots). The agent collects, the tool computes: the
# dominator tree and every size are worked out in Rust.
#
# Op `retained_graph` {chunk_s, chunk_max, mem_reads, bulk}: the census's walk
# (gc.get_objects() minus the agent's own objects, in chunks, untracked
# referents followed a level at a time), frames as the census's ("k":
# "retained", "v": 2) with two segment kinds the tool reads:
#   ["t", n] / ["u", n, 0]   ids tids | sizes       objects, as the census
#   ["e", n, m, r, ov, fl]   ids: src[n] dst[m] | counts[n] rc[r]
#       references: source i refers to the next counts[i] of dst (what
#       gc.get_referents shows, in order, with repeats). rc (r == n or 0):
#       sys.getrefcount of each source as measured, of which `ov` are the
#       agent's own references; the tool compares the rest with the
#       references it knows of, and an object held by more is held from C
#       (a root). fl bit 1: sources are untracked (repeats of one send the
#       same list: the tool keeps the first); bit 2: extra references (dict
#       keys, code constants) that are not counted against refcounts.
# References are asked for in bulk (one gc.get_referents for many objects)
# where the count per object is known: exact lists, tuples and sets, and
# plain instances whose class comes last (bulk false: never, for
# benchmarks). The agent's own objects are not sent, but their references
# are (as sources the tool never sees described): what they hold is
# explained by them.
# Then the thread frames (except the agent's): a "u" segment and their
# locals as references (3.11+ frames do not show them to the collector
# while they run; a 3.10 running frame is not even tracked).
#
# Result: the census's, plus roots [{id, kind: module|frame|sys.modules,
# name | thread, ident, depth, func, file, line}], classes [ids], edges
# (how many references were sent).

_RET_DEPTH = 100


def _ret_refcounts(t, objs):
    return t['array'](t['tc'], t['map'](sys.getrefcount, objs))


def _ret_overhead(t):
    """References that measuring with _ret_refcounts adds to an object of
    the list measured, beyond the list itself."""
    p = object()
    lst = [p]
    r = _ret_refcounts(t, lst)[0]
    p = lst = None
    return max(0, r - 2)


class _ret_Graph(_census_Census):
    """One graph: a census that also ships the references."""

    def __init__(self, agent, req):
        _census_Census.__init__(self, agent, req)
        self.gc_only = False
        self.fingerprint = False
        self.n_edges = 0
        self.ov = 0
        try:
            import _operator as operator
        except ImportError:
            import operator
        self.t['and_'] = operator.and_
        self.modules = []
        self.classes = []
        self.seq_keys = set()

    def flush(self, extra=None):
        head = {'k': 'retained'}
        if extra:
            head.update(extra)
        _census_Census.flush(self, head)

    def edges(self, srcs, lists, rc=None, ov=0, flags=0):
        """An "e" segment: srcs[i] refers to lists[i]; returns them flat."""
        t = self.t
        counts = t['array'](t['tc'], t['map'](len, lists))
        return self.edges_flat(srcs, counts, list(t['chain'](lists)), rc, ov, flags)

    def edges_flat(self, srcs, counts, flat, rc=None, ov=0, flags=0):
        """An "e" segment: srcs[i] refers to the next counts[i] of flat."""
        self.pending.extend(srcs)
        self.pending.extend(flat)
        self.tail += _census_tobytes(counts)
        r = 0
        if rc is not None:
            self.tail += _census_tobytes(rc)
            r = len(rc)
        self.segs.append(['e', len(srcs), len(flat), r, ov, flags])
        self.n_edges += len(flat)
        return flat

    def extra_edges(self, objs, keys, present, flags):
        """References gc.get_referents does not show: the keys of dicts (a
        dict with str keys does not traverse them) and the constants, names
        and bytecode of code objects."""
        t = self.t
        out = []
        for g, fn in ((_CENSUS_F_DICT, t['keys']), (_CENSUS_F_FDICT, t['fdkeys']),
                      (_CENSUS_F_CODE, t['code_attrs'])):
            m = self.mask(keys, present, self.groups[g])
            if m is not None:
                srcs = list(t['compress'](objs, m))
                lists = list(t['map'](list, t['map'](fn, srcs)))
                out.append(self.edges(srcs, lists, flags=flags | 2))
        return out

    def old_globals(self, dicts):
        """Marks as ours the module namespaces among dicts named like ours
        (an earlier session's agent namespace the collector has not freed
        yet). Returns whether any was found."""
        t = self.t
        try:
            hit = list(t['map'](self.names.__contains__,
                                t['map'](dict.get, dicts, t['repeat']('__name__'))))
        except TypeError:
            hit = []
            for d in dicts:
                try:
                    hit.append(dict.get(d, '__name__') in self.names)
                except TypeError:
                    hit.append(False)
        if not any(hit):
            return False
        self.own.update(t['map'](id, t['compress'](dicts, hit)))
        return True

    def chunk(self, objs):
        t = self.t
        seq = (list, tuple, set, frozenset)
        self.seq_keys = set([id(x) for x in seq]) if self.safe else set(seq)
        comp = t['compress']
        orig = objs
        tl, keys, present = self.describe(objs)
        objs, tl, keys = self.drop_own(objs, tl, keys, present)
        m = self.mask(keys, present, self.stale_keys)
        if m is not None:
            mods = list(t['map'](self.groups[_CENSUS_F_MODULE].__contains__, comp(keys, m)))
            if _census_stale(self, list(comp(objs, m)), mods):
                self.own_keys_add()
                objs, tl, keys = self.drop_own(objs, tl, keys, present)
        m = self.mask(keys, present, self.groups[_CENSUS_F_DICT])
        if m is not None and self.old_globals(list(comp(objs, m))):
            objs, tl, keys = self.drop_own(objs, tl, keys, present)
        m = None
        if len(objs) != len(orig):
            # What our objects refer to is explained by them: their
            # references count against reference counts (never shown).
            # (Never the list of what goes out: it would end up in itself.)
            own = self.own
            out = self.pending
            mine = [o for o in orig if id(o) in own and o is not out]
            refs = [[r for r in gc.get_referents(o) if r is not out] for o in mine]
            self.edges(mine, refs)
            mine = refs = out = None
        # Held by: the gc.get_objects() list, the chunk, maybe a filtered
        # copy of it, and the measuring itself.
        rc = _ret_refcounts(t, objs)
        ov = self.ov + 2 + (0 if objs is orig else 1)
        orig = None
        self.add_records('t', objs, tl, self.sizes(objs, keys))
        self.n_tracked += len(objs)
        self.chunks += 1
        m = self.mask(keys, present, self.groups[_CENSUS_F_MODULE])
        if m is not None:
            self.modules.extend(comp(objs, m))
        m = self.mask(keys, present, self.groups[_CENSUS_F_TYPE])
        if m is not None:
            self.classes.extend(t['map'](id, comp(objs, m)))
        if self.classobj_type is not None:
            m = list(t['map'](t['is_'], t['map'](type, objs), t['repeat'](self.classobj_type)))
            if any(m):
                self.classes.extend(t['map'](id, comp(objs, m)))
        m = None
        found = self.references(objs, tl, keys, present, rc, ov)
        rc = None
        found.extend(self.extra_edges(objs, keys, present, 0))
        tl = keys = present = objs = None
        level = list(t['filterfalse'](gc.is_tracked, t['chain'](found)))
        found = None
        self.untracked(level)

    def references(self, objs, tl, keys, present, rc, ov):
        """The "e" segments of tracked objects; returns the references.
        gc.get_referents(*many) is much cheaper than once per object, so
        objects whose number of referents is known without asking go in
        bulk: exact lists, tuples and sets (their length), and instances
        of plain classes when all have as many as the first, with their
        class last (checked for each)."""
        t = self.t
        comp = t['compress']
        out = []
        rest = None
        seqs = self.mask(keys, present, self.seq_keys) if self.req.get('bulk', True) else None
        if seqs is not None:
            part = list(comp(objs, seqs))
            counts = t['array'](t['tc'], t['map'](len, part))
            flat = gc.get_referents(*part)
            if len(flat) == sum(counts):
                out.append(self.edges_flat(part, counts, flat,
                                           t['array'](t['tc'], comp(rc, seqs)), ov))
                rest = list(t['map'](t['not_'], seqs))
            part = flat = counts = None
        plain = self.mask(keys, present, self.groups[_CENSUS_F_PLAIN])
        if not self.req.get('bulk', True):
            plain = None
        if plain is not None and rest is not None:
            plain = list(t['map'](t['and_'], plain, rest))
        if plain is not None and any(plain):
            inst = list(comp(objs, plain))
            itl = list(comp(tl, plain))
            k = len(gc.get_referents(inst[0]))
            flat = gc.get_referents(*inst)
            if k >= 1 and len(flat) == k * len(inst) and all(
                    t['map'](t['is_'], flat[k - 1::k], itl)):
                counts = t['array'](t['tc'], t['repeat'](k, len(inst)))
                out.append(self.edges_flat(inst, counts, flat,
                                           t['array'](t['tc'], comp(rc, plain)), ov))
                done = list(t['map'](t['not_'], plain))
                rest = done if rest is None else list(t['map'](t['and_'], rest, done))
            inst = itl = flat = None
        if rest is None:
            out.append(self.edges(objs, list(t['map'](gc.get_referents, objs)), rc, ov))
        elif any(rest):
            part = list(comp(objs, rest))
            out.append(self.edges(part, list(t['map'](gc.get_referents, part)),
                                  t['array'](t['tc'], comp(rc, rest)), ov))
        return out

    def untracked(self, level):
        """The untracked objects in level, and what untracked containers
        among them hold, a level at a time (they only nest: no cycles)."""
        t = self.t
        depth = 0
        while level and depth < _RET_DEPTH:
            depth += 1
            ltl, keys, present = self.describe(level)
            self.add_records('u', level, ltl, self.sizes(level, keys), t['array'](t['tc']))
            self.n_untracked += len(level)
            ltl = None
            m = self.mask(keys, present, self.groups[_CENSUS_F_GC])
            found = []
            if m is not None:
                srcs = list(t['compress'](level, m))
                found.append(self.edges(srcs, list(t['map'](gc.get_referents, srcs)), flags=1))
                srcs = None
            m = None
            found.extend(self.extra_edges(level, keys, present, 1))
            keys = present = level = None
            level = list(t['filterfalse'](gc.is_tracked, t['chain'](found)))
            found = None

    def frames(self):
        """The other threads' frames: records, and their locals as
        references; their root descriptions."""
        t = self.t
        frames, infos, ours = _rg_stacks(self.agent)
        ours = None
        new = sys.version_info >= (3, 11)
        srcs = []
        lists = []
        for f, info in zip(frames, infos):
            info['id'] = id(f)
            try:
                if new and f.f_code.co_flags & _RG_CO_OPTIMIZED:
                    vals = list(f.f_locals.values())
                    vals.append(f.f_globals)
                elif new:
                    vals = [f.f_globals, f.f_locals]
                elif not gc.is_tracked(f):
                    vals = gc.get_referents(f)
                else:
                    continue
                if f.f_back is not None:
                    vals.append(f.f_back)
            except Exception:
                continue
            srcs.append(f)
            lists.append(vals)
        vals = f = None
        if frames:
            ftl, keys, present = self.describe(frames)
            self.add_records('u', frames, ftl, self.sizes(frames, keys), t['array'](t['tc']))
            ftl = keys = present = None
        flat = []
        if srcs:
            flat = self.edges(srcs, lists)
        srcs = lists = frames = None
        self.flush()
        self.untracked(list(t['filterfalse'](gc.is_tracked, flat)))
        flat = None
        self.flush()
        return infos

    def roots(self, infos):
        module_type = type(sys)
        mods = {}
        for name, m in list(sys.modules.items()):
            if m is not None and isinstance(m, module_type) and id(m) not in mods:
                n = _rg_module_name(m)
                mods[id(m)] = n if n != '?' else _rg_cap(name, 200)
        for m in self.modules:
            if id(m) not in mods:
                mods[id(m)] = _rg_module_name(m)
        m = None
        self.modules = []
        out = list(infos)
        for mid, name in mods.items():
            out.append({'id': mid, 'kind': 'module', 'name': name})
        out.append({'id': id(sys.modules), 'kind': 'sys.modules', 'name': 'sys.modules'})
        return out

    def run(self):
        t0 = _clock()
        self.ov = _ret_overhead(self.t)
        res = _census_Census.run(self)
        self.seg = _clock()
        infos = self.frames()
        roots = self.roots(infos)
        for tid, tp in self.types.items():
            mod, qual = _census_type_name(tp)
            res['types'].append([tid, _text(mod) if mod is not None else None, _text(qual),
                                 self.pre_by_tid.get(tid, 0)])
        self.types = {}
        self.end_segment()
        res.update({'hold_total_s': self.hold_total, 'holds': self.holds,
                    'chunks': self.chunks, 'sent_bytes': self.sent_bytes,
                    'untracked_sent': self.n_untracked, 'max_hold_s': self.max_hold})
        res['roots'] = roots
        res['classes'] = self.classes
        res['edges'] = self.n_edges
        res['elapsed_s'] = _clock() - t0
        self.classes = []
        return res


def _ret_op(agent, req):
    g = _ret_Graph(agent, req)
    try:
        return g.run()
    finally:
        g.ids.close()
        g.agent = g.req = g.t = g.ids = None
        g = None


EXTRA_OPS['retained_graph'] = _ret_op
