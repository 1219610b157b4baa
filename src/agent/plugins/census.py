# memsleuth agent plugin: census, the heap census behind `memsleuth types`
# and `memsleuth growth`.
#
# Appended to agent.py and run in the same namespace, so every global here is
# prefixed `_census_`. Stdlib only, one source for 2.7 and 3.6-3.15; imports
# happen inside the ops (array, itertools, operator), and the agent removes
# what it imported at detach. No threads, no state kept between requests.
#
# Op `census` {gc_only, collect, fingerprint, chunk_s}: optionally
# gc.collect(), then gc.get_objects() and the agent's own objects (below);
# streams chunk frames, then answers with the type table and statistics.
# Work is done in chunks of gc-tracked objects (at most _CENSUS_CHUNK_MAX,
# sized to take about `chunk_s`, default 0.04 s); every frame is one socket
# write, which releases the GIL, so the longest hold is about one chunk's
# work. Per chunk, at C speed (map/compress/array, no Python loop per object):
#
#   tracked:   ids, type ids, sys.getsizeof of the chunk's objects;
#   owners:    (dict id, owner type id) for dicts that are the __dict__ of an
#              instance, a module or a class;
#   untracked: (unless gc_only) the objects the chunk refers to
#              (gc.get_referents, plus the keys of dicts, which dicts with
#              str keys do not traverse, plus the constants/names/bytecode of
#              code objects) that the collector does not track, and
#              recursively what untracked containers (tuples, dicts) hold;
#              not deduplicated here (the tool does it), a level at a time.
#
# Result: {types: [[type id, module, qualname, pre], ...], dict_tid,
# drop_dicts, listed, tracked, untracked_sent, owned_dicts, excluded, frozen,
# collected, collect_s, get_objects_s, own_s, chunks, sent_bytes,
# size_errors, max_hold_s (longest stretch between two socket writes),
# hold_total_s, holds, elapsed_s, cpu_s}. `pre` is added by the tool to the
# size of each untracked object of that type (see untracked()).
#
# Chunk frame header: {"k": "census", "nt": NT, "nu": NU, "no": NO, "nf": NF,
# "w": 8, "le": true, "dt": id(dict)}; payload, native 64-bit arrays back to back:
#   ids[NT] tids[NT] sizes[NT] ids[NU] tids[NU] sizes[NU] dict_ids[NO] owner_tids[NO]
#   ids[NF] hashes[NF]
# (the last section only with `fingerprint`: value hashes of exact ints and
# floats, sent before their records).
# The tool deduplicates by id across chunks (an untracked str seen from many
# chunks counts once; fingerprinted ints and floats by id and hash) and
# aggregates per type.
#
# Excluded: the agent's own objects (its globals and everything its
# functions, classes and instances hold, the session namespace, the modules
# imported during the session and the classes defined in them, also
# leftovers of earlier sessions under those module names, the frames of the
# agent thread and what they hold, this census's own lists).
#
# Op `census_reprs` {ids: [[id, type id], ...], cap, gc_only}: short reprs of
# the objects with those ids, found by scanning gc.get_objects() (and, unless
# gc_only, their untracked referents); never by casting an id to a pointer.
# An object whose type id differs from the expected one (the id was reused)
# is reported as gone.
#
# Op `census_instances` {tids, dict_of, expect, limit, cap, untracked}: up to
# `limit` objects whose type id is in `tids` (`memsleuth view`'s instance
# list), spread over the heap: every (expect // limit)-th match, so a type
# with a million instances still costs one C-speed scan. With `dict_of` they
# are the __dict__s of such objects (as the census attributes them); with
# `untracked` the untracked referents of tracked objects are searched too
# (str, int, ... are not in gc.get_objects()). The agent's own objects are
# left out as in the census. Each: id, sys.getsizeof and a short repr.

_CENSUS_OWN_NAMES = ('_memsleuth_agent', '__memsleuth__', '_memsleuth_bootstrap')
# Py_TPFLAGS_HEAPTYPE
_CENSUS_HEAPTYPE = 1 << 9
# Most gc-tracked objects per chunk (chunks otherwise aim at chunk_s of work).
_CENSUS_CHUNK_MAX = 30000
# Most records per frame.
_CENSUS_FRAME_RECORDS = 32768
# Per-type flags.
_CENSUS_F_DICT = 1       # dict or a subclass: iterate its keys
_CENSUS_F_CODE = 2       # code object: visit its constants, names, bytecode
_CENSUS_F_PLAIN = 4      # instance of a plain class: find its __dict__
_CENSUS_F_MODULE = 8     # module: its __dict__ is "dict of module"
_CENSUS_F_TYPE = 16      # heap type: its dict is "dict of <metaclass>"
_CENSUS_F_OLDSTYLE = 32  # Python 2 old-style instance: counted under its class


