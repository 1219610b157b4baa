# memsleuth agent plugin: gcstate -- the garbage collector's state, the
# allocators' statistics, and tracemalloc.
#
# Appended to agent.py and exec'd with it as one module: every global here
# starts with _gcs_. One source for Python 2.7 and 3.6-3.15, stdlib only.
# Modules imported here (ctypes, tracemalloc, ...) are removed by the agent at
# detach; tracemalloc's C-level tracing is the one thing that outlives a
# session, and only after an explicit tm_start.
#
# Ops (each fn(agent, req) -> JSON-able result):
#   gc_state    full gc state + gc.garbage by type, with why its objects are there
#   gc_sample   the cheap counters again (enabled, counts, len(gc.garbage)):
#               the tool sends it a moment after gc_state to see what moves
#   gc_collect  gc.collect(), with object counts by type before and after
#   native_state  glibc mallinfo2/mallinfo, sys._debugmallocstats() text,
#               allocator-related environment
#   native_trim malloc_trim(0) and mallinfo after it
#   tm_status / tm_start / tm_stop / tm_snapshot  tracemalloc (3.4+)

_gcs_debug_order = ('DEBUG_STATS', 'DEBUG_COLLECTABLE', 'DEBUG_UNCOLLECTABLE',
                    'DEBUG_INSTANCES', 'DEBUG_OBJECTS', 'DEBUG_SAVEALL')
# Scanning gc.garbage stops after this many entries (counts are then partial).
_gcs_scan_cap = 1000000
# Objects visited per cycle check.
_gcs_cycle_budget = 5000
_gcs_mallinfo_fields = ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',
                        'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')
_gcs_env_keys = ('PYTHONMALLOC', 'PYTHONMALLOCSTATS', 'MALLOC_ARENA_MAX',
                 'MALLOC_ARENA_TEST', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_MMAP_THRESHOLD_',
                 'MALLOC_TOP_PAD_', 'MALLOC_MMAP_MAX_', 'GLIBC_TUNABLES', 'LD_PRELOAD')
# Most text sys._debugmallocstats() may produce that we keep.
_gcs_stats_cap = 1 << 20
# Snapshot statistics per streamed chunk.
_gcs_tm_chunk = 4000


# -- gc ---------------------------------------------------------------------

def _gcs_debug_flags(flags):
    names = []
    for name in _gcs_debug_order:
        bit = getattr(gc, name, None)
        if bit and flags & bit == bit:
            names.append(name)
    return names


def _gcs_basics():
    """The cheap counters, read in one go."""
    flags = gc.get_debug()
    saveall = getattr(gc, 'DEBUG_SAVEALL', 0)
    stats = None
    if hasattr(gc, 'get_stats'):
        stats = []
        for s in gc.get_stats():
            stats.append({
                'collections': int(s.get('collections', 0)),
                'collected': int(s.get('collected', 0)),
                'uncollectable': int(s.get('uncollectable', 0)),
            })
    freeze = None
    if hasattr(gc, 'get_freeze_count'):
        freeze = int(gc.get_freeze_count())
    callbacks = None
    if hasattr(gc, 'callbacks'):
        callbacks = len(gc.callbacks)
    return {
        'enabled': bool(gc.isenabled()),
        'thresholds': [int(x) for x in gc.get_threshold()],
        'count': [int(x) for x in gc.get_count()],
        'debug': int(flags),
        'debug_flags': _gcs_debug_flags(flags),
        'saveall': bool(saveall and flags & saveall),
        'stats': stats,
        'freeze_count': freeze,
        'callbacks': callbacks,
        'garbage_len': len(gc.garbage),
        'time': time.time(),
    }


def _gcs_class_of(o):
    """The class that decides o's fate: the old-style class on 2.7."""
    t = type(o)
    if PY2 and t.__name__ == 'instance':
        c = getattr(o, '__class__', None)
        if c is not None:
            return c
    return t


def _gcs_qualname(cls):
    try:
        mod = getattr(cls, '__module__', None)
        name = getattr(cls, '__qualname__', None) or getattr(cls, '__name__', None) or '?'
        if not isinstance(name, _text_types):
            name = '?'
        if mod in (None, '__builtin__', 'builtins', 'exceptions') or not isinstance(mod, _text_types):
            return _text(name)
        return _text('%s.%s' % (mod, name))
    except Exception:
        return u'?'


