# memsleuth agent plugin: watch -- the cheap reads `doctor` repeats while
# it watches a process.
#
# Appended to agent.py's namespace when first used; globals start with _thr_
# (threads) and _tc_ (type counts). One source for Python 2.7 and 3.6-3.15,
# stdlib only.
#
# type_counts {chunk: N}
#     A lean census of the gc-tracked objects: per chunk of gc.get_objects(),
#     arrays of ids, type ids and sys.getsizeof built at C speed and sent as
#     `census` chunk frames (format 2 of the census plugin, one tracked
#     segment each: no untracked objects, no dict owners), then the names of
#     the distinct
#     types. Unlike `census` it does not leave out the agent's own objects or
#     attribute dicts to their owners: those are constant between two reads,
#     and doctor only compares reads, so it costs a fraction of a census.
#
# threads {frames: N}
#     Every thread but the agent's: ident, name and daemon flag (from
#     threading's own table, read without calling into threading), native
#     id (3.8+), and its innermost N frames as [func, file, line]. The tool
#     compares two listings to see which threads are new and groups them.

_THR_MAX_THREADS = 10000
_THR_MAX_FRAMES = 24


def _thr_cap(s, n):
    try:
        s = _text(s)
    except Exception:
        s = '?'
    return s[:n]


def _thr_op_threads(agent, req):
    want = req.get('frames', 8)
    if not isinstance(want, int) or want < 0:
        want = 8
    want = min(want, _THR_MAX_FRAMES)
    table = {}
    th = sys.modules.get('threading')
    if th is not None:
        try:
            for ident, t in list(getattr(th, '_active', {}).items()):
                table[ident] = t
        except Exception:
            pass
    out = []
    for ident, top in list(sys._current_frames().items())[:_THR_MAX_THREADS]:
        if ident == agent.ident:
            continue
        item = {'ident': ident}
        t = table.get(ident)
        if t is not None:
            try:
                item['name'] = _thr_cap(t.name, 80)
                item['daemon'] = bool(t.daemon)
                nid = getattr(t, 'native_id', None)
                if isinstance(nid, int):
                    item['native_id'] = nid
            except Exception:
                pass
        frames = []
        f = top
        while f is not None and len(frames) < want:
            code = f.f_code
            frames.append([_thr_cap(code.co_name, 80), _thr_cap(code.co_filename, 300),
                           int(f.f_lineno or 0)])
            f = f.f_back
        item['frames'] = frames
        out.append(item)
        top = f = t = None
    return {'threads': out}


EXTRA_OPS['threads'] = _thr_op_threads


_TC_CHUNK = 50000


def _tc_bytes(a):
    # array.tobytes is 3.2+; 2.7 has tostring.
    f = getattr(a, 'tobytes', None)
    return f() if f is not None else a.tostring()


def _tc_name(t):
    mod = getattr(t, '__module__', None)
    qual = getattr(t, '__qualname__', None) or getattr(t, '__name__', None) or '?'
    if not isinstance(mod, _text_types):
        mod = None
    if not isinstance(qual, _text_types):
        qual = '?'
    return mod, qual


def _tc_op_type_counts(agent, req):
    import array
    imap = map
    if PY2:
        import itertools
        imap = itertools.imap
    tc = 'L' if array.array('L').itemsize == 8 else 'Q'
    chunk = req.get('chunk', _TC_CHUNK)
    if not isinstance(chunk, int) or chunk < 1000:
        chunk = _TC_CHUNK
    rid = req.get('id', 0)
    start = seg = _clock()
    objs = gc.get_objects()
    n = len(objs)
    types = {}
    holds = 0
    hold_total = 0.0
    max_hold = 0.0
    errors = 0
    w = array.array(tc).itemsize
    for lo in range(0, n, chunk):
        part = objs[lo:lo + chunk]
        ids = array.array(tc, imap(id, part))
        tl = list(imap(type, part))
        tids = array.array(tc, imap(id, tl))
        try:
            sizes = array.array(tc, imap(sys.getsizeof, part))
        except Exception:
            sizes = array.array(tc)
            for o in part:
                try:
                    sizes.append(sys.getsizeof(o))
                except Exception:
                    sizes.append(0)
                    errors += 1
        for t in set(tl):
            types[id(t)] = t
        payload = _tc_bytes(ids) + _tc_bytes(tids) + _tc_bytes(sizes)
        head = {'k': 'census', 'v': 2, 'w': w, 'le': sys.byteorder == 'little',
                'dt': id(dict), 'seg': [['t', len(part)]]}
        part = tl = ids = tids = sizes = None
        d = _clock() - seg
        hold_total += d
        holds += 1
        max_hold = max(max_hold, d)
        agent.send_chunk(rid, head, payload)
        payload = None
        seg = _clock()
    objs = None
    table = []
    for tid, t in types.items():
        mod, qual = _tc_name(t)
        table.append([tid, mod, qual])
    types = None
    d = _clock() - seg
    hold_total += d
    holds += 1
    max_hold = max(max_hold, d)
    return {'types': table, 'dict_tid': id(dict), 'gc_only': True, 'listed': n,
            'tracked': n, 'size_errors': errors, 'max_hold_s': max_hold,
            'hold_total_s': hold_total, 'holds': holds,
            'elapsed_s': _clock() - start}


EXTRA_OPS['type_counts'] = _tc_op_type_counts