class _census_Plain(object):
    """Reference layout of a plain class instance (dict + weakref slots)."""


class _census_Old:
    """On Python 2, an old-style class (for InstanceType and ClassType)."""


def _census_tools():
    """The C-speed building blocks, imported on first use."""
    import itertools
    try:
        import _operator as operator
    except ImportError:
        import operator
    import array
    t = {}
    if PY2:
        t['map'] = itertools.imap
        t['zip'] = itertools.izip
        t['filterfalse'] = itertools.ifilterfalse
        t['keys'] = dict.iterkeys
    else:
        t['map'] = map
        t['zip'] = zip
        t['filterfalse'] = itertools.filterfalse
        t['keys'] = dict.keys
    t['compress'] = itertools.compress
    t['chain'] = itertools.chain.from_iterable
    t['repeat'] = itertools.repeat
    t['is_'] = operator.is_
    t['and_'] = operator.and_
    t['not_'] = operator.not_
    t['eq'] = operator.eq
    t['call'] = getattr(operator, 'call', None)
    t['itemgetter'] = operator.itemgetter
    t['array'] = array.array
    tc = 'L' if array.array('L').itemsize == 8 else 'Q'
    t['tc'] = tc
    t['stc'] = tc.lower()  # signed, same size: hash values
    t['w'] = array.array(tc).itemsize
    vi = sys.version_info
    names = ['co_consts', 'co_names', 'co_filename', 'co_name']
    if vi < (3, 11):
        names += ['co_code', 'co_varnames', 'co_freevars', 'co_cellvars']
        names.append('co_lnotab' if vi < (3, 10) else 'co_linetable')
    else:
        names += ['co_linetable', 'co_exceptiontable', 'co_qualname']
    t['code_attrs'] = operator.attrgetter(*names)
    return t


def _census_tget(t, name, default=None):
    """A type's own attribute through type's descriptor (no metaclass code)."""
    try:
        return type.__dict__[name].__get__(t, type)
    except Exception:
        return default


def _census_type_name(t):
    """(module, qualified name) of a type or a Python 2 old-style class."""
    if isinstance(t, type):
        mod = _census_tget(t, '__module__')
        qual = _census_tget(t, '__qualname__') or _census_tget(t, '__name__') or '?'
    else:
        mod = getattr(t, '__module__', None)
        qual = getattr(t, '__name__', None) or '?'
    if not isinstance(mod, _text_types):
        mod = None
    if not isinstance(qual, _text_types):
        qual = '?'
    return mod, qual


def _census_type_flags(t, code_type, module_type, classobj_type):
    f = 0
    if classobj_type is not None and type(t) is classobj_type:
        return _CENSUS_F_OLDSTYLE
    try:
        if issubclass(t, dict):
            f |= _CENSUS_F_DICT
        if t is code_type:
            f |= _CENSUS_F_CODE
        if issubclass(t, module_type):
            f |= _CENSUS_F_MODULE
        if issubclass(t, type):
            f |= _CENSUS_F_TYPE
        flags = _census_tget(t, '__flags__', 0)
        if (flags & _CENSUS_HEAPTYPE
                and _census_tget(t, '__dictoffset__', 0)
                and _census_tget(t, '__basicsize__') == _census_Plain.__basicsize__):
            mro = _census_tget(t, '__mro__') or ()
            if mro and mro[-1] is object and all(
                    [_census_tget(b, '__flags__', 0) & _CENSUS_HEAPTYPE for b in mro[:-1]]):
                f |= _CENSUS_F_PLAIN
    except Exception:
        pass
    return f


