"""memsleuth agent: runs on its own thread inside the target process.

Compiled and run by the bootstrap (where the injector got in) in a fresh
dict named `_memsleuth_agent` (never in sys.modules); main(sock, params) runs
on a thread of its own. Stdlib only, one source for Python 2.7 and 3.6-3.15.
It serves requests from the tool over the socket (blocking in recv, which
releases the GIL) and leaves nothing behind when the session ends, however it
ends.

Frames: 4-byte big-endian length, a JSON header line, an optional payload.
The tool's first frame is `load` (the session token and options): nothing
changes in the target before its token checks out. Then the agent says
`hello`, unsolicited. Requests carry an `id`; responses echo it with `ok`,
`gil_s` (wall time spent in Python for this request) and `result` or `error`
({type, message, traceback}). Ops: exec, eval, ping, detach, load_plugin,
and those the plugins register (the shell's complete and compile_check in
plugins/shell.py, loaded on first use: less to compile at every attach).
The tool may send requests before the hello arrives (they are read in
order).
"""

import sys
import time

_clock = getattr(time, 'perf_counter', time.time)
_thread_time = getattr(time, 'thread_time', None)


def _cpu_clock():
    """This thread's CPU time in seconds (3.7+, else from the kernel's
    per-thread schedstat), or None. The GIL cost of a request is better
    told by it than by wall time, which also counts socket writes (GIL
    released) and the time a busy machine keeps us off the CPU."""
    if _thread_time is not None:
        return _thread_time()
    try:
        f = open('/proc/thread-self/schedstat')
        try:
            return int(f.read().split()[0]) / 1e9
        finally:
            f.close()
    except Exception:
        return None

import gc  # noqa: E402
import os  # noqa: E402

try:
    import _thread as _thread_mod
except ImportError:
    import thread as _thread_mod

AGENT_VERSION = '1'
AGENT_FILE = '<memsleuth-agent>'
USER_FILE = '<memsleuth>'
MAX_FRAME_IN = 64 << 20
DEFAULT_REPR_CAP = 1 << 20
DEFAULT_OUTPUT_CAP = 16 << 20
MSG_NOSIGNAL = 0x4000  # Linux
# How long the restored proxies are kept alive before being let go, where
# print() and friends hold sys.stdout as a borrowed reference: up to 3.12.9
# and 3.13.2 (cpython#130163, fixed in 3.12.10, 3.13.3 and 3.14.0a6, which
# hold a strong reference while they use it). See _retire.
_VI = tuple(sys.version_info)
RETIRE_GRACE_S = 0.0 if (_VI >= (3, 14, 0, 'alpha', 6) or (3, 13, 3) <= _VI[:3] < (3, 14)
                         or (3, 12, 10) <= _VI[:3] < (3, 13)) else 0.5
# How long a new agent waits for an earlier one to finish retiring.
RETIRE_WAIT_S = 2.0
# Set once this agent's session is over (everything restored, socket
# closed): what is left of it is its thread, retiring and ending. Read
# through this thread's frames by the next bootstrap and agent.
_ENDED = False

PY2 = sys.version_info[0] == 2
if PY2:
    import __builtin__ as _builtins
    _text_types = (unicode, str)  # noqa: F821 (2.7 only)
else:
    import builtins as _builtins
    _text_types = (str,)

_get_ident = _thread_mod.get_ident


def _text(s):
    """Any written object or str as JSON-safe text (valid UTF-8)."""
    if PY2:
        if isinstance(s, unicode):  # noqa: F821
            return s
        if isinstance(s, str):
            return s.decode('utf-8', 'replace')
        try:
            return unicode(s)  # noqa: F821
        except Exception:
            return unicode(repr(s))  # noqa: F821
    if isinstance(s, str):
        try:
            s.encode('utf-8')
            return s
        except UnicodeEncodeError:
            # Lone surrogates: JSON parsers in Rust refuse them.
            return s.encode('utf-8', 'backslashreplace').decode('utf-8')
    if isinstance(s, (bytes, bytearray)):
        return bytes(s).decode('utf-8', 'replace')
    try:
        return _text(str(s))
    except Exception:
        return _text(repr(s))


def _type_name(t):
    mod = getattr(t, '__module__', None)
    name = getattr(t, '__name__', None) or '?'
    if mod in (None, '__builtin__', 'builtins', 'exceptions'):
        return name
    return '%s.%s' % (mod, name)


