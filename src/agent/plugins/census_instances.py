# memsleuth agent plugin part: census_instances -- sampled instances of a
# census row, for `memsleuth view`. Sent after census_own.py, census_types.py
# and census.py (it uses their own-object walk) and census_reprs.py (short
# reprs), as one plugin.
#
# Op `census_instances` {tids, dict_of, expect, limit, cap, untracked}: up to
# `limit` objects whose type id is in `tids` (`memsleuth view`'s instance
# list), spread over the heap: every (expect // limit)-th match, so a type
# with a million instances still costs one C-speed scan. With `dict_of` they
# are the __dict__s of such objects (as the census attributes them); with
# `untracked` the untracked referents of tracked objects are searched too
# (str, int, ... are not in gc.get_objects()). The agent's own objects are
# left out as in the census. Each: id, sys.getsizeof and a short repr.


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
        _census_own_walk(c, objs)
        mine.update(c.own)
    finally:
        c.agent = c.req = c.t = c.ids = None
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


EXTRA_OPS['census_instances'] = _census_instances_op