class _census_Census(object):
    """One census: state for a single request, dropped when it ends."""

    def __init__(self, agent, req):
        self.agent = agent
        self.req = req
        self.rid = req.get('id', 0)
        self.gc_only = bool(req.get('gc_only'))
        self.collect = bool(req.get('collect'))
        self.chunk_s = float(req.get('chunk_s') or 0.04)
        # Value fingerprints of ints and floats (growth: their addresses are
        # reused at once, so an id alone does not tell a new one apart).
        self.fingerprint = bool(req.get('fingerprint'))
        self.t = _census_tools()
        self.types = {}      # type id -> type (every type shipped)
        self.flags = {}      # type id -> flags
        self.own = set()
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
        self.code_type = type(_census_op.__code__)
        self.module_type = type(sys)
        self.oldstyle_type = None
        self.classobj_type = None
        if PY2:
            self.oldstyle_type = type(_census_Old())
            self.classobj_type = type(_census_Old)
        self.frame_type = type(sys._getframe())
        self.function_type = type(_census_op)
        self.builtin_type = type(len)
        self.method_type = type(agent.run)
        # ModuleType's own __dict__ member: a module's dict without running
        # a module subclass's __getattribute__.
        self.module_dict = type(sys).__dict__['__dict__']
        if PY2:
            self.fp_types = (int, long, float)  # noqa: F821
        else:
            self.fp_types = (int, float)
        self.pre = {}        # type id -> getsizeof - __sizeof__ (untracked)
        self.names = set()   # module names that are not the target's
        self.drop_dicts = []

    # -- GIL segments ------------------------------------------------------

    def end_segment(self):
        now = _clock()
        d = now - self.seg
        self.hold_total += d
        self.holds += 1
        if d > self.max_hold:
            self.max_hold = d
        return now

    def send(self, meta, payload):
        self.end_segment()
        head = {'k': 'census', 'w': self.t['w'], 'le': sys.byteorder == 'little',
                'dt': id(dict)}
        head.update(meta)
        self.agent.send_chunk(self.rid, head, payload)
        self.sent_bytes += len(payload)
        self.seg = _clock()

    # -- what is ours ------------------------------------------------------

    def own_walk(self, objs):
        """Ids of the agent's own objects, to leave out of the census."""
        G = globals()
        agent = self.agent
        own = self.own
        never = set([id(objs), id(vars(_builtins)), id(sys.modules), id(sys.__dict__)])
        names = set(_CENSUS_OWN_NAMES)
        globs = set([id(G)])
        mods = set()
        # Modules that appeared since the bootstrap ran (the agent's and this
        # session's imports): removed at detach, so not the target's.
        before = (agent.params or {}).get('modules_before') or ()
        imported = set(sys.modules)
        imported.difference_update(before)
        imported.update(agent.imported)
        for name in imported:
            m = sys.modules.get(name)
            if m is not None and type(m) is self.module_type:
                names.add(name)
                mods.add(id(m))
                try:
                    globs.add(id(self.module_dict.__get__(m)))
                except Exception:
                    pass
        # Module names that are not the target's: modules, classes and
        # functions under these names are ours wherever they are found (also
        # leftovers of earlier sessions, e.g. the old module object the
        # interpreter keeps for a builtin module the agent imported).
        self.names = names
        stack = [G, agent, self, self.req, agent.ns]
        try:
            stack.append(agent.__dict__)
        except Exception:
            pass
        # The agent thread's frames: the frames themselves, the globals they
        # run in, and the locals of the agent's frames below the census (the
        # census's own locals are reachable from `self`; reading f_locals
        # stores a snapshot on the frame, and on 2.7, where every frame is in
        # `objs`, a snapshot holding `objs` would be a cycle keeping the whole
        # list alive).
        skip = set([_census_op.__code__, _census_reprs_op.__code__])
        for fn in _census_Census.__dict__.values():
            if hasattr(fn, '__code__'):
                skip.add(fn.__code__)
        f = sys._getframe(1)
        while f is not None:
            own.add(id(f))
            g = f.f_globals
            if g.get('__name__') in names:
                # Only frames running our code (the agent thread runs
                # nothing else, but be sure).
                globs.add(id(g))
                stack.append(g)
                if f.f_code not in skip:
                    try:
                        loc = f.f_locals
                        # Up to 3.12 this is a dict kept on the frame (and
                        # refreshed in place): ours too.
                        if type(loc) is dict:
                            own.add(id(loc))
                        stack.extend(list(loc.values()))
                        loc = None
                    except Exception:
                        pass
            f = f.f_back
        f = g = None
        T = self.function_type
        B = self.builtin_type
        M = self.module_type
        F = self.frame_type
        x = None
        containers = set([dict, list, tuple, set, frozenset, self.method_type,
                          staticmethod, classmethod, property,
                          type(type.__dict__['__dict__']),       # getset_descriptor
                          type(type.__dict__['__basicsize__']),  # member_descriptor
                          type((lambda: x).__closure__[0])])     # cell
        code = self.code_type
        while stack:
            o = stack.pop()
            i = id(o)
            if i in own or i in never:
                continue
            t = type(o)
            if t is M:
                if i not in mods:
                    continue
                try:
                    d = self.module_dict.__get__(o)
                except Exception:
                    d = None
                own.add(i)
                if d is not None:
                    stack.append(d)
                continue
            if t is code:
                # Not tracked itself; its constants may hold nested code.
                stack.extend([c for c in o.co_consts if type(c) is code])
                continue
            if t is F:
                continue
            if t in containers:
                if t is dict and i not in globs and o.get('__name__') in names and '__builtins__' in o:
                    globs.add(i)
                own.add(i)
                stack.extend(gc.get_referents(o))
                continue
            if t is T:
                try:
                    ours = id(o.__globals__) in globs
                except Exception:
                    ours = False
                if ours:
                    own.add(i)
                    stack.extend(gc.get_referents(o))
                    stack.append(o.__code__)
                continue
            if t is B:
                s = getattr(o, '__self__', None)
                if s is not None and id(s) in mods:
                    own.add(i)
                continue
            if issubclass(t, type):
                mod, _ = _census_type_name(o)
                if mod in names:
                    own.add(i)
                    stack.extend(gc.get_referents(o))
                continue
            mod, _ = _census_type_name(t)
            if mod in names and mod is not None:
                # An instance of one of our classes.
                own.add(i)
                stack.extend(gc.get_referents(o))
        return own

    # -- the census ----------------------------------------------------------

    def note_types(self, tida, tl):
        """Records type objects and flags for type ids not seen before.
        Returns the set of type ids in tida."""
        present = set(tida)
        new = present.difference(self.flags)
        if new:
            m = dict(self.t['zip'](tida, tl))
            for tid in new:
                tp = m[tid]
                self.types[tid] = tp
                self.flags[tid] = _census_type_flags(tp, self.code_type, self.module_type,
                                                     self.classobj_type)
        return present

    def note_type(self, tp):
        tid = id(tp)
        if tid not in self.flags:
            self.types[tid] = tp
            self.flags[tid] = _census_type_flags(tp, self.code_type, self.module_type,
                                                 self.classobj_type)
        return tid

    def sizes(self, objs, pre=None):
        """sys.getsizeof of each object; one failing (a broken __sizeof__)
        sends the chunk through a per-object path that counts it as 0.
        With `pre`, the per-type amounts the tool adds back are subtracted."""
        t = self.t
        if pre is None:
            try:
                return t['array'](t['tc'], t['map'](sys.getsizeof, objs))
            except Exception:
                pass
        out = t['array'](t['tc'])
        for o in objs:
            try:
                n = sys.getsizeof(o)
                if pre is not None:
                    n -= pre.get(id(type(o)), 0)
                if n < 0:
                    n = 0
            except Exception:
                n = 0
                self.size_errors += 1
            out.append(n)
        return out

    def describe(self, objs):
        """(types, type ids as an array, flags) of objs; Python 2 old-style
        instances are counted under their class."""
        t = self.t
        tl = list(t['map'](type, objs))
        if PY2:
            ost = self.oldstyle_type
            if any(t['map'](t['is_'], tl, t['repeat'](ost))):
                for j, tp in enumerate(tl):
                    if tp is ost:
                        tl[j] = objs[j].__class__
        tida = t['array'](t['tc'], t['map'](id, tl))
        try:
            fl = list(t['map'](self.flags.__getitem__, tida))
        except KeyError:
            self.note_types(tida, tl)
            fl = list(t['map'](self.flags.__getitem__, tida))
        return tl, tida, fl

    def mask(self, fl, bit):
        t = self.t
        m = list(t['map'](t['and_'], fl, t['repeat'](bit)))
        return m if any(m) else None

    def expand(self, objs, tl, fl, present=None):
        """Everything objs refer to: their traversal, the keys of dicts (a
        dict with only str keys does not traverse them), and the constants,
        names and bytecode of code objects (not traversed at all)."""
        t = self.t
        refs = gc.get_referents(*objs)
        if fl is None:
            # An untracked level: only exact dicts and code objects matter.
            want = []
            if id(dict) in present:
                want.append((dict, t['keys']))
            if id(self.code_type) in present:
                want.append((self.code_type, t['code_attrs']))
            for tp, fn in want:
                m = list(t['map'](t['is_'], tl, t['repeat'](tp)))
                refs.extend(t['chain'](t['map'](fn, t['compress'](objs, m))))
            return refs
        m = self.mask(fl, _CENSUS_F_DICT)
        if m is not None:
            refs.extend(t['chain'](t['map'](t['keys'], t['compress'](objs, m))))
        m = self.mask(fl, _CENSUS_F_CODE)
        if m is not None:
            refs.extend(t['chain'](t['map'](t['code_attrs'], t['compress'](objs, m))))
        return refs

    def owners(self, objs, tl, fl, d_ids, o_tids):
        """Appends (dict id, owner type id) for the instance, module and class
        dicts among objs' referents."""
        t = self.t
        m = self.mask(fl, _CENSUS_F_PLAIN)
        if m is not None:
            inst = list(t['compress'](objs, m))
            itl = list(t['compress'](tl, m))
            m = None
            # A plain instance refers to [its dict, its type] when it has a
            # dict (2.7-3.10: always; 3.11+: when its __dict__ was
            # materialised, else to its attribute values and its type).
            flat = gc.get_referents(*inst)
            if dict not in t['map'](type, flat):
                # No instance refers to any dict: nothing to attribute.
                first = tl2 = []
            elif len(flat) == 2 * len(inst) and all(t['map'](t['is_'], flat[1::2], itl)):
                first = flat[0::2]
                tl2 = itl
            else:
                two = list(t['map'](t['eq'], t['map'](len, t['map'](gc.get_referents, inst)),
                                    t['repeat'](2)))
                if any(two):
                    inst = list(t['compress'](inst, two))
                    tl2 = list(t['compress'](itl, two))
                    rl2 = list(t['map'](gc.get_referents, inst))
                    if all(t['map'](t['is_'], t['map'](t['itemgetter'](1), rl2), tl2)):
                        first = list(t['map'](t['itemgetter'](0), rl2))
                    else:
                        first = [r[0] if r[1] is tp else None for r, tp in zip(rl2, tl2)]
                    rl2 = None
                else:
                    first = tl2 = []
            flat = inst = itl = None
            if first:
                ok = list(t['map'](t['is_'], t['map'](type, first), t['repeat'](dict)))
                if any(ok):
                    d_ids.extend(t['map'](id, t['compress'](first, ok)))
                    o_tids.extend(t['map'](id, t['compress'](tl2, ok)))
            first = tl2 = None
        m = self.mask(fl, _CENSUS_F_MODULE | _CENSUS_F_TYPE | _CENSUS_F_OLDSTYLE)
        if m is not None:
            for o, tp, f in zip(list(t['compress'](objs, m)), list(t['compress'](tl, m)),
                                list(t['compress'](fl, m))):
                try:
                    if f & _CENSUS_F_MODULE:
                        d = self.module_dict.__get__(o)
                    elif f & _CENSUS_F_OLDSTYLE:
                        d = o.__dict__
                    elif _census_tget(o, '__flags__', 0) & _CENSUS_HEAPTYPE:
                        rl = gc.get_referents(o)
                        d = rl[0] if rl else None
                    else:
                        d = None
                except Exception:
                    d = None
                if type(d) is dict:
                    d_ids.append(id(d))
                    o_tids.append(self.note_type(tp))

    def note_pre(self, tida, ltl, level, present):
        """For types first seen among untracked objects: what getsizeof adds
        to type.__sizeof__ (the GC header of untracked tuples and dicts)."""
        new = present.difference(self.pre)
        if not new:
            return
        samples = dict(self.t['zip'](tida, level))
        types = dict(self.t['zip'](tida, ltl))
        for tid in new:
            o = samples[tid]
            tp = types[tid]
            try:
                n = sys.getsizeof(o) - getattr(tp, '__sizeof__')(o)
            except Exception:
                n = 0
            self.pre[tid] = n

    def untracked(self, objs, tl, fl):
        """Sends (ids, type ids, sizes) of the untracked objects that objs
        refer to, and of what untracked containers among them hold,
        recursively, a level at a time. No deduplication here (the tool does
        it): the recursion ends because untracked containers only nest
        (tuples in tuples or dicts, constants in code objects), they cannot
        form cycles.

        Sizes: type(o).__sizeof__(o) through operator.call where it exists
        (3.11+), much cheaper than sys.getsizeof; the tool adds the per-type
        difference (`pre`, the GC header of untracked tuples and dicts)."""
        t = self.t
        mp = t['map']
        arr = t['array']
        tc = t['tc']
        call = t['call']
        rep = t['repeat']
        level = list(t['filterfalse'](gc.is_tracked, self.expand(objs, tl, fl)))
        depth = 0
        while level and depth < 100:
            depth += 1
            ltl = list(mp(type, level))
            ta = arr(tc, mp(id, ltl))
            present = self.note_types(ta, ltl)
            ia = arr(tc, mp(id, level))
            sa = None
            if call is not None:
                self.note_pre(ta, ltl, level, present)
                try:
                    sa = arr(tc, mp(call, mp(getattr, ltl, rep('__sizeof__')), level))
                except Exception:
                    sa = None
                if sa is None:
                    sa = self.sizes(level, pre=self.pre)
            else:
                sa = self.sizes(level)
            self.n_untracked += len(ia)
            if self.fingerprint:
                self.fingerprints(level, ltl, present)
            self.emit(None, None, (ia, ta, sa), None)
            ia = ta = sa = None
            refs = self.expand(level, ltl, None, present)
            ltl = level = present = None
            level = list(t['filterfalse'](gc.is_tracked, refs))
            refs = None

    def fingerprints(self, level, ltl, present):
        """Sends (id, hash) of the exact ints and floats in level, before
        their records: the tool identifies them by both."""
        t = self.t
        for tp in self.fp_types:
            if id(tp) not in present:
                continue
            m = list(t['map'](t['is_'], ltl, t['repeat'](tp)))
            g = list(t['compress'](level, m))
            m = None
            fp = (t['array'](t['tc'], t['map'](id, g)),
                  t['array'](t['stc'], t['map'](hash, g)))
            g = None
            self.emit(None, None, None, None, fp)

    def emit(self, tracked, owners, untracked, extra, fps=None):
        """Sends parallel arrays as census frames of at most FRAME_RECORDS
        records each (the payload is copied twice on its way out: small
        frames keep that, and the agent's memory, small)."""
        step = _CENSUS_FRAME_RECORDS
        nt = len(tracked[0]) if tracked else 0
        no = len(owners[0]) if owners else 0
        nu = len(untracked[0]) if untracked else 0
        nf = len(fps[0]) if fps else 0
        i = j = k = f = 0
        first = True
        while first or i < nt or j < no or k < nu or f < nf:
            first = False
            meta = {'nt': 0, 'nu': 0, 'no': 0, 'nf': 0}
            parts = []
            room = step
            if i < nt:
                e = min(nt, i + room)
                parts += [a[i:e] for a in tracked]
                meta['nt'] = e - i
                room -= e - i
                i = e
            if k < nu and room > 0:
                e = min(nu, k + room)
                parts += [a[k:e] for a in untracked]
                meta['nu'] = e - k
                room -= e - k
                k = e
            if j < no and room > 0:
                e = min(no, j + room)
                parts += [a[j:e] for a in owners]
                meta['no'] = e - j
                room -= e - j
                j = e
            if f < nf and room > 0:
                e = min(nf, f + room)
                parts += [a[f:e] for a in fps]
                meta['nf'] = e - f
                f = e
            if extra:
                meta.update(extra)
            if PY2:
                payload = b''.join([a.tostring() for a in parts])
            else:
                payload = b''.join([a.tobytes() for a in parts])
            parts = None
            self.send(meta, payload)
            payload = None

    def stale(self, objs, fl):
        """Marks as ours the modules named, and the classes defined, under a
        module name that is not the target's; their dicts go to drop_dicts
        (the tool drops them, in whichever chunk they were). Returns whether
        any was found."""
        names = self.names
        found = False
        for o, f in zip(objs, fl):
            try:
                if f & _CENSUS_F_MODULE:
                    d = self.module_dict.__get__(o)
                    name = d.get('__name__') if type(d) is dict else None
                else:
                    name = _census_tget(o, '__module__')
                    d = None
                    if name in names and _census_tget(o, '__flags__', 0) & _CENSUS_HEAPTYPE:
                        rl = gc.get_referents(o)
                        d = rl[0] if rl else None
                if name in names:
                    found = True
                    self.own.add(id(o))
                    if type(d) is dict:
                        self.drop_dicts.append(id(d))
            except Exception:
                pass
        return found

    def chunk(self, objs):
        t = self.t
        arr = t['array']
        tc = t['tc']
        comp = t['compress']
        ida = arr(tc, t['map'](id, objs))
        drop = list(t['map'](self.own.__contains__, ida))
        if any(drop):
            keep = list(t['map'](t['not_'], drop))
            objs = list(comp(objs, keep))
            ida = arr(tc, comp(ida, keep))
            keep = None
        drop = None
        tl, tida, fl = self.describe(objs)
        m = self.mask(fl, _CENSUS_F_MODULE | _CENSUS_F_TYPE)
        if m is not None and self.stale(list(comp(objs, m)), list(comp(fl, m))):
            keep = list(t['map'](t['not_'], t['map'](self.own.__contains__, ida)))
            objs = list(comp(objs, keep))
            ida = arr(tc, comp(ida, keep))
            tl = list(comp(tl, keep))
            tida = arr(tc, comp(tida, keep))
            fl = list(comp(fl, keep))
            keep = None
        m = None
        tracked = (ida, tida, self.sizes(objs))
        ida = tida = None
        owners = (arr(tc), arr(tc))
        self.owners(objs, tl, fl, owners[0], owners[1])
        self.n_tracked += len(objs)
        self.n_owned += len(owners[0])
        self.chunks += 1
        self.emit(tracked, owners, None, None)
        tracked = owners = None
        if not self.gc_only:
            self.untracked(objs, tl, fl)

    def run(self):
        t0 = _clock()
        cpu = getattr(time, 'thread_time', None)
        cpu0 = cpu() if cpu is not None else None
        collected = None
        collect_s = 0.0
        if self.collect:
            collected = gc.collect()
            collect_s = _clock() - t0
            self.emit(None, None, None, {'stage': 'collected'})
        t1 = _clock()
        objs = gc.get_objects()
        get_objects_s = _clock() - t1
        n_listed = len(objs)
        t1 = _clock()
        self.own_walk(objs)
        own_s = _clock() - t1
        self.emit(None, None, None, {'stage': 'listed', 'listed': n_listed})
        i = 0
        n = 5000
        while i < n_listed:
            c0 = _clock()
            part = objs[i:i + n]
            i += len(part)
            self.chunk(part)
            part = None
            took = _clock() - c0
            # Aim each chunk at chunk_s of work (the send is not work, but the
            # socket drains while the tool aggregates, so it is quick).
            if took > 0:
                n = int(n * max(0.25, min(4.0, self.chunk_s / took)))
            n = max(1000, min(n, _CENSUS_CHUNK_MAX))
        objs = None
        excluded = len(self.own)
        self.own = set()
        types = []
        pre = self.pre
        for tid, tp in self.types.items():
            mod, qual = _census_type_name(tp)
            types.append([tid, _text(mod) if mod is not None else None, _text(qual),
                          pre.get(tid, 0)])
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
        c.agent = c.req = c.t = None
        c = None


