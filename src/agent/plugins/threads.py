# memsleuth agent plugin: threads -- what each Python thread is doing.
#
# Appended to agent.py's namespace when first used; globals start with _thr_.
# One source for Python 2.7 and 3.6-3.15, stdlib only.
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
