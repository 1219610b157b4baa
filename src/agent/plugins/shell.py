# memsleuth agent plugin: shell -- what only the interactive shell asks for:
# completion and whether typed lines make a complete statement.
#
# Appended to agent.py and exec'd with it as one module: every global here
# starts with _sh_. One source for Python 2.7 and 3.6-3.15, stdlib only.
# Kept out of the agent's core, which is compiled in the target at every
# attach.
#
# Ops (each fn(agent, req) -> JSON-able result):
#   complete       names, keywords, or attributes of a plain dotted name
#                  that start with `text` (no calls, no subscripts)
#   compile_check  `source` is complete, incomplete (needs more lines), or an
#                  error

_sh_max_matches = 1000


def _sh_lookup_dotted(agent, parts):
    """Follows a plain dotted name (no calls, no subscripts)."""
    first = parts[0]
    main = _main_dict()
    if first in agent.ns:
        obj = agent.ns[first]
    elif _falls_through(first) and main is not None and first in main:
        # What the session reads through to (see _SessionNS).
        obj = main[first]
    elif hasattr(_builtins, first):
        obj = getattr(_builtins, first)
    else:
        raise NameError(first)
    for p in parts[1:]:
        obj = getattr(obj, p)
    return obj


def _sh_complete(agent, req):
    text = req.get('text') or u''
    if not isinstance(text, _text_types):
        raise TypeError('text must be a string')
    matches = set()
    if '.' in text:
        head, _, attr = text.rpartition('.')
        parts = head.split('.')
        if all([_is_identifier(p) for p in parts]):
            try:
                obj = _sh_lookup_dotted(agent, parts)
                names = dir(obj)
            except Exception:
                names = []
            for n in names:
                if not isinstance(n, _text_types) or not n.startswith(attr):
                    continue
                if n.startswith('_') and not attr.startswith('_'):
                    continue
                matches.add(head + '.' + n)
    else:
        import keyword
        main = _main_dict() or {}
        names = (list(agent.ns) + [n for n in list(main) if _falls_through(n)]
                 + dir(_builtins) + list(keyword.kwlist))
        for n in names:
            if not isinstance(n, _text_types) or not n.startswith(text):
                continue
            if n.startswith('_') and not text.startswith('_'):
                continue
            matches.add(n)
    out = sorted(matches)[:_sh_max_matches]
    return {'matches': [_text(m) for m in out]}


def _sh_compile_check(agent, req):
    source = req.get('source')
    if not isinstance(source, _text_types):
        raise TypeError('source must be a string')
    import codeop
    try:
        code = codeop.compile_command(source, USER_FILE, 'single')
    except (SyntaxError, OverflowError, ValueError):
        return {'status': 'error', 'error': agent.error_info(sys.exc_info())}
    return {'status': 'complete' if code is not None else 'incomplete', 'error': None}


EXTRA_OPS['complete'] = _sh_complete
EXTRA_OPS['compile_check'] = _sh_compile_check
