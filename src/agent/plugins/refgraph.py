# memsleuth agent plugin: refgraph -- why are these objects alive?
#
# "The agent collects, the tool computes." Two ops:
#
# refgraph {type: NAME | object_id: ID, samples: K, seed: S, chunk_words: N}
#     Streams the reference graph of every gc-tracked object as chunks
#     {"id", "chunk": true, "kind", "words", "itemsize", "byteorder"} whose
#     payload is `words` unsigned words of `itemsize` bytes, native order:
#       kind "edges": records  SRC DST... 0  (ids; an id is never 0). A record
#                     may span chunks; a SRC may come in several records
#                     (each thread frame gets one more: 3.11+ frames do not
#                     show their locals to the gc while they run).
#       kind "types": ids of every class (class roots).
#     Only tracked referents are listed (untracked ones are atoms, or
#     containers of atoms, and lead nowhere), except that an untracked target
#     (a str asked for by id, ...) gets its referrers in extra records.
#     Answer: targets (K sampled ids, reservoir sampling, no `random` import),
#     instances, matched_types, roots [{id, kind: module|frame|sys.modules,
#     name | thread, ident, depth, func, file, line}], excluded (the agent's
#     own objects: namespace, instance, session namespace, thread frames,
#     this op's lists), objects, timings.
#     The target holds nothing more than the gc.get_objects() list, the
#     frames/types lists and one chunk (~512 KiB).
#
# refgraph_labels {edges: [[src, dst]...], nodes: [id...]}
#     Finds those objects again (scanning gc.get_objects(), the thread frames
#     and the referents of the sources; never from an id alone) and names
#     each edge [src, dst, kind, label]: key ['k'], dictkey, index [3], attr
#     .name (instance dict or 3.11+ inline values, slots and C members,
#     __self__, __func__, tb_frame, f_back, cell_contents, ...), dict (an
#     owner's own __dict__), local (frame or generator local), cell (closure
#     'name'), member (set), unknown, gone; and each node {type, kind, name,
#     len, func/file/line}. No repr() of anything but plain data.
#
# refgraph_referents {object_id, parent, limit, cap}
#     One object (found like the above, never from an id alone: a tracked
#     object, a thread frame, else among the referents of `parent` or, last,
#     of every tracked object) and what it refers to (`memsleuth view`): up
#     to `limit` referents, each with its id, the label of the reference, a
#     description (as for nodes), its sys.getsizeof and a short repr (the
#     census plugin's when it is loaded, else plain data only).
#
# Globals here are prefixed _rg_: all plugins share one namespace.

_RG_CHUNK_WORDS = 1 << 16
_RG_MAX_SAMPLES = 10000
_RG_MAX_LABEL_ITEMS = 100000
_RG_TEXT_CAP = 160
_RG_MAX_FRAMES_PER_THREAD = 500
# co_flags: the frame has fast locals (a function body, not module or class).
_RG_CO_OPTIMIZED = 0x1