def _gcs_has_del(cls):
    """Whether the class (or a base) defines __del__."""
    try:
        mro = getattr(cls, '__mro__', None)
        if mro is None:
            # An old-style class on 2.7: getattr searches its bases.
            return getattr(cls, '__del__', None) is not None
        for k in mro:
            d = getattr(k, '__dict__', None)
            if d is not None and '__del__' in d:
                return True
    except Exception:
        pass
    return False


def _gcs_tp_del(cls):
    """Whether a type's legacy tp_del slot is set (the finalizer that makes
    objects in a cycle uncollectable on 3.4+); None when it cannot be read
    safely. The layout of PyTypeObject up to tp_del has not changed from 2.7
    to 3.15; what we read is checked against tp_basicsize, tp_itemsize and
    tp_flags first."""
    if not isinstance(cls, type):
        return None
    try:
        import ctypes
        ps = ctypes.sizeof(ctypes.c_void_p)
        # PyObject_VAR_HEAD: the object header (whatever the build) + ob_size.
        head = object.__basicsize__ // ps + 1
        base = id(cls)

        def word(i):
            return ctypes.c_size_t.from_address(base + (head + i) * ps).value

        if word(1) != cls.__basicsize__ or word(2) != cls.__itemsize__:
            return None
        if word(18) & 0xffffffff != cls.__flags__ & 0xffffffff:
            return None
        return word(44) != 0
    except Exception:
        return None


def _gcs_in_cycle(obj, budget):
    """Whether obj can reach itself through its referents (not through
    classes or modules), looking at `budget` objects at most."""
    target = id(obj)
    seen = set()
    stack = list(gc.get_referents(obj))
    n = 0
    try:
        while stack and n < budget:
            o = stack.pop()
            i = id(o)
            if i == target:
                return True
            if i in seen:
                continue
            seen.add(i)
            n += 1
            if isinstance(o, type) or type(o) is type(sys):
                continue
            if PY2 and type(o).__name__ == 'classobj':
                continue
            stack.extend(gc.get_referents(o))
        return False
    finally:
        stack = None
        o = None


def _gcs_garbage_by_type(limit, samples, check_tp_del, cap=_gcs_scan_cap):
    g = gc.garbage
    n = len(g)
    classes = {}   # id(cls) -> [cls, count, [samples]]
    scanned = 0
    while scanned < n and scanned < cap:
        try:
            o = g[scanned]
        except IndexError:
            break
        scanned += 1
        c = _gcs_class_of(o)
        e = classes.get(id(c))
        if e is None:
            e = classes[id(c)] = [c, 0, []]
        e[1] += 1
        if len(e[2]) < samples:
            e[2].append(o)
    o = None
    entries = sorted(classes.values(), key=lambda e: -e[1])
    classes = None
    out = []
    for c, count, objs in entries[:limit]:
        tname = _gcs_qualname(c)
        in_cycle = 0
        for s in objs:
            try:
                if _gcs_in_cycle(s, _gcs_cycle_budget):
                    in_cycle += 1
            except Exception:
                pass
        out.append({
            'type': tname,
            'count': count,
            'has_del': _gcs_has_del(c),
            'tp_del': _gcs_tp_del(c) if check_tp_del else None,
            'generator': tname == 'generator',
            'heap_type': bool(isinstance(c, type) and c.__flags__ & (1 << 9)),
            'sampled': len(objs),
            'in_cycle': in_cycle,
        })
        del objs[:]
    other = 0
    for e in entries[limit:]:
        other += e[1]
        del e[2][:]
    return {'len': n, 'scanned': scanned, 'types': len(entries),
            'other': other, 'by_type': out}


