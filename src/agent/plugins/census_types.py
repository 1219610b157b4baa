# memsleuth agent plugin, part of `census` (sent with census_own.py and
# census.py): the building blocks of a census. The C-speed tools, the
# reader of ids (a list's item array, through /proc/self/mem), the
# per-type flags, and the registry of the types met so far (their flags,
# how to size their objects, and what sys.getsizeof adds: `pre`).
#
# Appended to agent.py and run in the same namespace, so every global here is
# prefixed `_census_`. Stdlib only, one source for 2.7 and 3.6-3.15.

# Py_TPFLAGS_HAVE_GC
_CENSUS_HAVE_GC = 1 << 14
# Per-type flags.
_CENSUS_F_DICT = 1       # dict or a subclass: iterate its keys
_CENSUS_F_CODE = 2       # code object: visit its constants, names, bytecode
_CENSUS_F_PLAIN = 4      # instance of a plain class: find its __dict__
_CENSUS_F_MODULE = 8     # module: its __dict__ is "dict of module"
_CENSUS_F_TYPE = 16      # class: its dict is "dict of <metaclass>"
_CENSUS_F_OLDSTYLE = 32  # Python 2 old-style instance: counted under its class
_CENSUS_F_GC = 64        # may refer to other objects (gc.get_referents)
_CENSUS_F_FP = 128       # exact int or float: fingerprinted (growth)
_CENSUS_F_WEAKREF = 256  # weak reference: ours when its referent is
_CENSUS_F_FDICT = 512    # 3.15+ frozendict (no dict subclass): its keys too

# A builtin from 3.15 (looked up, not named: older interpreters lack it).
_census_frozendict = getattr(_builtins, 'frozendict', None)


class _census_Plain(object):
    """Reference layout of a plain class instance (dict + weakref slots)."""


class _census_Old:
    """On Python 2, an old-style class (for InstanceType and ClassType)."""


class _census_Unsafe(Exception):
    """A class whose metaclass hashes or compares classes its own way."""


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
    t['fdkeys'] = _census_frozendict.keys if _census_frozendict is not None else None
    t['compress'] = itertools.compress
    t['chain'] = itertools.chain.from_iterable
    t['repeat'] = itertools.repeat
    t['count'] = itertools.count
    t['is_'] = operator.is_
    t['not_'] = operator.not_
    t['le'] = operator.le
    t['eq'] = operator.eq
    t['call'] = getattr(operator, 'call', None)
    t['itemgetter'] = operator.itemgetter
    t['array'] = array.array
    import _weakref
    t['weakref'] = _weakref.ref
    w = 8 if sys.maxsize > 2 ** 32 else 4
    tc = None
    for c in 'LQI':  # ('Q' is 3.3+)
        try:
            if array.array(c).itemsize == w:
                tc = c
                break
        except ValueError:
            pass
    t['tc'] = tc
    t['stc'] = tc.lower()  # signed, same size: hash values
    t['w'] = w
    vi = sys.version_info
    names = ['co_consts', 'co_names', 'co_filename', 'co_name']
    if vi < (3, 11):
        names += ['co_code', 'co_varnames', 'co_freevars', 'co_cellvars']
        names.append('co_lnotab' if vi < (3, 10) else 'co_linetable')
    else:
        names += ['co_linetable', 'co_exceptiontable', 'co_qualname']
    t['code_attrs'] = operator.attrgetter(*names)
    return t


def _census_tobytes(a):
    return a.tostring() if PY2 else a.tobytes()