def types_count(limit=30):
    """[(type name, live GC-tracked instances)] most common first."""
    counts = {}
    for o in gc.get_objects():
        t = type(o)
        counts[t] = counts.get(t, 0) + 1
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    if limit:
        items = items[:limit]
    return [(_type_name(t), n) for t, n in items]


class _Capture(object):
    """Output of one request on one thread."""

    def __init__(self, cap):
        self.parts = {'stdout': [], 'stderr': []}
        self.values = []
        self.size = 0
        self.cap = cap
        self.truncated = False

    def add(self, which, s):
        try:
            n = len(s)
        except Exception:
            s = repr(s)
            n = len(s)
        room = self.cap - self.size
        if n > room:
            self.truncated = True
            if room <= 0:
                return
            s = s[:room]
            n = room
        self.parts[which].append(s)
        self.size += n

    def text(self, which):
        return u''.join([_text(p) for p in self.parts[which]])


class _Stream(object):
    """Stands in for sys.stdout/sys.stderr: writes from a thread that is
    capturing go to its buffer, everything else goes to the original object,
    whose attributes (encoding, fileno, isatty, buffer, ...) show through.

    Needs nothing from the agent's globals at call time, so it keeps working
    if it has to stay installed (someone wrapped it) after the agent ended."""

    _memsleuth_proxy = True

    def __init__(self, orig, which, captures):
        self.__dict__['_ms_orig'] = orig
        self.__dict__['_ms_which'] = which
        self.__dict__['_ms_captures'] = captures

    def write(self, s, _ident=_get_ident):
        cap = self._ms_captures.get(_ident())
        if cap is None:
            return self._ms_orig.write(s)
        cap.add(self._ms_which, s)
        try:
            return len(s)
        except Exception:
            return None

    def writelines(self, lines, _ident=_get_ident):
        cap = self._ms_captures.get(_ident())
        if cap is None:
            return self._ms_orig.writelines(lines)
        for line in lines:
            cap.add(self._ms_which, line)

    def flush(self, _ident=_get_ident):
        if self._ms_captures.get(_ident()) is None:
            return self._ms_orig.flush()

    def __getattr__(self, name):
        return getattr(self.__dict__['_ms_orig'], name)


class _DisplayHook(object):
    """Stands in for sys.displayhook: in a capturing thread, records the repr
    of an expression statement's value (what the REPL would print); in any
    other thread, calls the original."""

    _memsleuth_proxy = True

    def __init__(self, orig, captures, ns, repr_cap):
        self.orig = orig
        self.captures = captures
        self.ns = ns
        self.repr_cap = repr_cap

    def __call__(self, value, _ident=_get_ident):
        cap = self.captures.get(_ident())
        if cap is None:
            return self.orig(value)
        if value is None:
            return
        self.ns['_'] = value
        r = repr(value)
        if len(r) > self.repr_cap:
            r = r[:self.repr_cap]
            cap.truncated = True
        cap.values.append(r)


def _is_identifier(s):
    if not s:
        return False
    if not PY2:
        return s.isidentifier()
    if not (s[0].isalpha() or s[0] == '_'):
        return False
    for c in s:
        if not (c.isalnum() or c == '_'):
            return False
    return True


def _no_constant(name):
    raise ValueError('%s is not allowed' % (name,))


def _json_default(o):
    raise TypeError('%r is not JSON serializable' % (o,))


def _json_codec():
    """(loads, dumps) for compact ASCII JSON. On _json's C scanner and
    encoder, which the json package wraps: importing json itself imports re
    and compiles its patterns, tens of ms in a target that has neither yet
    (and that in the injected call, on the thread we interrupted). Falls
    back to the json package where _json is missing or different."""
    try:
        import _json

        class _Context(object):
            pass

        ctx = _Context()
        ctx.strict = True
        ctx.object_hook = None
        ctx.object_pairs_hook = None
        ctx.array_hook = None  # 3.15
        ctx.parse_float = float
        ctx.parse_int = int
        ctx.parse_constant = _no_constant
        ctx.memo = {}
        ctx.encoding = 'utf-8'  # 2.7
        scan = _json.make_scanner(ctx)
        make_encoder = getattr(_json, 'c_make_encoder', None) or _json.make_encoder
        escape = _json.encode_basestring_ascii

        def loads(text):
            try:
                obj, end = scan(text, 0)
            except StopIteration:
                raise ValueError('not JSON')
            finally:
                ctx.memo.clear()
            if text[end:].strip():
                raise ValueError('extra data after JSON')
            return obj

        def dumps(obj):
            # A new encoder each time: its circular-reference marks are only
            # cleaned up on success.
            enc = make_encoder({}, _json_default, escape, None, ':', ',', False, False, False)
            return ''.join(enc(obj, 0))

        probe = {'a': [1, 2.5, None, True, u'\n']}
        if loads(dumps(probe)) != probe:
            raise ValueError('_json differs')
        return loads, dumps
    except Exception:
        import json

        def dumps(obj):
            return json.dumps(obj, separators=(',', ':'), ensure_ascii=True, allow_nan=False)

        return json.loads, dumps