def _gcs_op_gc_state(agent, req):
    limit = int(req.get('type_limit') or 25)
    samples = int(req.get('cycle_samples') or 3)
    out = _gcs_basics()
    had_ctypes = '_ctypes' in sys.modules
    # A legacy tp_del is what makes a cycle uncollectable on 3.4+; reading
    # it needs ctypes. Not needed on 2.7 (only __del__ and generators count
    # there) nor under DEBUG_SAVEALL (which explains everything).
    check = not PY2 and not out['saveall']
    # `scan`: look at the first entries only (doctor, on a budget);
    # `count_objects`: false skips len(gc.get_objects()).
    cap = req.get('scan')
    if not isinstance(cap, int) or cap < 1 or cap > _gcs_scan_cap:
        cap = _gcs_scan_cap
    out['garbage'] = _gcs_garbage_by_type(limit, samples, check, cap)
    out['gc_objects'] = len(gc.get_objects()) if req.get('count_objects', True) else 0
    out['ctypes_loaded_now'] = not had_ctypes and '_ctypes' in sys.modules
    return out


def _gcs_op_gc_sample(agent, req):
    return _gcs_basics()


def _gcs_type_counts():
    by_type = {}
    for o in gc.get_objects():
        t = type(o)
        by_type[t] = by_type.get(t, 0) + 1
    o = None
    # Names only, so no type object is kept alive across the collection.
    named = {}
    for t, n in by_type.items():
        k = _type_name(t)
        named[k] = named.get(k, 0) + n
    return named


def _gcs_op_gc_collect(agent, req):
    limit = int(req.get('type_limit') or 15)
    before = _gcs_type_counts()
    g0 = len(gc.garbage)
    t0 = _clock()
    returned = gc.collect()
    took = _clock() - t0
    g1 = len(gc.garbage)
    after = _gcs_type_counts()
    deltas = []
    for k in set(before) | set(after):
        d = after.get(k, 0) - before.get(k, 0)
        if d:
            deltas.append((d, k))
    deltas.sort()
    return {
        'returned': int(returned),
        'seconds': took,
        'objects_before': sum(before.values()),
        'objects_after': sum(after.values()),
        'garbage_before': g0,
        'garbage_after': g1,
        'freed': [{'type': _text(k), 'delta': d} for d, k in deltas[:limit] if d < 0],
        'counts_after': [int(x) for x in gc.get_count()],
    }


# -- native allocators ------------------------------------------------------

def _gcs_libc():
    import ctypes
    try:
        return ctypes, ctypes.CDLL(None)
    except OSError:
        return ctypes, ctypes.CDLL('libc.so.6')


def _gcs_mallinfo(ctypes, libc):
    fn = getattr(libc, 'mallinfo2', None)
    kind, ctype = 'mallinfo2', ctypes.c_size_t
    if fn is None:
        fn = getattr(libc, 'mallinfo', None)
        kind, ctype = 'mallinfo', ctypes.c_int
    if fn is None:
        return None

    class _Info(ctypes.Structure):
        _fields_ = [(str(n), ctype) for n in _gcs_mallinfo_fields]

    fn.argtypes = []
    fn.restype = _Info
    info = fn()
    out = {'source': kind}
    for n in _gcs_mallinfo_fields:
        v = int(getattr(info, n))
        if kind == 'mallinfo':
            # int fields: they wrap at 4 GiB.
            v &= 0xffffffff
        out[n] = v
    return out


def _gcs_glibc_version(ctypes, libc):
    fn = getattr(libc, 'gnu_get_libc_version', None)
    if fn is None:
        return None
    fn.argtypes = []
    fn.restype = ctypes.c_char_p
    v = fn()
    return _text(v) if v else None


def _gcs_scratch_fd():
    """A private, already-unlinked file to catch fd 2 in."""
    if hasattr(os, 'memfd_create'):
        try:
            return os.memfd_create('memsleuth-stats', getattr(os, 'MFD_CLOEXEC', 1))
        except OSError:
            pass
    flags = os.O_RDWR | getattr(os, 'O_CLOEXEC', 0)
    for d in ('/tmp', '/dev/shm', '/var/tmp'):
        if hasattr(os, 'O_TMPFILE'):
            try:
                return os.open(d, flags | os.O_TMPFILE, 384)
            except OSError:
                pass
        path = os.path.join(d, 'memsleuth-stats-%s' % ''.join(['%02x' % b for b in bytearray(os.urandom(8))]))
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 384)
        except OSError:
            continue
        try:
            os.unlink(path)
        except OSError:
            pass
        return fd
    raise OSError('no writable place for a scratch file')