def _census_repr_config(reprlib, maxstring, maxother, level, items):
    r = reprlib.Repr()
    r.maxlevel = level
    r.maxstring = maxstring
    r.maxother = maxother
    r.maxlong = 40
    for a in ('maxlist', 'maxtuple', 'maxset', 'maxfrozenset', 'maxdeque', 'maxarray', 'maxdict'):
        setattr(r, a, items)
    return r


def _census_short_repr(o, cap, reprlib):
    """At most `cap` characters about o: its repr (reprlib keeps big
    containers and long strings short), and for an object with the default
    repr what it holds: its __dict__ in insertion order, or (3.11+, where an
    instance may have no dict) the attribute values it refers to."""
    text = isinstance(o, _text_types) or type(o) in (bytes, bytearray)
    top = _census_repr_config(reprlib, cap if text else 40, 80, 2, 4)
    inner = _census_repr_config(reprlib, 24, 40, 1, 3)
    try:
        s = top.repr(o)
    except Exception as e:
        s = '<repr failed: %s>' % (_type_name(type(e)),)
    if s.startswith('<') and ' object at 0x' in s[:200]:
        try:
            vals = [v for v in gc.get_referents(o) if not issubclass(type(v), type)]
            if len(vals) == 1 and type(vals[0]) is dict:
                items = list(vals[0].items())
                body = ', '.join(['%s: %s' % (inner.repr(k), inner.repr(v)) for k, v in items[:8]])
                s = '%s {%s%s}' % (s, body, ', ...' if len(items) > 8 else '')
            elif vals:
                body = ', '.join([inner.repr(v) for v in vals[:8]])
                s = '%s [%s%s]' % (s, body, ', ...' if len(vals) > 8 else '')
        except Exception:
            pass
    s = _text(s)
    if len(s) > cap:
        s = s[:max(cap - 3, 0)] + '...'
    return s