class _rg_Rng(object):
    """A 64-bit LCG: sampling needs no `random` import in the target."""

    def __init__(self, seed):
        self.x = (int(seed) * 2862933555777941757 + 3037000493) & 0xFFFFFFFFFFFFFFFF

    def random(self):
        self.x = (self.x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return (self.x >> 11) / float(1 << 53)


def _rg_words():
    import array
    for tc in ('Q', 'L'):
        try:
            a = array.array(tc)
        except ValueError:
            continue
        if a.itemsize >= 4:
            return a
    raise _AgentError('no unsigned word array type')


def _rg_bytes(a):
    if hasattr(a, 'tobytes'):
        return a.tobytes()
    return a.tostring()


def _rg_cap(s, n=_RG_TEXT_CAP):
    s = _text(s)
    if len(s) > n:
        s = s[:n - 1] + u'\u2026'
    return s


def _rg_type_name(t):
    """module.qualname of a class (the short name when there is no module)."""
    try:
        mod = t.__dict__.get('__module__') if isinstance(getattr(t, '__dict__', None), dict) else None
    except Exception:
        mod = None
    if mod is None:
        mod = getattr(t, '__module__', None)
    name = None
    try:
        name = type.__dict__['__qualname__'].__get__(t) if isinstance(t, type) else None
    except Exception:
        name = None
    if not name:
        name = getattr(t, '__name__', None) or '?'
    if not isinstance(mod, _text_types) or mod in ('__builtin__', 'builtins', 'exceptions'):
        return _text(name)
    return _text('%s.%s' % (mod, name))


def _rg_thread_names():
    names = {}
    th = sys.modules.get('threading')
    if th is None:
        return names
    try:
        for ident, t in list(getattr(th, '_active', {}).items()):
            try:
                names[ident] = _rg_cap(t.name, 80)
            except Exception:
                pass
    except Exception:
        pass
    return names


def _rg_frame_info(f):
    code = f.f_code
    return {
        'func': _rg_cap(code.co_name, 80),
        'file': _rg_cap(code.co_filename, 300),
        'line': int(f.f_lineno or 0),
    }


def _rg_is_ours(f):
    return f.f_code.co_filename in (AGENT_FILE, '<memsleuth-bootstrap>')


def _rg_stacks(agent):
    """(frames of the other threads, their root info, the agent thread's
    frames). Walking f_back makes the frame objects of 3.11+ exist, so they
    can be roots. Parallel lists: no container of ours holds a frame next to
    its info."""
    names = _rg_thread_names()
    frames = []
    infos = []
    ours = []
    # Not this very frame: `ours` would hold it while it holds `ours` (and
    # the target's frames in `frames`), a cycle left behind as garbage.
    me = sys._getframe()
    for ident, top in list(sys._current_frames().items()):
        f = top
        n = 0
        while f is not None and n < _RG_MAX_FRAMES_PER_THREAD:
            if ident == agent.ident:
                if f is not me:
                    ours.append(f)
            else:
                try:
                    info = _rg_frame_info(f)
                    info['kind'] = 'frame'
                    info['thread'] = names.get(ident)
                    info['ident'] = ident
                    info['depth'] = n
                    frames.append(f)
                    infos.append(info)
                except Exception:
                    pass
            f = f.f_back
            n += 1
        top = f = None
    me = None
    return frames, infos, ours


def _rg_excluded(agent, ours):
    """What is the agent's, not the target's."""
    out = [globals(), agent, agent.ns, agent.captures, agent.imported]
    try:
        out.append(agent.__dict__)
    except Exception:
        pass
    for f in ours:
        out.append(f)
        if _rg_is_ours(f):
            out.append(f.f_globals)
    return [id(o) for o in out if o is not None]


def _rg_all_types():
    """Every class, found through __subclasses__ (no heap scan)."""
    seen = {}
    stack = [object]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen[id(t)] = t
        try:
            stack.extend(type.__subclasses__(t))
        except Exception:
            pass
    return list(seen.values())


def _rg_type_matches(t, want):
    if not want:
        return False
    try:
        if getattr(t, '__module__', None) == '_memsleuth_agent':
            return False
        name = getattr(t, '__name__', None)
        if name == want:
            return True
        qual = getattr(t, '__qualname__', None)
        if qual == want:
            return True
        full = _rg_type_name(t)
        if full == want:
            return True
        mod = getattr(t, '__module__', None)
        return isinstance(mod, _text_types) and '%s.%s' % (mod, name) == want
    except Exception:
        return False


class _rg_OldStyle:
    pass


def _rg_module_name(m):
    try:
        n = m.__dict__.get('__name__')
    except Exception:
        n = None
    return _rg_cap(n if isinstance(n, _text_types) else '?', 200)


def _rg_op_graph(agent, req):
    t0 = _clock()
    want_type = req.get('type')
    want_id = req.get('object_id')
    if want_type is not None and not isinstance(want_type, _text_types):
        raise TypeError('type must be a string')
    if want_id is not None:
        want_id = int(want_id)
    if (want_type is None) == (want_id is None):
        raise ValueError('give exactly one of type and object_id')
    k = max(1, min(int(req.get('samples') or 20), _RG_MAX_SAMPLES))
    chunk_words = max(1024, min(int(req.get('chunk_words') or _RG_CHUNK_WORDS), 1 << 22))
    rng = _rg_Rng(req.get('seed') or 0)
    rid = req.get('id')
    frames, infos, ours = _rg_stacks(agent)
    types = _rg_all_types()
    module_type = type(sys)
    class_type = type(_rg_OldStyle) if PY2 else None
    matched_types = []
    match = set()
    if want_type is not None:
        for t in types:
            if _rg_type_matches(t, want_type):
                match.add(t)
                matched_types.append(_rg_type_name(t))
    special = set(match)
    special.add(module_type)
    if class_type is not None:
        special.add(class_type)

    objs = gc.get_objects()
    t_census = _clock()
    excluded = _rg_excluded(agent, ours)
    for o in (frames, infos, ours, types, req, match, special):
        excluded.append(id(o))
    ours = o = None
    excluded_set = set(excluded)

    a = _rg_words()
    itemsize = a.itemsize
    counts = {'edges_words': 0, 'chunks': 0}

    def flush(kind, arr):
        if len(arr):
            counts['chunks'] += 1
            if kind == 'edges':
                counts['edges_words'] += len(arr)
            agent.send_chunk(rid, {'kind': kind, 'words': len(arr), 'itemsize': arr.itemsize,
                                  'byteorder': sys.byteorder}, _rg_bytes(arr))

    get_refs = gc.get_referents
    tracked = gc.is_tracked
    append = a.append
    extend = a.extend
    modules = []
    old_classes = []
    reservoir = []
    seen = 0
    found_id = False
    for o in objs:
        append(id(o))
        refs = get_refs(o)
        if len(refs) <= chunk_words:
            extend(map(id, filter(tracked, refs)))
        else:
            # A huge container: its record spans chunks.
            for i in range(0, len(refs), chunk_words):
                extend(map(id, filter(tracked, refs[i:i + chunk_words])))
                if len(a) >= chunk_words:
                    flush('edges', a)
                    a = _rg_words()
                    append = a.append
                    extend = a.extend
        refs = None
        append(0)
        t = type(o)
        if t in special:
            if t is module_type:
                modules.append(o)
            elif t is class_type:
                old_classes.append(o)
            if t in match and id(o) not in excluded_set:
                seen += 1
                if len(reservoir) < k:
                    reservoir.append(o)
                else:
                    j = int(rng.random() * seen)
                    if j < k:
                        reservoir[j] = o
        if len(a) >= chunk_words:
            flush('edges', a)
            a = _rg_words()
            append = a.append
            extend = a.extend
    o = t = None
    if want_id is not None:
        for o in objs:
            if id(o) == want_id and want_id not in excluded_set:
                found_id = True
                reservoir.append(o)
                seen = 1
                break
        o = None
    t_walk = _clock()

    # Running frames: 3.11+ frames do not show their locals to the gc while
    # they run (and 3.10 ones are not even tracked): one record per frame.
    root_info = []
    for f, info in zip(frames, infos):
        try:
            vals = []
            if sys.version_info < (3, 11):
                vals = get_refs(f)
            elif f.f_code.co_flags & _RG_CO_OPTIMIZED:
                vals = list(f.f_locals.values())
                vals.append(f.f_globals)
            else:
                vals = [f.f_globals, f.f_locals]
            ids = list(map(id, filter(tracked, vals)))
            if f.f_back is not None:
                ids.append(id(f.f_back))
            vals = None
        except Exception:
            ids = []
        append(id(f))
        extend(ids)
        append(0)
        info['id'] = id(f)
        root_info.append(info)
        if len(a) >= chunk_words:
            flush('edges', a)
            a = _rg_words()
            append = a.append
            extend = a.extend
    f = info = ids = None
    frames = infos = None

    # Untracked targets (strings, numbers, ...): found among referents;
    # their referrers come in extra records.
    untracked = []
    if want_id is not None and not found_id:
        untracked_ids = set([want_id])
    elif want_type is not None and seen == 0 and match:
        m_has = match.__contains__
        picked = set()
        useen = 0
        for o in objs:
            refs = get_refs(o)
            if not any(map(m_has, map(type, refs))):
                continue
            for r in refs:
                if type(r) in match and not tracked(r) and id(r) not in picked:
                    useen += 1
                    if len(untracked) < k:
                        untracked.append(r)
                        picked.add(id(r))
                    else:
                        j = int(rng.random() * useen)
                        if j < k:
                            picked.discard(id(untracked[j]))
                            untracked[j] = r
                            picked.add(id(r))
            refs = r = None
        o = None
        seen = useen
        untracked_ids = set([id(r) for r in untracked])
        picked = None
    else:
        untracked_ids = None
    if untracked_ids:
        hit = untracked_ids.isdisjoint
        hits = 0
        for o in objs:
            refs = get_refs(o)
            if hit(map(id, refs)):
                continue
            append(id(o))
            for r in refs:
                if id(r) in untracked_ids:
                    append(id(r))
                    hits += 1
            append(0)
            refs = r = None
            if len(a) >= chunk_words:
                flush('edges', a)
                a = _rg_words()
                append = a.append
                extend = a.extend
        o = None
        if want_id is not None and not found_id and hits:
            found_id = True
            seen = 1
    flush('edges', a)
    a = None
    n_objects = len(objs)
    objs = None

    # Classes: roots of their attributes.
    a = _rg_words()
    for t in types:
        a.append(id(t))
        if len(a) >= chunk_words:
            flush('types', a)
            a = _rg_words()
    for t in old_classes:
        a.append(id(t))
    flush('types', a)
    n_types = len(types) + len(old_classes)
    types = old_classes = a = t = None

    mod_roots = {}
    for name, m in list(sys.modules.items()):
        if m is not None and isinstance(m, module_type) and id(m) not in mod_roots:
            n = _rg_module_name(m)
            mod_roots[id(m)] = n if n != '?' else _rg_cap(name, 200)
    for m in modules:
        if id(m) not in mod_roots:
            mod_roots[id(m)] = _rg_module_name(m)
    modules = m = None
    for mid, name in mod_roots.items():
        root_info.append({'id': mid, 'kind': 'module', 'name': name})
    root_info.append({'id': id(sys.modules), 'kind': 'sys.modules', 'name': 'sys.modules'})

    targets = [id(o) for o in reservoir] + [id(o) for o in untracked]
    target_types = {}
    for o in reservoir + untracked:
        target_types[str(id(o))] = _rg_type_name(type(o))
    reservoir = untracked = o = None
    if want_id is not None and not targets and found_id:
        targets = [want_id]
    return {
        'itemsize': itemsize,
        'byteorder': sys.byteorder,
        'objects': n_objects,
        'types': n_types,
        'edges_words': counts['edges_words'],
        'chunks': counts['chunks'],
        'matched_types': sorted(set(matched_types)),
        'instances': seen,
        'targets': targets,
        'target_types': target_types,
        'found': bool(targets),
        'roots': root_info,
        'excluded': excluded,
        'census_s': t_census - t0,
        'walk_s': t_walk - t_census,
        'total_s': _clock() - t0,
    }


# -- labels ------------------------------------------------------------------

_RG_SAFE_ATOMS = (int, float, bool, type(None)) + _text_types + (bytes,)
if PY2:
    _RG_SAFE_ATOMS = _RG_SAFE_ATOMS + (long,)  # noqa: F821 (2.7 only)


def _rg_safe_repr(x, depth=0):
    """repr() of plain data only: no user __repr__ ever runs."""
    t = type(x)
    try:
        if t in _text_types or t is bytes:
            if len(x) > 60:
                return _rg_cap(repr(x[:60]) + u'\u2026', _RG_TEXT_CAP)
            return _rg_cap(repr(x))
        if t is int or (PY2 and t is long):  # noqa: F821
            if x.bit_length() > 200:
                return u'<int of %d bits>' % x.bit_length()
            return _text(repr(x))
        if t in (float, bool, type(None)):
            return _text(repr(x))
        if t is tuple and depth < 2 and len(x) <= 8:
            inner = [_rg_safe_repr(v, depth + 1) for v in x]
            return _rg_cap(u'(' + u', '.join(inner) + (u',)' if len(x) == 1 else u')'))
    except Exception:
        pass
    return u'<%s object at 0x%x>' % (_rg_cap(_rg_type_name(t), 80), id(x))


def _rg_descriptor_get(base, name, obj):
    """obj.<name> through the descriptor defined by `base` (so an override in
    a subclass, or __getattribute__, never runs)."""
    for klass in getattr(base, '__mro__', (base,)):
        d = getattr(klass, '__dict__', {})
        if name in d:
            desc = d[name]
            getter = getattr(type(desc), '__get__', None)
            if getter is None:
                return desc
            return getter(desc, obj, type(obj))
    raise AttributeError(name)


_RG_FUNC_ATTRS = ('__closure__', '__globals__', '__defaults__', '__kwdefaults__',
                  '__dict__', '__code__', '__annotations__', '__module__', '__doc__',
                  '__name__', '__qualname__', '__type_params__', '__builtins__',
                  'func_closure', 'func_globals', 'func_defaults', 'func_dict')
_RG_METHOD_ATTRS = ('__self__', '__func__', 'im_class')
_RG_TB_ATTRS = ('tb_frame', 'tb_next')
_RG_FRAME_ATTRS = ('f_back', 'f_code', 'f_globals', 'f_builtins', 'f_trace')
_RG_EXC_ATTRS = ('__traceback__', '__context__', '__cause__', 'args', '__notes__')
_RG_GEN_ATTRS = ('gi_frame', 'gi_code', 'cr_frame', 'cr_code', 'ag_frame', 'ag_code',
                 'gi_yieldfrom', 'cr_await', '__name__', '__qualname__')
_RG_TYPE_ATTRS = ('__mro__', '__bases__', '__base__', '__dict__')


def _rg_attr_from(base, names, src, dst):
    for n in names:
        try:
            if _rg_descriptor_get(base, n, src) is dst:
                return n
        except Exception:
            continue
    return None


def _rg_find_values(pairs_iter, want):
    """{id(value): label} over (label, value) pairs, for wanted ids."""
    out = {}
    for label, v in pairs_iter:
        i = id(v)
        if i in want and i not in out:
            out[i] = label
            if len(out) == len(want):
                break
    return out


def _rg_dict_items(d):
    if PY2:
        return dict.iteritems(d)
    return dict.items(d)


def _rg_instance_dict(o):
    """The instance __dict__ through the descriptor, so no user code runs
    (3.11+: this materializes it from the inline values, like vars())."""
    t = type(o)
    try:
        d = _rg_descriptor_get(t, '__dict__', o)
    except Exception:
        return None
    return d if isinstance(d, dict) else None


def _rg_members(o):
    """(name, descriptor) of the C-level members of o's type: __slots__ and
    the fields extension types expose (functools.partial.func, ...).
    Reading a member descriptor runs no Python code."""
    out = []
    seen = set()
    for klass in getattr(type(o), '__mro__', ()):
        try:
            items = list(getattr(klass, '__dict__', {}).items())
        except Exception:
            continue
        for name, desc in items:
            if name in seen or type(desc).__name__ != 'member_descriptor':
                continue
            seen.add(name)
            shown = name
            owner = '_%s__' % klass.__name__.lstrip('_')
            if name.startswith(owner):
                shown = name[len(owner) - 2:]
            out.append((shown, desc))
    return out


def _rg_label_edges(src, dsts, ctx):
    """{id(dst): (kind, label)} for the wanted dsts (ids) of src."""
    out = {}
    want = set(dsts)
    t = type(src)

    def done():
        return len(out) >= len(want)

    def put(i, kind, label):
        if i in want and i not in out:
            out[i] = (kind, label)

    # Namespaces and containers: one pass over the items for every dst.
    if isinstance(src, dict):
        for k, v in _rg_dict_items(src):
            if id(v) in want and id(v) not in out:
                out[id(v)] = ('key', u'[%s]' % _rg_safe_repr(k))
            if id(k) in want and id(k) not in out:
                out[id(k)] = ('dictkey', u'key %s' % _rg_safe_repr(k))
            if done():
                break
        if done():
            return out
    if isinstance(src, (list, tuple)):
        it = list.__iter__(src) if isinstance(src, list) else tuple.__iter__(src)
        owner = ctx['closures'].get(id(src)) if isinstance(src, tuple) else None
        for i, v in enumerate(it):
            if id(v) in want and id(v) not in out:
                if owner is not None:
                    names = owner
                    var = names[i] if i < len(names) else '?'
                    out[id(v)] = ('cell', u"closure '%s'" % _rg_cap(var, 80))
                else:
                    out[id(v)] = ('index', u'[%d]' % i)
                if done():
                    break
        if done():
            return out
    if isinstance(src, (set, frozenset)):
        for v in (set.__iter__(src) if isinstance(src, set) else frozenset.__iter__(src)):
            put(id(v), 'member', u'{\u2026}')
            if done():
                return out
    tname = t.__name__
    if tname == 'cell':
        try:
            put(id(src.cell_contents), 'attr', u'.cell_contents')
        except Exception:
            pass
    elif tname == 'frame':
        for n in _RG_FRAME_ATTRS:
            try:
                put(id(getattr(src, n)), 'attr', u'.' + n)
            except Exception:
                pass
        if not done():
            try:
                loc = src.f_locals
                if loc is src.f_globals:
                    put(id(loc), 'attr', u'.f_globals')
                elif not src.f_code.co_flags & _RG_CO_OPTIMIZED:
                    put(id(loc), 'attr', u'.f_locals')
                else:
                    for name, v in list(loc.items()):
                        put(id(v), 'local', _rg_cap(name, 80))
                        if done():
                            break
                loc = v = None
            except Exception:
                pass
    elif tname == 'traceback':
        for n in _RG_TB_ATTRS:
            try:
                put(id(getattr(src, n)), 'attr', u'.' + n)
            except Exception:
                pass
    elif tname == 'deque':
        for i, v in enumerate(list(src)):
            put(id(v), 'index', u'[%d]' % i)
            if done():
                return out
    elif tname in ('function', 'instancemethod', 'method', 'builtin_function_or_method',
                   'method-wrapper', 'generator', 'coroutine', 'async_generator'):
        names = {'function': _RG_FUNC_ATTRS}.get(tname, _RG_METHOD_ATTRS + _RG_GEN_ATTRS)
        for i in list(want):
            if i in out:
                continue
            obj = ctx['objects'].get(i)
            if obj is None:
                continue
            n = _rg_attr_from(t, names, src, obj)
            if n is not None:
                out[i] = ('attr', u'.' + n)
        if not done() and tname in ('generator', 'coroutine', 'async_generator'):
            # 3.11+: a suspended generator holds its frame's locals itself.
            for a in ('gi_frame', 'cr_frame', 'ag_frame'):
                fr = getattr(src, a, None)
                if fr is None:
                    continue
                try:
                    for name, v in list(fr.f_locals.items()):
                        put(id(v), 'local', _rg_cap(name, 80))
                except Exception:
                    pass
                fr = v = None
                break
    if done():
        return out
    if isinstance(src, type) or tname == 'classobj':
        # The class namespace (a dict behind the mappingproxy).
        try:
            ns = type.__dict__['__dict__'].__get__(src) if isinstance(src, type) else src.__dict__
            real = [ns] + [r for r in gc.get_referents(ns) if isinstance(r, dict)]
            for r in real:
                put(id(r), 'dict', u'__dict__')
        except Exception:
            pass
        for n in _RG_TYPE_ATTRS:
            try:
                put(id(type.__dict__[n].__get__(src) if isinstance(src, type) else getattr(src, n)),
                    'attr', u'.' + n)
            except Exception:
                pass
        return out
    if isinstance(src, type(sys)):
        try:
            put(id(src.__dict__), 'dict', u'__dict__')
        except Exception:
            pass
        return out
    if isinstance(src, BaseException):
        for i in list(want):
            obj = ctx['objects'].get(i)
            if i in out or obj is None:
                continue
            n = _rg_attr_from(BaseException, _RG_EXC_ATTRS, src, obj)
            if n is not None:
                out[i] = ('attr', u'.' + n)
    if done():
        return out
    # Instance attributes: the __dict__ (3.11+: inline values show up as
    # direct referents; vars() materializes the dict to name them), slots.
    d = _rg_instance_dict(src)
    if d is not None:
        put(id(d), 'dict', u'__dict__')
        for k, v in _rg_dict_items(d):
            if id(v) in want and id(v) not in out:
                if isinstance(k, _text_types) and _is_identifier(k):
                    out[id(v)] = ('attr', u'.' + _text(k))
                else:
                    out[id(v)] = ('key', u'.__dict__[%s]' % _rg_safe_repr(k))
            if done():
                return out
    for name, desc in _rg_members(src):
        try:
            put(id(desc.__get__(src, t)), 'attr', u'.' + _text(name))
        except Exception:
            pass
        if done():
            return out
    if not done():
        try:
            put(id(t), 'attr', u'.__class__')
        except Exception:
            pass
    return out


def _rg_describe(o, ctx):
    t = type(o)
    tname = _rg_type_name(t)
    info = {'type': tname}
    try:
        base = t.__name__
        if isinstance(o, type(sys)):
            info['kind'] = 'module'
            info['name'] = _rg_module_name(o)
        elif isinstance(o, type) or base == 'classobj':
            info['kind'] = 'class'
            info['name'] = _rg_type_name(o)
        elif base == 'frame':
            info['kind'] = 'frame'
            info.update(_rg_frame_info(o))
            info['name'] = u'%s() at %s:%d' % (info['func'], info['file'], info['line'])
        elif base == 'traceback':
            info['kind'] = 'traceback'
            info['name'] = u'line %d' % o.tb_lineno
        elif base == 'cell':
            info['kind'] = 'cell'
        elif base == 'function':
            info['kind'] = 'function'
            code = o.__code__
            qual = getattr(o, '__qualname__', None) or o.__name__
            mod = o.__module__ if isinstance(getattr(o, '__module__', None), _text_types) else None
            info['name'] = _rg_cap((mod + '.' if mod else '') + qual)
            info['file'] = _rg_cap(code.co_filename, 300)
            info['line'] = int(code.co_firstlineno)
            info['freevars'] = [_rg_cap(v, 80) for v in code.co_freevars[:256]]
        elif base in ('method', 'instancemethod'):
            info['kind'] = 'method'
            func = _rg_descriptor_get(t, '__func__', o)
            qual = getattr(func, '__qualname__', None) or getattr(func, '__name__', '?')
            if PY2:
                cls = getattr(o, 'im_class', None)
                qual = '%s.%s' % (getattr(cls, '__name__', '?'), qual)
            info['name'] = _rg_cap(qual)
            info['bound'] = _rg_descriptor_get(t, '__self__', o) is not None
        elif base in ('generator', 'coroutine', 'async_generator'):
            info['kind'] = 'generator'
            info['name'] = _rg_cap(getattr(o, '__qualname__', None) or getattr(o, '__name__', '?'))
        elif isinstance(o, dict):
            info['kind'] = 'dict'
            info['len'] = dict.__len__(o)
        elif isinstance(o, (list, tuple, set, frozenset)):
            info['kind'] = 'container'
            info['len'] = len(o) if t in (list, tuple, set, frozenset) else -1
        elif isinstance(o, _RG_SAFE_ATOMS):
            info['kind'] = 'value'
            info['name'] = _rg_safe_repr(o)
        else:
            info['kind'] = 'object'
    except Exception:
        info.setdefault('kind', 'object')
    return info


def _rg_op_labels(agent, req):
    edges = req.get('edges') or []
    nodes = req.get('nodes') or []
    if len(edges) > _RG_MAX_LABEL_ITEMS or len(nodes) > _RG_MAX_LABEL_ITEMS:
        raise ValueError('too many edges or nodes')
    edges = [(int(s), int(d)) for s, d in edges]
    nodes = [int(n) for n in nodes]
    want = set(nodes)
    for s, d in edges:
        want.add(s)
        want.add(d)
    objects = {}
    frames = _rg_stacks(agent)[0]
    for f in frames:
        if id(f) in want:
            objects[id(f)] = f
    frames = f = None
    for o in gc.get_objects():
        if id(o) in want:
            objects[id(o)] = o
    o = None
    # Untracked ends: among the referents (or a frame's locals) of the source.
    by_src = {}
    for s, d in edges:
        by_src.setdefault(s, set()).add(d)
    for s, ds in by_src.items():
        src = objects.get(s)
        missing = [d for d in ds if d not in objects]
        if src is None or not missing:
            continue
        cands = list(gc.get_referents(src))
        if type(src).__name__ == 'frame':
            try:
                cands.extend(list(src.f_locals.values()))
                cands.append(src.f_globals)
            except Exception:
                pass
        for r in cands:
            if id(r) in ds and id(r) not in objects:
                objects[id(r)] = r
        cands = r = None
    src = None
    closures = {}
    for o in list(objects.values()):
        if type(o).__name__ == 'function':
            try:
                cl = o.__closure__
                if cl is not None:
                    closures[id(cl)] = o.__code__.co_freevars
            except Exception:
                pass
    o = None
    ctx = {'objects': objects, 'closures': closures}
    out_edges = []
    for s, ds in by_src.items():
        src = objects.get(s)
        if src is None:
            for d in ds:
                out_edges.append([s, d, 'gone', u'?'])
            continue
        try:
            found = _rg_label_edges(src, [d for d in ds], ctx)
        except Exception:
            found = {}
        for d in ds:
            kind, label = found.get(d, ('gone' if d not in objects else 'unknown', u'?'))
            out_edges.append([s, d, kind, _rg_cap(label)])
    src = None
    out_nodes = {}
    for n in want:
        o = objects.get(n)
        if o is None:
            continue
        out_nodes[str(n)] = _rg_describe(o, ctx)
    o = None
    objects.clear()
    ctx = None
    return {'edges': out_edges, 'nodes': out_nodes}


def _rg_short(o, cap):
    """(size, repr) of o for a listing."""
    try:
        size = sys.getsizeof(o)
    except Exception:
        size = 0
    short = globals().get('_census_short_repr')
    try:
        if short is not None:
            try:
                import reprlib
            except ImportError:
                import repr as reprlib
            return size, short(o, cap, reprlib)
        return size, _rg_cap(_rg_safe_repr(o), cap)
    except Exception:
        return size, None


def _rg_refs_of(o):
    """What o refers to, as the referents listing shows it: its traversal,
    the keys of a dict (str-keyed dicts do not traverse them), the locals
    of a running 3.11+ frame."""
    refs = list(gc.get_referents(o))
    if isinstance(o, dict):
        refs.extend(list(dict.keys(o)))
    if type(o).__name__ == 'frame' and sys.version_info >= (3, 11):
        try:
            refs.extend(list(o.f_locals.values()))
        except Exception:
            pass
    return refs


def _rg_find(want, frames, objs, ids):
    """The tracked object or thread frame with id `want`, or None."""
    for f in frames:
        if id(f) == want:
            return f
    try:
        return objs[ids.index(want)]
    except ValueError:
        return None


def _rg_op_referents(agent, req):
    want = int(req.get('object_id'))
    parent = req.get('parent')
    limit = max(1, min(int(req.get('limit') or 200), 5000))
    cap = max(20, min(int(req.get('cap') or 120), 2000))
    frames = _rg_stacks(agent)[0]
    objs = gc.get_objects()
    ids = list(map(id, objs))
    obj = _rg_find(want, frames, objs, ids)
    if obj is None and parent is not None:
        # Untracked (a dict of atoms, a str): among its parent's referents.
        p = _rg_find(int(parent), frames, objs, ids)
        if p is not None:
            for r in _rg_refs_of(p):
                if id(r) == want:
                    obj = r
                    break
        p = r = None
    if obj is None:
        # Last resort: among the referents of every tracked object.
        for i in range(0, len(objs), 20000):
            refs = gc.get_referents(*objs[i:i + 20000])
            try:
                obj = refs[list(map(id, refs)).index(want)]
                break
            except ValueError:
                pass
            refs = None
            time.sleep(0)  # let the application's threads run
        refs = None
    frames = objs = ids = None
    if obj is None:
        return {'found': False}
    refs = _rg_refs_of(obj)
    uniq = []
    seen = set()
    for r in refs:
        if id(r) not in seen:
            seen.add(id(r))
            uniq.append(r)
    refs = None
    total = len(uniq)
    uniq = uniq[:limit]
    closures = {}
    if type(obj).__name__ == 'function':
        try:
            if obj.__closure__ is not None:
                closures[id(obj.__closure__)] = obj.__code__.co_freevars
        except Exception:
            pass
    ctx = {'objects': dict([(id(r), r) for r in uniq]), 'closures': closures}
    try:
        labels = _rg_label_edges(obj, [id(r) for r in uniq], ctx)
    except Exception:
        labels = {}
    out = []
    for r in uniq:
        size, short = _rg_short(r, cap)
        kind, label = labels.get(id(r), ('unknown', u'?'))
        out.append({'id': id(r), 'kind': kind, 'label': _rg_cap(label), 'size': size,
                    'repr': short, 'node': _rg_describe(r, ctx)})
    size, short = _rg_short(obj, cap)
    info = {'found': True, 'id': want, 'size': size, 'repr': short,
            'node': _rg_describe(obj, ctx), 'total': total, 'referents': out}
    obj = r = uniq = None
    ctx = None
    return info


EXTRA_OPS['refgraph'] = _rg_op_graph
EXTRA_OPS['refgraph_labels'] = _rg_op_labels
EXTRA_OPS['refgraph_referents'] = _rg_op_referents