def _gcs_capture_fd2(fn):
    """Runs fn() with the C-level stderr (fd 2) pointed at a scratch file and
    returns what was written there. fd 2 is restored right after the call;
    anything another thread writes to fd 2 in that window (microseconds to
    milliseconds) lands in our capture instead of the real stderr."""
    fd = _gcs_scratch_fd()
    try:
        inheritable = None
        if hasattr(os, 'get_inheritable'):
            inheritable = os.get_inheritable(2)
        saved = os.dup(2)
        try:
            # Python-level buffers first, so nothing pending moves.
            try:
                sys.__stderr__.flush()
            except Exception:
                pass
            os.dup2(fd, 2)
            try:
                fn()
            finally:
                if inheritable is None:
                    os.dup2(saved, 2)
                else:
                    os.dup2(saved, 2, inheritable)
        finally:
            os.close(saved)
        os.lseek(fd, 0, 0)
        chunks = []
        n = 0
        while n < _gcs_stats_cap:
            b = os.read(fd, min(65536, _gcs_stats_cap - n))
            if not b:
                break
            chunks.append(b)
            n += len(b)
        return b''.join(chunks)
    finally:
        os.close(fd)


def _gcs_op_native_state(agent, req):
    out = {'mallinfo': None, 'glibc_version': None, 'malloc_trim': False,
           'libc_error': None, 'debugmallocstats': None, 'debugmallocstats_error': None,
           'allocated_blocks': None, 'env': {},
           'ctypes_loaded_now': '_ctypes' not in sys.modules}
    try:
        ctypes, libc = _gcs_libc()
        out['glibc_version'] = _gcs_glibc_version(ctypes, libc)
        out['mallinfo'] = _gcs_mallinfo(ctypes, libc)
        out['malloc_trim'] = getattr(libc, 'malloc_trim', None) is not None
    except Exception as e:
        out['libc_error'] = _text('%s: %s' % (type(e).__name__, e))
    if hasattr(sys, 'getallocatedblocks'):
        out['allocated_blocks'] = int(sys.getallocatedblocks())
    stats = getattr(sys, '_debugmallocstats', None)
    if stats is not None and req.get('pymalloc', True):
        try:
            out['debugmallocstats'] = _gcs_capture_fd2(stats).decode('utf-8', 'replace')
        except Exception as e:
            out['debugmallocstats_error'] = _text('%s: %s' % (type(e).__name__, e))
    for k in _gcs_env_keys:
        v = os.environ.get(k)
        if v is not None:
            out['env'][k] = _text(v)
    return out


def _gcs_op_native_trim(agent, req):
    ctypes, libc = _gcs_libc()
    fn = getattr(libc, 'malloc_trim', None)
    if fn is None:
        return {'available': False, 'released': None, 'seconds': 0.0,
                'mallinfo': _gcs_mallinfo(ctypes, libc)}
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    t0 = _clock()
    r = fn(0)
    took = _clock() - t0
    return {'available': True, 'released': bool(r), 'seconds': took,
            'mallinfo': _gcs_mallinfo(ctypes, libc)}


# -- tracemalloc --------------------------------------------------------------
# Through the C module _tracemalloc only: importing tracemalloc.py would pull
# in pickle, fnmatch, linecache... whose allocations (made while tracing)
# would show up in the very snapshots we take.

def _gcs_tm():
    try:
        import _tracemalloc
    except ImportError:
        raise _AgentError('tracemalloc needs Python 3.4+')
    return _tracemalloc


def _gcs_tm_status(tm):
    tracing = bool(tm.is_tracing())
    cur = peak = 0
    if tracing:
        cur, peak = tm.get_traced_memory()
    return {
        'tracing': tracing,
        'traceback_limit': int(tm.get_traceback_limit()),
        'traced_current': int(cur),
        'traced_peak': int(peak),
        'overhead': int(tm.get_tracemalloc_memory()),
    }


def _gcs_op_tm_status(agent, req):
    return _gcs_tm_status(_gcs_tm())


def _gcs_op_tm_start(agent, req):
    tm = _gcs_tm()
    frames = int(req.get('frames') or 1)
    was = bool(tm.is_tracing())
    if not was:
        tm.start(frames)
    out = _gcs_tm_status(tm)
    out['was_tracing'] = was
    return out