def _census_reprs_op(agent, req):
    t0 = _clock()
    import itertools
    try:
        import reprlib
    except ImportError:
        import repr as reprlib
    cap = int(req.get('cap') or 200)
    want = {}
    for pair in req.get('ids') or []:
        tids = pair[1] if isinstance(pair[1], list) else [pair[1]]
        want[int(pair[0])] = set([int(x) for x in tids])
    gc_only = bool(req.get('gc_only'))
    imap = itertools.imap if PY2 else map
    ifilterfalse = itertools.ifilterfalse if PY2 else itertools.filterfalse
    found = {}
    max_hold = 0.0
    seg = _clock()
    objs = gc.get_objects()
    n = len(objs)
    i = 0
    step = 50000
    scanned = 0
    # Tracked objects first, then (unless gc_only) their untracked referents.
    for phase in ((0,) if gc_only else (0, 1)):
        i = 0
        while i < n and len(found) < len(want):
            part = objs[i:i + step]
            i += len(part)
            if phase == 1:
                part = list(ifilterfalse(gc.is_tracked, gc.get_referents(*part)))
            scanned += len(part)
            hits = list(itertools.compress(part, imap(want.__contains__, imap(id, part))))
            part = None
            for o in hits:
                if id(o) not in found and id(type(o)) in want[id(o)]:
                    found[id(o)] = o
            hits = None
            now = _clock()
            max_hold = max(max_hold, now - seg)
            time.sleep(0)  # let the application's threads run
            seg = _clock()
    objs = None
    out = []
    for i, tid in want.items():
        o = found.get(i)
        if o is None:
            out.append({'id': i, 'found': False, 'repr': None})
            continue
        out.append({'id': i, 'found': True, 'repr': _census_short_repr(o, cap, reprlib)})
    found = None
    max_hold = max(max_hold, _clock() - seg)
    return {'reprs': out, 'scanned': scanned, 'max_hold_s': max_hold,
            'elapsed_s': _clock() - t0}