class _census_Ids(object):
    """Writes the ids of a list's items into a bytearray as native words:
    the list's own item array, read through /proc/self/mem (two reads: the
    list's header, then its items) when that works; else id() per item.
    Every read releases the GIL, and a busy thread that takes it keeps it
    for a switch interval (5 ms): so one list per frame."""

    def __init__(self, t):
        self.t = t
        self.fd = None
        self.mem = 0
        self.slow = 0
        # PyListObject ends with ob_size, ob_item, allocated (also in debug
        # and free-threaded builds).
        self.head = list.__basicsize__ - 3 * t['w']
        self.preadv = getattr(os, 'preadv', None)

    def open(self):
        try:
            self.fd = os.open('/proc/self/mem', os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
        except Exception:
            self.fd = None
            return
        probe = [None, self, 7, 'x', [], self.t]
        a = bytearray(self.t['w'] * len(probe))
        b = bytearray(len(a))
        try:
            self.read_items(a, 0, probe)
        except Exception:
            a = None
        self.id_items(b, 0, probe)
        if a != b:
            self.close()

    def close(self):
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except Exception:
                pass

    def read(self, addr, n):
        if PY2:
            os.lseek(self.fd, addr, 0)
            return os.read(self.fd, n)
        return os.pread(self.fd, n, addr)

    def read_items(self, buf, start, items):
        t = self.t
        w = t['w']
        n = len(items)
        h = t['array'](t['tc'])
        raw = self.read(id(items) + self.head, 3 * w)
        if PY2:
            h.fromstring(raw)
        else:
            h.frombytes(raw)
        if len(h) != 3 or h[0] != n or h[2] < n or not h[1]:
            raise ValueError('unexpected list layout')
        addr = h[1] - start
        end = start + n * w
        pos = start
        while pos < end:
            if self.preadv is not None:
                mv = memoryview(buf)
                try:
                    k = self.preadv(self.fd, [mv[pos:end]], addr + pos)
                finally:
                    mv.release()
            else:
                b = self.read(addr + pos, end - pos)
                k = len(b)
                buf[pos:pos + k] = b
            if k <= 0:
                raise ValueError('short read')
            pos += k
        return end

    def id_items(self, buf, start, items):
        t = self.t
        b = _census_tobytes(t['array'](t['tc'], t['map'](id, items)))
        buf[start:start + len(b)] = b
        return start + len(b)

    def put(self, buf, start, items):
        """Writes the ids of `items` (a list) into buf (already long enough)
        from `start`; returns where they end."""
        if not items:
            return start
        if self.fd is not None:
            try:
                end = self.read_items(buf, start, items)
                self.mem += 1
                return end
            except Exception:
                pass
        self.slow += 1
        return self.id_items(buf, start, items)

    def array(self, items):
        """The ids of items (a list), as an array."""
        t = self.t
        buf = bytearray(t['w'] * len(items))
        self.put(buf, 0, items)
        a = t['array'](t['tc'])
        if PY2:
            a.fromstring(bytes(buf))
        else:
            a.frombytes(buf)
        return a


def _census_mro_attr(t, name):
    """name as found along t's MRO, reading the classes' dicts directly."""
    for k in _census_tget(t, '__mro__') or ():
        d = _census_tget(k, '__dict__')
        if d is not None and name in d:
            return d[name], k
    return None, None


def _census_meta_ok(t, classobj_type):
    """Whether t hashes and compares by identity (its metaclass does not
    define __hash__ or __eq__)."""
    m = type(t)
    if m is type or m is classobj_type:
        return True
    for name in ('__hash__', '__eq__'):
        _, owner = _census_mro_attr(m, name)
        if owner not in (type, object, None):
            return False
    return True


def _census_type_flags(t, code_type, module_type, classobj_type, weakref_type):
    if classobj_type is not None and type(t) is classobj_type:
        return _CENSUS_F_OLDSTYLE | _CENSUS_F_GC
    f = 0
    try:
        flags = _census_tget(t, '__flags__', 0)
        if flags & _CENSUS_HAVE_GC:
            f |= _CENSUS_F_GC
        if issubclass(t, dict):
            f |= _CENSUS_F_DICT
        if _census_frozendict is not None and issubclass(t, _census_frozendict):
            f |= _CENSUS_F_FDICT
        if t is code_type:
            f |= _CENSUS_F_CODE
        if issubclass(t, module_type):
            f |= _CENSUS_F_MODULE
        if issubclass(t, type):
            f |= _CENSUS_F_TYPE
        if t in (int, float) or (PY2 and t is long):  # noqa: F821
            f |= _CENSUS_F_FP
        if issubclass(t, weakref_type):
            f |= _CENSUS_F_WEAKREF
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


class _census_Registry(object):
    """The types of one census, keyed by the type object, or by its id once
    a class turned up whose metaclass hashes or compares classes its own
    way (`safe`). Mixed into _census_Census."""

    def registry_init(self):
        self.code_type = type(_census_tools.__code__)
        self.module_type = type(sys)
        self.module_dict = self.module_type.__dict__['__dict__']
        self.method_descriptor = type(object.__dict__['__sizeof__'])
        self.dict_set = frozenset([dict])
        self.oldstyle_type = None
        self.classobj_type = None
        if PY2:
            self.oldstyle_type = type(_census_Old())
            self.classobj_type = type(_census_Old)
        self.safe = False
        self.known = set()
        self.sizer = {}    # key -> type(o).__sizeof__, or sys.getsizeof
        self.pre = {}      # key -> what getsizeof adds to it
        self.groups = {}   # flag -> set of keys
        for f in (_CENSUS_F_DICT, _CENSUS_F_CODE, _CENSUS_F_PLAIN, _CENSUS_F_MODULE,
                  _CENSUS_F_TYPE, _CENSUS_F_OLDSTYLE, _CENSUS_F_GC, _CENSUS_F_FP,
                  _CENSUS_F_WEAKREF, _CENSUS_F_FDICT):
            self.groups[f] = set()
        self.owner_keys = set()   # module, class or old-style instance
        self.stale_keys = set()   # module or class
        self.types = {}           # type id -> type (every type shipped)
        self.pre_by_tid = {}

    def go_safe(self):
        """From now on, key types by id (a class hashes its own way)."""
        self.safe = True
        rekey = lambda s: set([id(k) for k in s])  # noqa: E731
        self.known = rekey(self.known)
        self.sizer = dict([(id(k), v) for k, v in self.sizer.items()])
        self.pre = dict([(id(k), v) for k, v in self.pre.items()])
        for f in list(self.groups):
            self.groups[f] = rekey(self.groups[f])
        self.owner_keys = rekey(self.owner_keys)
        self.stale_keys = rekey(self.stale_keys)
        self.own_keys_add()

    def describe(self, objs):
        """(types, keys, set of keys) of objs, registering new types. Python
        2 old-style instances are counted under their class."""
        t = self.t
        tl = list(t['map'](type, objs))
        if PY2:
            ost = self.oldstyle_type
            if any(t['map'](t['is_'], tl, t['repeat'](ost))):
                for j, tp in enumerate(tl):
                    if tp is ost:
                        tl[j] = objs[j].__class__
        while True:
            keys = list(t['map'](id, tl)) if self.safe else tl
            try:
                present = set(keys)
                new = present.difference(self.known)
                if new:
                    self.register(new, keys, tl, objs)
                return tl, keys, present
            except (_census_Unsafe, TypeError):
                if self.safe:
                    raise
                self.go_safe()

    def register(self, new, keys, tl, objs):
        if len(new) > 2:
            where = dict(self.t['zip'](keys, self.t['count']()))
        else:
            where = dict([(k, keys.index(k)) for k in new])
        for k in new:
            i = where[k]
            tp = tl[i]
            if not self.safe and not _census_meta_ok(tp, self.classobj_type):
                raise _census_Unsafe()
            f = _census_type_flags(tp, self.code_type, self.module_type, self.classobj_type,
                                   self.t['weakref'])
            for g, members in self.groups.items():
                if f & g:
                    members.add(k)
            if f & (_CENSUS_F_MODULE | _CENSUS_F_TYPE | _CENSUS_F_OLDSTYLE):
                self.owner_keys.add(k)
            if f & (_CENSUS_F_MODULE | _CENSUS_F_TYPE):
                self.stale_keys.add(k)
            sizer = sys.getsizeof
            pre = 0
            if self.call is not None and not f & (_CENSUS_F_TYPE | _CENSUS_F_OLDSTYLE):
                fn, _ = _census_mro_attr(tp, '__sizeof__')
                if type(fn) is self.method_descriptor:
                    try:
                        o = objs[i]
                        p = sys.getsizeof(o) - fn(o)
                        if p >= 0:
                            sizer, pre = fn, p
                    except Exception:
                        pass
            self.sizer[k] = sizer
            self.pre[k] = pre
            self.types[id(tp)] = tp
            self.pre_by_tid[id(tp)] = pre
            self.known.add(k)

    def own_keys_add(self):
        """The keys of the types our objects have (after own_walk or
        _census_stale found more)."""
        key = id if self.safe else (lambda tp: tp)
        self.own_keys = set([key(tp) for tp in self.own_types])

    def mask(self, keys, present, members):
        """For each key, whether it is in members; None when none is."""
        if members.isdisjoint(present):
            return None
        return list(self.t['map'](members.__contains__, keys))

    def sizes(self, objs, keys):
        """type(o).__sizeof__(o), or sys.getsizeof(o) minus the type's pre.
        One failing (a broken __sizeof__) sends objs through a per-object
        path that counts it as 0."""
        t = self.t
        arr = t['array']
        try:
            if self.call is not None:
                return arr(t['tc'], t['map'](self.call, t['map'](self.sizer.__getitem__, keys),
                                             objs))
            return arr(t['tc'], t['map'](sys.getsizeof, objs))
        except Exception:
            pass
        out = arr(t['tc'])
        pre = self.pre
        for o, k in zip(objs, keys):
            try:
                n = max(0, sys.getsizeof(o) - pre.get(k, 0))
            except Exception:
                n = 0
                self.size_errors += 1
            out.append(n)
        return out

    # -- the census ------------------------------------------------------------