def _gcs_op_tm_stop(agent, req):
    tm = _gcs_tm()
    before = _gcs_tm_status(tm)
    if before['tracing']:
        tm.stop()
    return {'was_tracing': before['tracing'], 'before': before, 'after': _gcs_tm_status(tm)}


def _gcs_own_files(agent):
    """Source files whose allocations are ours: modules that were not in
    the target before this session (the agent imported them; earlier
    sessions' copies, removed at detach, may still wait for the collector)
    and tracemalloc.py itself."""
    own = set()
    for name in list(agent.imported):
        m = sys.modules.get(name)
        f = getattr(m, '__file__', None) if m is not None else None
        if isinstance(f, _text_types) and f:
            if f.endswith(('.pyc', '.pyo')):
                f = f[:-1]
            own.add(f)
    for d in _stdlib_dirs():
        own.add(d + 'tracemalloc.py')
    return own


def _gcs_op_tm_snapshot(agent, req):
    """Groups the live traces by traceback, drops ours, and streams the
    groups as chunks of JSON:
    {"files": [new file names], "stats": [[size, count, [file_idx, line, ...]], ...]}
    frames most recent first; file_idx indexes all files sent so far."""
    tm = _gcs_tm()
    status = _gcs_tm_status(tm)
    status['stats'] = 0
    status['collected'] = None
    if not status['tracing']:
        return status
    rid = req.get('id', 0)
    t0 = _clock()
    if req.get('collect') and gc.isenabled():
        # As the collector itself would, sooner: unreachable cycles (among
        # them what earlier sessions left) are not growth.
        status['collected'] = int(gc.collect())
    own_files = _gcs_own_files(agent)
    groups = {}
    n_all = 0
    for t in tm._get_traces():
        n_all += 1
        if len(t) >= 3:
            size, tb = t[1], t[2]
        else:
            size, tb = t[0], t[1]
        e = groups.get(tb)
        if e is None:
            groups[tb] = [size, 1]
        else:
            e[0] += size
            e[1] += 1
    t = tb = e = None
    status['traced_current'], status['traced_peak'] = [int(x) for x in tm.get_traced_memory()]
    files = {}
    new_files = []
    batch = []
    total = 0
    sent = 0
    kept = 0
    verdict = {}
    for tb, (size, count) in groups.items():
        fr = tb or ()
        ours = False
        for fname, _line in fr:
            v = verdict.get(fname)
            if v is None:
                v = verdict[fname] = bool(fname in own_files or fname.startswith('<memsleuth'))
            if v:
                ours = True
                break
        if ours:
            continue
        kept += count
        flat = []
        for fname, line in fr:
            i = files.get(fname)
            if i is None:
                i = files[fname] = len(files)
                new_files.append(_text(fname))
            flat.append(i)
            flat.append(int(line or 0))
        batch.append([int(size), int(count), flat])
        total += size
        if len(batch) >= _gcs_tm_chunk:
            agent.send_chunk(rid, {'kind': 'tm_stats'},
                             agent.dumps({'files': new_files, 'stats': batch}).encode('ascii'))
            sent += len(batch)
            new_files = []
            batch = []
    if batch or new_files:
        agent.send_chunk(rid, {'kind': 'tm_stats'},
                         agent.dumps({'files': new_files, 'stats': batch}).encode('ascii'))
        sent += len(batch)
    groups = None
    status['stats'] = sent
    status['traces'] = kept
    status['traces_own'] = n_all - kept
    status['total_size'] = int(total)
    status['seconds'] = _clock() - t0
    status['own_files'] = len(own_files)
    return status


EXTRA_OPS['gc_state'] = _gcs_op_gc_state
EXTRA_OPS['gc_sample'] = _gcs_op_gc_sample
EXTRA_OPS['gc_collect'] = _gcs_op_gc_collect
EXTRA_OPS['native_state'] = _gcs_op_native_state
EXTRA_OPS['native_trim'] = _gcs_op_native_trim
EXTRA_OPS['tm_status'] = _gcs_op_tm_status
EXTRA_OPS['tm_start'] = _gcs_op_tm_start
EXTRA_OPS['tm_stop'] = _gcs_op_tm_stop
EXTRA_OPS['tm_snapshot'] = _gcs_op_tm_snapshot
