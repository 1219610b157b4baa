# memsleuth agent plugin, part of `census` (sent with census_types.py and
# census.py): which objects are the agent's own, to leave out of a census.
#
# Appended to agent.py and run in the same namespace, so every global here is
# prefixed `_census_`. Stdlib only, one source for 2.7 and 3.6-3.15.
#
# Ours: the agent's globals and everything its functions, classes and
# instances hold (also the tuples of their code objects), the session
# namespace, the modules imported during the session and the classes
# defined in them (also leftovers of earlier sessions under those module
# names), the frames of the agent thread and what they hold, the census's
# own lists, and weak references to any of these (a class of ours is
# weakly referenced by its base's list of subclasses).

_CENSUS_OWN_NAMES = ('_memsleuth_agent', '__memsleuth__', '_memsleuth_bootstrap')
# Py_TPFLAGS_HEAPTYPE
_CENSUS_HEAPTYPE = 1 << 9


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


def _census_own_walk(c, objs):
    """Ids of the agent's own objects (into c.own), their types (into
    c.own_types), and the module names that are not the target's (c.names).
    `c` is the census; `objs` the list from gc.get_objects()."""
    G = globals()
    agent = c.agent
    own = c.own
    kinds = c.own_types
    never = set([id(objs), id(vars(_builtins)), id(sys.modules), id(sys.__dict__)])
    names = set(_CENSUS_OWN_NAMES)
    globs = set([id(G)])
    mods = set()
    module_type = type(sys)
    module_dict = module_type.__dict__['__dict__']
    # Modules that appeared since the bootstrap ran (the agent's and this
    # session's imports): removed at detach, so not the target's.
    before = (agent.params or {}).get('modules_before') or ()
    imported = set(sys.modules)
    imported.difference_update(before)
    imported.update(agent.imported)
    for name in imported:
        m = sys.modules.get(name)
        if m is not None and type(m) is module_type:
            names.add(name)
            mods.add(id(m))
            try:
                globs.add(id(module_dict.__get__(m)))
            except Exception:
                pass
    # Module names that are not the target's: modules, classes and functions
    # under these names are ours wherever they are found (also leftovers of
    # earlier sessions, e.g. the old module object the interpreter keeps for
    # a builtin module the agent imported).
    c.names = names
    stack = [G, agent, c, c.req, agent.ns]
    try:
        stack.append(agent.__dict__)
    except Exception:
        pass
    # The agent thread's frames: the frames themselves, the globals they run
    # in, and the locals of the agent's frames below the census (the
    # census's own locals are reachable from `c`; reading f_locals stores a
    # snapshot on the frame, and on 2.7, where every frame is in `objs`, a
    # snapshot holding `objs` would be a cycle keeping the whole list alive).
    skip = set([_census_op.__code__])
    for fn in (list(_census_Census.__dict__.values()) + list(_census_Registry.__dict__.values())
               + [_census_own_walk]):
        if hasattr(fn, '__code__'):
            skip.add(fn.__code__)
    f = sys._getframe(1)
    kinds.add(type(f))
    while f is not None:
        own.add(id(f))
        g = f.f_globals
        if g.get('__name__') in names:
            # Only frames running our code (the agent thread runs nothing
            # else, but be sure).
            globs.add(id(g))
            stack.append(g)
            if f.f_code not in skip:
                try:
                    loc = f.f_locals
                    # Up to 3.12 this is a dict kept on the frame (and
                    # refreshed in place): ours too.
                    if type(loc) is dict:
                        own.add(id(loc))
                        kinds.add(dict)
                    stack.extend(list(loc.values()))
                    loc = None
                except Exception:
                    pass
        f = f.f_back
    f = g = None
    T = type(_census_own_walk)
    B = type(len)
    F = type(sys._getframe())
    x = None
    # (The census's tools include operator.attrgetter & co.)
    containers = set([dict, list, tuple, set, frozenset, type(agent.run),
                      staticmethod, classmethod, property,
                      type(c.t['code_attrs']), type(c.t['itemgetter'](0)),
                      type(type.__dict__['__dict__']),       # getset_descriptor
                      type(type.__dict__['__basicsize__']),  # member_descriptor
                      type((lambda: x).__closure__[0])])     # cell
    code = type(_census_own_walk.__code__)
    while stack:
        o = stack.pop()
        i = id(o)
        if i in own or i in never:
            continue
        t = type(o)
        if t is module_type:
            if i not in mods:
                continue
            try:
                d = module_dict.__get__(o)
            except Exception:
                d = None
            own.add(i)
            kinds.add(t)
            if d is not None:
                stack.append(d)
            continue
        if t is code:
            # Not tracked itself; the tuples it holds may be (and hold
            # nested code).
            for name in ('co_consts', 'co_names', 'co_varnames', 'co_freevars', 'co_cellvars'):
                v = getattr(o, name, None)
                if type(v) is tuple:
                    stack.append(v)
            continue
        if t is F:
            continue
        if t in containers:
            if t is dict and i not in globs and o.get('__name__') in names and '__builtins__' in o:
                globs.add(i)
            own.add(i)
            kinds.add(t)
            stack.extend(gc.get_referents(o))
            continue
        if t is T:
            try:
                ours = id(o.__globals__) in globs
            except Exception:
                ours = False
            if ours:
                own.add(i)
                kinds.add(t)
                stack.extend(gc.get_referents(o))
                stack.append(o.__code__)
            continue
        if t is B:
            s = getattr(o, '__self__', None)
            if s is not None and id(s) in mods:
                own.add(i)
                kinds.add(t)
            continue
        if issubclass(t, type):
            mod, _ = _census_type_name(o)
            if mod in names:
                own.add(i)
                kinds.add(t)
                stack.extend(gc.get_referents(o))
            continue
        mod, _ = _census_type_name(t)
        if mod in names and mod is not None:
            # An instance of one of our classes.
            own.add(i)
            kinds.add(t)
            stack.extend(gc.get_referents(o))
    return own


def _census_stale(c, objs, modules):
    """Marks as ours (c.own) the modules named, and the classes defined,
    under a module name that is not the target's (c.names); their dicts go
    to c.drop_dicts (the tool drops them, in whichever chunk they were).
    `modules`: for each object, whether it is a module (else a class).
    Returns whether any was found."""
    names = c.names
    module_dict = type(sys).__dict__['__dict__']
    found = False
    for o, is_mod in zip(objs, modules):
        try:
            if is_mod:
                d = module_dict.__get__(o)
                name = d.get('__name__') if type(d) is dict else None
            else:
                name = _census_tget(o, '__module__')
                d = None
                if name in names and _census_tget(o, '__flags__', 0) & _CENSUS_HEAPTYPE:
                    rl = gc.get_referents(o)
                    d = rl[0] if rl else None
            if name in names:
                found = True
                c.own.add(id(o))
                c.own_types.add(type(o))
                if type(d) is dict:
                    c.drop_dicts.append(id(d))
        except Exception:
            pass
    return found