_json_loads, _json_dumps = _json_codec()


def _native_tid():
    """This thread's kernel thread id as the target sees it (its own pid
    namespace), or None."""
    f = getattr(_thread_mod, 'get_native_id', None)
    try:
        if f is not None:
            return f()
        # 2.7-3.7: /proc/thread-self -> "PID/task/TID".
        return int(os.readlink('/proc/thread-self').rsplit('/', 1)[1])
    except Exception:
        return None


def _set_socket_timeouts(sock, seconds):
    """SO_RCVTIMEO and SO_SNDTIMEO (0: none). Unlike sock.settimeout, this
    keeps the socket in blocking mode and does not release the GIL."""
    import _socket
    size = 8 if sys.maxsize > 2 ** 32 else 4
    tv = bytearray(2 * size)
    v = int(seconds)
    for i in range(size):
        tv[i if sys.byteorder == 'little' else size - 1 - i] = (v >> (8 * i)) & 255
    for opt, default in (('SO_RCVTIMEO', 20), ('SO_SNDTIMEO', 21)):
        sock.setsockopt(_socket.SOL_SOCKET, getattr(_socket, opt, default), bytes(tv))


def _stdlib_dirs():
    dirs = []
    for d in (getattr(sys, '_stdlib_dir', None), os.path.dirname(getattr(os, '__file__', '') or '')):
        if d and d + os.sep not in dirs:
            dirs.append(d + os.sep)
    return dirs


class _AgentError(Exception):
    pass


class _UserError(Exception):
    """Carries the error_info of an exception raised by the user's code
    in an op that fails as a whole (eval), with our frames already cut."""
    pass


_NOT_FOUND = object()


def _main_dict():
    m = sys.modules.get('__main__')
    d = getattr(m, '__dict__', None)
    return d if isinstance(d, dict) else None


def _falls_through(name):
    """Names read from __main__ when the session lacks them: all but the
    dunders (__builtins__, __name__, __annotations__, ... are the
    session's own: a session's annotations must not land in __main__'s)."""
    return isinstance(name, _text_types) and not (name[:2] == '__' and name[-2:] == '__')


class _SessionNS(dict):
    """The globals of exec, eval and the shell. What the session assigns
    stays here; a name it lacks is read from the target's __main__, live,
    at each read (3.x runs __missing__ for LOAD_NAME and for LOAD_GLOBAL
    when globals is not an exact dict; 2.7's LOAD_GLOBAL does not, see
    _Agent.mirror_main). Nothing is ever written to __main__.

    Builtins are answered here too, after __main__ (the order Python would
    use): at module level LOAD_NAME asks this dict twice, as locals and as
    globals, so a builtin in a loop would otherwise cost two calls."""

    __slots__ = ()

    def __missing__(self, name):
        if _falls_through(name):
            d = _main_dict()
            if d is not None:
                v = d.get(name, _NOT_FOUND)
                if v is not _NOT_FOUND:
                    return v
        v = _builtins.__dict__.get(name, _NOT_FOUND)
        if v is not _NOT_FOUND:
            return v
        raise KeyError(name)