def _census_owned_dict(o, module_type):
    """The __dict__ the census attributes to o ("dict of <type of o>"), or
    None: a module's dict, the first referent of a class or an old-style
    instance, a plain instance's [dict, type] referents."""
    try:
        if isinstance(o, module_type):
            return module_type.__dict__['__dict__'].__get__(o)
        rl = gc.get_referents(o)
        if rl and type(rl[0]) is dict and (isinstance(o, type) or len(rl) == 2):
            return rl[0]
        if PY2 and len(rl) == 2 and type(rl[1]) is dict:
            return rl[1]  # old-style instance: [class, dict]
    except Exception:
        pass
    return None


def _census_instances_op(agent, req):
    t0 = _clock()
    import itertools
    import operator
    try:
        import reprlib
    except ImportError:
        import repr as reprlib
    tids = set([int(x) for x in (req.get('tids') or [])[:1000]])
    limit = max(1, min(int(req.get('limit') or 50), 1000))
    cap = max(20, min(int(req.get('cap') or 200), 4000))
    step = max(1, int(req.get('expect') or 0) // limit)
    dict_of = bool(req.get('dict_of'))
    imap = itertools.imap if PY2 else map
    ifilterfalse = itertools.ifilterfalse if PY2 else itertools.filterfalse
    old_inst = type(_census_Old()) if PY2 else None
    module_type = type(sys)
    mine = set([id(req), id(globals()), id(agent.ns), id(getattr(agent, '__dict__', None))])
    picked = []
    seen = set()
    matched = 0
    scanned = 0
    max_hold = 0.0
    seg = _clock()
    objs = gc.get_objects()
    n = len(objs)
    # The agent's own objects (and what only they hold) are left out, as
    # in the census.
    c = _census_Census(agent, req)
    try:
        mine.update(c.own_walk(objs))
    finally:
        c.agent = c.req = c.t = None
        c = None
    phases = (0, 1) if req.get('untracked') and not dict_of else (0,)
    for phase in phases:
        i = 0
        while i < n and len(picked) < limit:
            part = objs[i:i + 20000]
            i += len(part)
            part = list(itertools.compress(part, imap(operator.not_,
                                                      imap(mine.__contains__, imap(id, part)))))
            if phase == 1:
                part = list(ifilterfalse(gc.is_tracked, gc.get_referents(*part)))
            scanned += len(part)
            hits = list(itertools.compress(part, imap(tids.__contains__, imap(id, imap(type, part)))))
            if old_inst is not None and id(old_inst) not in tids:
                # 2.7 old-style instances are counted under their class.
                olds = itertools.compress(part, imap(operator.is_, imap(type, part),
                                                     itertools.repeat(old_inst)))
                hits.extend([o for o in olds if id(o.__class__) in tids])
            part = None
            # Every step-th match over the whole scan, at C speed.
            for o in hits[(-matched) % step::step]:
                if dict_of:
                    o = _census_owned_dict(o, module_type)
                if o is None or id(o) in seen or id(o) in mine:
                    continue
                seen.add(id(o))
                picked.append(o)
                if len(picked) >= limit:
                    break
            matched += len(hits)
            hits = o = None
            max_hold = max(max_hold, _clock() - seg)
            time.sleep(0)  # let the application's threads run
            seg = _clock()
    objs = None
    out = []
    for o in picked:
        try:
            size = sys.getsizeof(o)
        except Exception:
            size = 0
        out.append({'id': id(o), 'size': size, 'repr': _census_short_repr(o, cap, reprlib)})
    picked = o = None
    max_hold = max(max_hold, _clock() - seg)
    return {'objects': out, 'matched': matched, 'scanned': scanned, 'max_hold_s': max_hold,
            'elapsed_s': _clock() - t0}


EXTRA_OPS['census'] = _census_op
EXTRA_OPS['census_reprs'] = _census_reprs_op
EXTRA_OPS['census_instances'] = _census_instances_op
