# memsleuth agent plugin: census_reprs, short reprs of objects a census
# found (`memsleuth growth` asks for samples of the new objects of its top
# growers).
#
# Appended to agent.py and run in the same namespace, so every global here is
# prefixed `_census_`. Stdlib only, one source for 2.7 and 3.6-3.15.
#
# Op `census_reprs` {ids: [[id, type id or [type ids]], ...], cap, gc_only,
# payload, repr_ids}:
# short reprs of the objects with those ids, found by scanning
# gc.get_objects() (and, unless gc_only, their untracked referents); never
# by casting an id to a pointer. An object whose type id is not one of the
# expected ones (the id was reused) is reported as gone. With `repr_ids`,
# only those get a repr (the others just `found`). With `payload`, each
# found object also gets the bytes and number of the untracked objects
# only it holds (what gc-only censuses miss) and, on 3.11+, how many
# attribute values it keeps outside its own getsizeof (managed dict
# values): doctor turns both into bytes.

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


def _census_values(o):
    """Attribute values an instance keeps in managed dict storage (3.11+:
    a values array, inline from 3.13) that its getsizeof does not count;
    None for other objects. Counted as its referents other than its type,
    never by touching `__dict__` (that would make a dict in the target)."""
    if sys.version_info < (3, 11):
        return None
    t = type(o)
    if not (getattr(t, '__flags__', 0) & (1 << 4)):  # Py_TPFLAGS_MANAGED_DICT
        return None
    return len([r for r in gc.get_referents(o) if r is not t])


def _census_payloads(found, cap=20000):
    """{id: [bytes, objects, values]}: the getsizeof bytes and number of
    the untracked objects (str, bytes, bytearray, int, untracked tuples and
    what they hold) each found object refers to that no other found object
    reaches -- what a census of gc-tracked objects misses -- and its
    managed dict values (`_census_values`). Shared ones (interned keys,
    small ints, None) are reached from several samples and are not
    counted. Bounded to `cap` per object."""
    reached = {}
    owners = {}
    for key, o in found.items():
        mine = {}
        todo = [r for r in gc.get_referents(o) if not gc.is_tracked(r)]
        while todo and len(mine) < cap:
            r = todo.pop()
            if id(r) in mine or issubclass(type(r), type):
                continue
            mine[id(r)] = r
            if type(r) is tuple:
                todo.extend(gc.get_referents(r))
        for rid in mine:
            owners[rid] = owners.get(rid, 0) + 1
        reached[key] = mine
    out = {}
    for key, mine in reached.items():
        total = 0
        n = 0
        for rid, r in mine.items():
            if owners.get(rid) == 1:
                try:
                    total += sys.getsizeof(r)
                    n += 1
                except Exception:
                    pass
        try:
            values = _census_values(found[key])
        except Exception:
            values = None
        out[key] = [total, n, values]
    return out


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
    payload = _census_payloads(found) if req.get('payload') else {}
    repr_ids = req.get('repr_ids')
    repr_ids = None if repr_ids is None else set([int(x) for x in repr_ids])
    out = []
    for i, tid in want.items():
        o = found.get(i)
        if o is None:
            out.append({'id': i, 'found': False, 'repr': None})
            continue
        r = None
        if repr_ids is None or i in repr_ids:
            r = _census_short_repr(o, cap, reprlib)
        p = payload.get(i) or [None, None, None]
        out.append({'id': i, 'found': True, 'repr': r, 'payload': p[0],
                    'payload_objects': p[1], 'values': p[2]})
    found = None
    max_hold = max(max_hold, _clock() - seg)
    return {'reprs': out, 'scanned': scanned, 'max_hold_s': max_hold,
            'elapsed_s': _clock() - t0}


EXTRA_OPS['census_reprs'] = _census_reprs_op