class _Agent(object):

    def __init__(self, sock, params):
        self.sock = sock
        self.params = params
        # Bytes received and not yet parsed into frames (the bootstrap may
        # have read the first ones already).
        self.rbuf = params.get('rbuf') or b''
        # Bytes to send before the next frame (a hello held back to go out
        # with the first answer).
        self.wbuf = b''
        # A lock the bootstrap's thread waits on (without the GIL, briefly)
        # while we answer the first requests: see open_gate.
        self.gate = params.get('gate')
        # time.monotonic() stamps for a tracing tool (None: not taken).
        mono = getattr(time, 'monotonic', None)
        self.mono = mono
        self.marks = params.get('marks') if mono is not None else None
        self.trace = False
        self.mark('agent thread')
        self.ident = _get_ident()
        before = params.get('modules_before')
        if not before:
            before = set(sys.modules)
        self.threading_before = 'threading' in before
        # Modules that appeared while this thread was working (bootstrap,
        # startup, each request): the candidates for removal at the end.
        self.imported = set(sys.modules) - set(before)
        self.captures = {}
        self.repr_cap = DEFAULT_REPR_CAP
        self.output_cap = DEFAULT_OUTPUT_CAP
        self.ns = {}
        self.out_proxy = None
        self.err_proxy = None
        self.hook_proxy = None
        self.orig_out = None
        self.orig_err = None
        self.orig_hook = None
        self.linecache_before = None
        self.restored = False

    # -- wire -------------------------------------------------------------

    def open_gate(self):
        """Lets the bootstrap's thread go on: before anything that may block
        or release the GIL (it would wait for us in vain, or take the GIL
        back from us), and at the end."""
        gate = self.gate
        self.gate = None
        if gate is not None:
            try:
                gate.release()
            except Exception:
                pass

    def _recv(self, n):
        self.open_gate()
        while True:
            try:
                return self.sock.recv(n)
            except Exception as e:
                if getattr(e, 'errno', None) == 4:  # EINTR on 2.7
                    continue
                raise

    def has_frame(self):
        """Whether a whole frame is buffered already."""
        if len(self.rbuf) < 4:
            return False
        b = bytearray(self.rbuf[:4])
        return len(self.rbuf) >= 4 + ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3])

    def detach_is_next(self):
        """Whether the next frame, buffered whole already, is a detach."""
        if not self.has_frame():
            return False
        nl = self.rbuf.find(b'\n', 4)
        if nl < 0 or b'"detach"' not in self.rbuf[4:nl]:
            return False
        try:
            return _json_loads(self.rbuf[4:nl].decode('utf-8')).get('op') == 'detach'
        except Exception:
            return False

    def recv_frame(self):
        """The next frame (header dict, payload bytes), None at EOF. Reads
        as much as is there in one go: frames the tool sent together (the
        load frame and a first request) cost one recv, and so one release
        of the GIL."""
        buf = self.rbuf
        while len(buf) < 4:
            c = self._recv(1 << 16)
            if not c:
                return None
            buf += c
        b = bytearray(buf[:4])
        n = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]
        if n > MAX_FRAME_IN:
            raise _AgentError('frame of %d bytes is over the limit' % n)
        end = 4 + n
        if len(buf) < end:
            parts = [buf]
            have = len(buf)
            while have < end:
                c = self._recv(min(max(end - have, 1 << 16), 1 << 20))
                if not c:
                    return None
                parts.append(c)
                have += len(c)
            buf = b''.join(parts)
        body = buf[4:end]
        self.rbuf = buf[end:]
        nl = body.find(b'\n')
        if nl < 0:
            raise _AgentError('frame without a header line')
        header = _json_loads(body[:nl].decode('utf-8'))
        if not isinstance(header, dict):
            raise _AgentError('frame header is not an object')
        return header, body[nl + 1:]

    def send_raw(self, header_json, payload=b'', hold=False):
        """Sends a frame, after any held back; with `hold`, only queues it
        to go with the next one."""
        if not isinstance(header_json, bytes):
            header_json = header_json.encode('ascii')
        n = len(header_json) + 1 + len(payload)
        prefix = bytes(bytearray([(n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255]))
        data = self.wbuf + prefix + header_json + b'\n' + payload
        if hold:
            self.wbuf = data
            return
        self.wbuf = b''
        self.open_gate()
        # MSG_NOSIGNAL: an embedded interpreter may not ignore SIGPIPE, and a
        # tool that died must not take the target down with it.
        self.sock.sendall(data, MSG_NOSIGNAL)

    @staticmethod
    def dumps(obj):
        return _json_dumps(obj)

    # -- lifecycle -----------------------------------------------------------

    def mark(self, label):
        if self.marks is not None:
            self.marks.append([label, self.mono()])

    def take_marks(self):
        """The stamps so far as JSON (`,"marks":[...]`) when tracing, else ''."""
        if not self.trace or not self.marks:
            return ''
        m = self.marks
        self.marks = []
        return ',"marks":' + self.dumps(m)

    def handshake(self):
        """Reads the tool's load frame and checks its token (in constant
        time). Returns the load header, or None after refusing."""
        frame = self.recv_frame()
        if frame is None:
            return None
        load = frame[0]
        want = bytearray(self.params.get('token') or b'')
        got = load.get('token') if load.get('op') == 'load' else None
        # By code point (str.encode would import encodings.ascii on 2.7).
        try:
            got = bytearray([ord(c) for c in got if ord(c) < 128]) if isinstance(got, _text_types) else bytearray()
        except Exception:
            got = bytearray()
        diff = len(got) ^ len(want)
        for a, b in zip(got, want):
            diff |= a ^ b
        if diff != 0 or not want:
            self.send_raw('{"op":"refused","ok":false,"reason":"token"}')
            return None
        return load

    def setup(self, load):
        opts = load.get('options') or {}
        self.trace = bool(opts.get('trace'))
        self.repr_cap = int(opts.get('repr_cap', DEFAULT_REPR_CAP))
        self.output_cap = int(opts.get('output_cap', DEFAULT_OUTPUT_CAP))
        self.ns = _SessionNS({
            '__name__': '__memsleuth__',
            '__builtins__': _builtins,
            'gc': gc,
            'sys': sys,
            'os': os,
            'types_count': types_count,
        })
        lc = sys.modules.get('linecache')
        if lc is not None:
            self.linecache_before = set(getattr(lc, 'cache', {}))
        # Per-thread output capture. Not installed over None (a daemon with
        # closed stdio): `print` must keep discarding silently there. (A
        # second agent is refused by the bootstrap, which looks for our
        # frames; a proxy left inside someone's wrapper is harmless.)
        self.orig_out = getattr(sys, 'stdout', None)
        self.orig_err = getattr(sys, 'stderr', None)
        self.orig_hook = getattr(sys, 'displayhook', None)
        if self.orig_out is not None:
            self.out_proxy = _Stream(self.orig_out, 'stdout', self.captures)
            sys.stdout = self.out_proxy
        if self.orig_err is not None:
            self.err_proxy = _Stream(self.orig_err, 'stderr', self.captures)
            sys.stderr = self.err_proxy
        if self.orig_hook is not None:
            self.hook_proxy = _DisplayHook(self.orig_hook, self.captures, self.ns, self.repr_cap)
            sys.displayhook = self.hook_proxy

    def hello(self):
        vi = sys.version_info
        impl = getattr(sys, 'implementation', None)
        return {
            'agent_version': AGENT_VERSION,
            'python_version': _text(sys.version),
            'version_info': {
                'major': vi[0], 'minor': vi[1], 'micro': vi[2],
                'releaselevel': _text(vi[3]), 'serial': vi[4],
            },
            'implementation': _text(impl.name) if impl is not None else 'cpython',
            'executable': _text(sys.executable or ''),
            'pid': os.getpid(),
            'thread_count': len(sys._current_frames()),
            'gc_enabled': gc.isenabled(),
            'threading_imported': self.threading_before,
            'stdout_proxy': self.out_proxy is not None,
            'stderr_proxy': self.err_proxy is not None,
            'agent_thread': self.ident,
            'agent_tid': _native_tid(),
        }

    def wait_retired(self):
        """Waits (GIL released) until the threads of earlier agents whose
        sessions are over have ended (see _retire), so that this session
        starts from a target with nothing of ours in it (a census must not
        count an earlier agent's objects)."""
        idents = _ended_agents(self.ident)
        deadline = _clock() + RETIRE_WAIT_S
        while idents and _clock() < deadline:
            self.open_gate()
            time.sleep(0.005)
            idents = idents.intersection(sys._current_frames())

    def run(self):
        try:
            self.wait_retired()
            mods = set(sys.modules)
            load = self.handshake()
            if load is None:
                return
            # The bootstrap bounded the wait for the load frame (SO_RCVTIMEO,
            # SO_SNDTIMEO: unlike settimeout, no GIL release); the session
            # itself waits as long as the tool wants.
            _set_socket_timeouts(self.sock, 0)
            t0 = _clock()
            try:
                self.setup(load)
                body = self.dumps(self.hello())
                ok = True
            except BaseException:
                body = self.dumps(self.error_info(sys.exc_info(), user=False))
                ok = False
            self.note_imports(mods)
            # The bootstrap's compile and run of this source count too.
            load_s = self.params.get('load_s') or 0.0
            gil = repr(float(_clock() - t0 + load_s))
            if ok:
                self.mark('hello')
                marks = self.take_marks()
                if marks:
                    body = body[:-1] + marks + '}'
                hello = '{"op":"hello","id":0,"ok":true,"gil_s":' + gil + ',"result":' + body + '}'
                if self.has_frame():
                    # The tool sent its first request along with the load
                    # frame: answer both in one write. Each write releases the
                    # GIL, and taking it back from a thread that runs bytecode
                    # costs a switch interval (5 ms) or more.
                    self.send_raw(hello, hold=True)
                else:
                    self.send_raw(hello)
                self.serve()
            else:
                self.send_raw('{"op":"hello","id":0,"ok":false,"gil_s":' + gil + ',"error":' + body + '}')
        except BaseException:
            pass
        finally:
            self.cleanup()

    def note_imports(self, before):
        """Adds the modules that appeared since `before` to `imported`."""
        new = set(sys.modules)
        new.difference_update(before)
        self.imported.update(new)

    def send_chunk(self, rid, meta, payload):
        """Streams part of a large answer before the final response: a frame
        {"id": rid, "chunk": true, **meta} carrying `payload` (bytes). The
        socket write releases the GIL, so chunking also bounds the longest
        GIL hold of a big op."""
        head = dict(meta)
        head['id'] = rid
        head['chunk'] = True
        self.send_raw(self.dumps(head), payload)

    def serve(self):
        ops = {
            'exec': self.op_exec,
            'eval': self.op_eval,
            'ping': self.op_ping,
            'detach': self.op_detach,
            'load_plugin': self.op_load_plugin,
        }
        # Ops from the plugin sources appended after this file: each is
        # fn(agent, request) -> result, and may call agent.send_chunk.
        for name, fn in EXTRA_OPS.items():
            ops[name] = (lambda req, fn=fn: fn(self, req))
        while True:
            frame = self.recv_frame()
            if frame is None:
                return
            t0 = _clock()
            c0 = _cpu_clock()
            mods = set(sys.modules)
            header, payload = frame
            self.mark('request %s in' % (header.get('op'),))
            rid = header.get('id', 0)
            op = header.get('op')
            handler = ops.get(op)
            if handler is None and op in EXTRA_OPS:
                # Registered by a plugin loaded during this session.
                handler = (lambda req, fn=EXTRA_OPS[op]: fn(self, req))
            try:
                if handler is None:
                    raise _AgentError('unknown op %r' % (op,))
                tail = ',"result":' + self.dumps(handler(header)) + '}'
                ok = 'true'
            except _UserError:
                tail = ',"error":' + self.dumps(sys.exc_info()[1].args[0]) + '}'
                ok = 'false'
            except BaseException:
                tail = ',"error":' + self.dumps(self.error_info(sys.exc_info(), user=False)) + '}'
                ok = 'false'
            self.note_imports(mods)
            if PY2:
                sys.exc_clear()
            self.mark('answer')
            c1 = _cpu_clock()
            cpu = ''
            if c0 is not None and c1 is not None:
                cpu = ',"gil_cpu_s":' + repr(float(c1 - c0))
            head = '{"id":' + self.dumps(rid) + ',"ok":' + ok + self.take_marks() + cpu + ',"gil_s":'
            answer = head + repr(float(_clock() - t0)) + tail
            if op == 'detach':
                # Restored before the answer goes: the tool may take it (and
                # the hang-up right after) as "the target is back". The
                # answer is made first: on 2.7 a module dropped from
                # sys.modules has its globals set to None.
                self.restore()
                self.send_raw(answer)
                return
            # An answer followed by a detach the tool sent along with its
            # request goes out with the detach's answer: one write (and one
            # release of the GIL) for both.
            self.send_raw(answer, hold=self.detach_is_next())

    def cleanup(self):
        """Undo everything, hang up, and retire. Runs once, whatever ended
        the session."""
        if self.sock is None:
            return
        self.open_gate()
        self.restore()
        proxies = [p for p in (self.out_proxy, self.err_proxy, self.hook_proxy) if p is not None]
        self.out_proxy = self.err_proxy = self.hook_proxy = None
        # The tool takes the hang-up as "cleanup finished": everything is
        # restored, and the socket is the last of our resources to go.
        try:
            self.sock.close()
        except BaseException:
            pass
        self.sock = None
        global _ENDED
        _ENDED = True
        # What is left is this thread, asleep, and the proxies it holds.
        try:
            _retire(proxies)
        except BaseException:
            pass

    def restore(self):
        """Puts the target back as it was (but for the retiring proxies).
        Each step on its own: one failing must not stop the rest. Runs
        once."""
        if self.restored:
            return
        self.restored = True
        try:
            if self.out_proxy is not None and sys.stdout is self.out_proxy:
                sys.stdout = self.orig_out
        except BaseException:
            pass
        try:
            if self.err_proxy is not None and sys.stderr is self.err_proxy:
                sys.stderr = self.orig_err
        except BaseException:
            pass
        try:
            if self.hook_proxy is not None and sys.displayhook is self.hook_proxy:
                sys.displayhook = self.orig_hook
        except BaseException:
            pass
        try:
            self.captures.clear()
        except BaseException:
            pass
        # Code run here may have called threading.current_thread(), which
        # registers a _DummyThread for this thread that is never removed.
        try:
            th = sys.modules.get('threading')
            if th is not None:
                t = th._active.get(self.ident)
                if t is not None and type(t).__name__ == '_DummyThread':
                    th._active.pop(self.ident, None)
        except BaseException:
            pass
        try:
            lc = sys.modules.get('linecache')
            if lc is not None and self.linecache_before is not None:
                for k in list(lc.cache):
                    if k not in self.linecache_before:
                        lc.cache.pop(k, None)
        except BaseException:
            pass
        try:
            self.remove_modules()
        except BaseException:
            pass
        try:
            self.ns.clear()
        except BaseException:
            pass
        self.params = None
        self.orig_out = self.orig_err = self.orig_hook = None

    def classify_modules(self):
        """(to remove, to keep) among the modules imported while we ran.
        Stdlib and builtin ones go. Third-party ones a user imported in the
        session stay: some extension modules (numpy) cannot be initialised
        twice, so removing them could break the app's own later import."""
        stdlib = _stdlib_dirs()
        doomed = []
        kept = []
        for name in self.imported:
            mod = sys.modules.get(name)
            f = getattr(mod, '__file__', None) if mod is not None else None
            if f and ('site-packages' in f or 'dist-packages' in f
                      or not [d for d in stdlib if f.startswith(d)]):
                kept.append(name)
            else:
                doomed.append(name)
        return doomed, sorted(kept)

    def remove_modules(self):
        doomed, _ = self.classify_modules()
        # Children first, then unhook each from its parent package.
        doomed.sort(key=lambda n: -n.count('.'))
        for name in doomed:
            mod = sys.modules.pop(name, None)
            parent, _, child = name.rpartition('.')
            if parent and mod is not None:
                p = sys.modules.get(parent)
                if p is not None and getattr(p, child, None) is mod:
                    try:
                        delattr(p, child)
                    except BaseException:
                        pass

    # -- errors and capture --------------------------------------------------

    def error_info(self, exc_info, user=True):
        etype, value, tb = exc_info
        try:
            # Drop the agent's own frames from the top of a user traceback.
            while user and tb is not None and tb.tb_frame.f_code.co_filename == AGENT_FILE:
                tb = tb.tb_next
            try:
                import traceback
                text = u''.join([_text(x) for x in traceback.format_exception(etype, value, tb)])
            except BaseException:
                text = u''
            try:
                msg = _text(value)
            except BaseException:
                msg = u''
            return {'type': _text(_type_name(etype)), 'message': msg, 'traceback': text}
        finally:
            etype = value = tb = exc_info = None

    def mirror_main(self):
        """2.7 only: copies __main__'s names the session lacks into its
        namespace for the length of one request, because 2.7's LOAD_GLOBAL
        reads globals with PyDict_GetItem (no __missing__): functions
        defined in the session would not see them otherwise. So on 2.7 the
        session reads __main__ as it was when the request started. Returns
        {name: value} for unmirror_main."""
        if not PY2:
            return None
        d = _main_dict()
        if d is None:
            return None
        ns = self.ns
        mirrored = {}
        for k, v in list(d.items()):
            if _falls_through(k) and k not in ns:
                mirrored[k] = v
        ns.update(mirrored)
        return mirrored

    def unmirror_main(self, mirrored):
        """Takes back the copies the request left as they were; a name the
        session rebound is the session's own now."""
        if not mirrored:
            return
        ns = self.ns
        for k, v in mirrored.items():
            if ns.get(k, _NOT_FOUND) is v:
                del ns[k]

    def begin_capture(self):
        cap = _Capture(self.output_cap)
        self.captures[self.ident] = cap
        return cap

    def end_capture(self):
        self.captures.pop(self.ident, None)

    # -- ops ----------------------------------------------------------------

    def op_exec(self, req):
        code = req.get('code')
        mode = req.get('mode') or 'exec'
        if mode not in ('exec', 'single'):
            raise ValueError('mode must be "exec" or "single", not %r' % (mode,))
        if not isinstance(code, _text_types):
            raise TypeError('code must be a string')
        if not code.endswith('\n'):
            # Like the REPL's input: 2.7-3.8 cannot compile a compound
            # statement in 'single' mode without the final newline.
            code = code + '\n'
        raised = False
        error = None
        cap = self.begin_capture()
        mirrored = self.mirror_main()
        try:
            try:
                compiled = compile(code, USER_FILE, mode, 0, True)
                exec(compiled, self.ns)
            except BaseException:
                raised = True
                error = self.error_info(sys.exc_info())
        finally:
            self.unmirror_main(mirrored)
            self.end_capture()
            compiled = None
        value_repr = None
        if mode == 'single' and cap.values:
            value_repr = u'\n'.join([_text(v) for v in cap.values])
        return {
            'stdout': cap.text('stdout'),
            'stderr': cap.text('stderr'),
            'value_repr': value_repr,
            'raised': raised,
            'error': error,
            'truncated': cap.truncated,
        }

    def op_eval(self, req):
        expr = req.get('expr')
        if not isinstance(expr, _text_types):
            raise TypeError('expr must be a string')
        cap = self.begin_capture()
        mirrored = self.mirror_main()
        try:
            try:
                value = eval(compile(expr, USER_FILE, 'eval', 0, True), self.ns)
                r = repr(value)
                tname = _type_name(type(value))
                value = None
            except BaseException:
                # The user's frames only: the op fails with this error.
                raise _UserError(self.error_info(sys.exc_info()))
        finally:
            self.unmirror_main(mirrored)
            self.end_capture()
        n = len(r)
        truncated = n > self.repr_cap
        if truncated:
            r = r[:self.repr_cap]
        return {
            'value_repr': _text(r),
            'type': _text(tname),
            'truncated': truncated,
            'repr_len': n,
            'stdout': cap.text('stdout'),
            'stderr': cap.text('stderr'),
        }

    def op_load_plugin(self, req):
        """Runs a plugin's source in the agent's own namespace; it registers
        its ops in EXTRA_OPS. Sent by the tool before a plugin op's first use."""
        src = req.get('source')
        if not isinstance(src, type(u'')) and not isinstance(src, str):
            raise _AgentError('load_plugin needs a source string')
        code = compile(src, AGENT_FILE, 'exec')
        exec(code, globals())
        return {'loaded': True}

    def op_ping(self, req):
        return {'time': time.time()}

    def op_detach(self, req):
        # Cleanup runs after this answer is sent; say what it will keep, and
        # how long this thread stays after the hang-up (see _retire).
        proxies = [p for p in (self.out_proxy, self.err_proxy, self.hook_proxy) if p is not None]
        return {
            'detached': True,
            'kept_modules': [_text(m) for m in self.classify_modules()[1]],
            'retire_s': RETIRE_GRACE_S if proxies else 0.0,
        }


# name -> fn(agent, request): filled by the plugin sources (heap census, gc,
# ...) that the tool appends to this file before sending it.
EXTRA_OPS = {}


def _ended_agents(me):
    """Idents of the threads, other than `me`, of agents whose sessions are
    over (their _ENDED is set): retiring, or about to end."""
    ended = set()
    for ident, f in sys._current_frames().items():
        while f is not None and ident != me:
            c = f.f_code
            if c.co_filename == AGENT_FILE and c.co_name == 'main' and f.f_globals.get('_ENDED'):
                ended.add(ident)
                break
            f = f.f_back
    # (`f` may be this very frame: a cycle through its own locals.)
    f = c = None
    return ended


def _retire(proxies):
    """Lets go of the proxies without freeing them under another thread.

    print() (and PySys_WriteStdout, PRINT_EXPR, ...) hold sys.stdout as a
    *borrowed* reference across calls that can switch threads (a later
    argument's __str__, the write itself): cpython#130163. If our reference
    were the last one, restoring sys.stdout and dropping the proxy could free
    it under a print in flight: a crash in the target. So they are kept for a
    grace period (GIL released), then left in a reference cycle, so only the
    cyclic GC frees them, well after any print that fetched them has
    finished.

    This runs after the session has ended (socket closed, everything
    restored, _ENDED set): the tool does not wait for it. A new agent may be
    started meanwhile (the bootstrap tells this thread from a live agent's
    by _ENDED): it waits for this thread to end before it changes anything,
    so it never sees our leftovers."""
    if not proxies or RETIRE_GRACE_S <= 0:
        return
    time.sleep(RETIRE_GRACE_S)
    for p in proxies:
        p.__dict__['_ms_retired'] = p


def main(sock, params):
    agent = None
    try:
        agent = _Agent(sock, params)
        agent.run()
    except BaseException:
        try:
            if agent is not None:
                agent.cleanup()
            else:
                gate = params.get('gate')
                if gate is not None:
                    gate.release()
                sock.close()
        except BaseException:
            pass
