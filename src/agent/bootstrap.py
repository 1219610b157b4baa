# memsleuth bootstrap: the first code that runs inside the target.
#
# The injector runs it with PyRun_SimpleString (in __main__'s namespace) or as
# a PEP 768 script. session.rs renders it: the quoted placeholders below
# become literals (PATH a str, TOKEN a bytes, TOOL_UID and TARGET_PID ints),
# comment lines and blank lines are dropped, and the result is wrapped into
# ONE statement that leaves no names behind, with the agent's source passed
# beside it:
#
#     exec(compile('<this source>', '<memsleuth-bootstrap>', 'exec'),
#          {'__name__': '_memsleuth_bootstrap', 'AGENT': '<agent source>'})
#
# Rules: one source for Python 2.7 and 3.6-3.15; never raise (an exception from
# a pending call surfaces in the target as SystemError in unrelated code);
# return at once (nothing here waits for the tool); no `threading` import
# (importing it off the main thread breaks 3.7-3.8 at exit).
#
# It runs where the injector got in, holding the GIL: it connects to the
# tool's Unix socket (a connect to a listening Unix socket completes at once),
# checks that the peer runs as the tool's uid (SO_PEERCRED), refuses when an
# agent is already running here (one whose session is over and that only
# retires does not count: the new agent waits for it), compiles and runs the agent in a fresh dict (not in
# sys.modules), and starts a thread on its main(sock, params). Doing this
# here rather than on the new thread spares that thread the GIL hand-offs
# (a switch interval each while another thread runs bytecode) of importing,
# connecting and receiving the agent. The agent thread then reads the tool's
# first frame and checks the token in it before it changes anything.
try:
    import sys
    BEFORE = set(sys.modules)
    # What this bootstrap may import itself; forgotten again unless an agent
    # takes over (the agent then removes what it and we imported).
    OWN_IMPORTS = ('thread', '_thread', '_socket', 'fcntl', 'time', '_signal')

    def _forget(before):
        try:
            for k in OWN_IMPORTS:
                if k in sys.modules and k not in before:
                    del sys.modules[k]
        except BaseException:
            pass

    import os

    PATH = '__MEMSLEUTH_PATH__'
    TOKEN = '__MEMSLEUTH_TOKEN__'
    TOOL_UID = '__MEMSLEUTH_UID__'
    # The pid the target sees for itself (0: not checked). A pending call
    # queued just before a fork also runs in the child: it must do nothing.
    TARGET_PID = '__MEMSLEUTH_PID__'
    AGENT_FILE = '<memsleuth-agent>'

    def _u32(b, off, little):
        if little:
            return b[off] | (b[off + 1] << 8) | (b[off + 2] << 16) | (b[off + 3] << 24)
        return b[off + 3] | (b[off + 2] << 8) | (b[off + 1] << 16) | (b[off] << 24)

    def _agent_running():
        # A live agent is a thread inside the agent's main() whose session
        # is not over: an agent sets _ENDED in its globals once everything is
        # restored and its socket closed; its thread then only retires its
        # old proxies and ends, and the new agent waits for that. (Other
        # frames from AGENT_FILE can be a leftover proxy's write, called by a
        # thread printing through a wrapper that kept it.)
        for f in sys._current_frames().values():
            while f is not None:
                c = f.f_code
                if c.co_filename == AGENT_FILE and c.co_name == 'main':
                    if not f.f_globals.get('_ENDED'):
                        return True
                    break
                f = f.f_back
        return False

    def _refuse(s, why):
        # Bytes literals only: str.encode would import encodings.ascii on 2.7.
        # 0x4000 = MSG_NOSIGNAL: no SIGPIPE if the tool is gone.
        try:
            h = b'{"op":"refused","ok":false,"reason":"' + why + b'"}\n'
            n = len(h)
            s.sendall(bytes(bytearray([(n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255])) + h, 0x4000)
        except BaseException:
            pass

    def _start(before):
        s = None
        handed_over = False
        try:
            import _socket
            try:
                import _thread as _ms_thread
            except ImportError:
                import thread as _ms_thread
            import time
            clock = getattr(time, 'perf_counter', time.time)
            # time.monotonic() stamps (3.3+), sent to a tracing tool.
            mono = getattr(time, 'monotonic', None)
            marks = mono and [['bootstrap', mono()]]
            little = sys.byteorder == 'little'
            s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            if sys.version_info[0] < 3:
                # 3.4+ sockets are close-on-exec already (PEP 446).
                try:
                    import fcntl
                    fcntl.fcntl(s.fileno(), fcntl.F_SETFD, fcntl.fcntl(s.fileno(), fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
                except BaseException:
                    pass
            # SO_SNDTIMEO bounds the connect here (it only waits if the
            # listen backlog is full) to 2 s, SO_RCVTIMEO the agent thread's
            # wait for the tool's first frame to 30 s. Unlike settimeout,
            # they keep the socket in blocking mode, so the agent's reads and
            # writes release the GIL once each (settimeout adds a poll).
            lsize = 8 if sys.maxsize > 2 ** 32 else 4
            for opt, default, secs in (('SO_RCVTIMEO', 20, 30), ('SO_SNDTIMEO', 21, 2)):
                tv = bytearray(2 * lsize)  # struct timeval: two longs
                tv[0 if little else lsize - 1] = secs
                s.setsockopt(_socket.SOL_SOCKET, getattr(_socket, opt, default), bytes(tv))
            s.connect(PATH)
            if marks:
                marks.append(['connected', mono()])
            cred = bytearray(s.getsockopt(_socket.SOL_SOCKET, getattr(_socket, 'SO_PEERCRED', 17), 12))
            if len(cred) != 12:
                return
            peer = (_u32(cred, 0, little), _u32(cred, 4, little), _u32(cred, 8, little))
            if peer[1] != TOOL_UID:
                return
            if _agent_running():
                _refuse(s, b'busy')
                return
            t0 = clock()
            try:
                code = compile(AGENT, AGENT_FILE, 'exec', 0, True)
                g = {'__name__': '_memsleuth_agent'}
                exec(code, g)
                code = None
                main = g['main']
                g = None
            except BaseException:
                _refuse(s, b'agent-error')
                return
            if marks:
                marks.append(['agent compiled and run', mono()])
            # The tool sends its load frame (and maybe a first request) as
            # soon as it accepts: it is usually here by now. Reading it here,
            # where nobody else wants the GIL, spares the agent thread a
            # release of the GIL. 0x40 = MSG_DONTWAIT.
            try:
                rbuf = s.recv(1 << 16, 0x40)
            except BaseException:
                rbuf = b''
            # Held until the agent has sent its first answers (see below).
            gate = _ms_thread.allocate_lock()
            gate.acquire()
            params = {
                'token': TOKEN,
                'peer': peer,
                'modules_before': before,
                'load_s': clock() - t0,
                'marks': marks,
                'rbuf': rbuf,
                'gate': gate,
            }
            _ms_thread.start_new_thread(main, (s, params))
            # The agent owns the socket and all cleanup from here on.
            s = None
            handed_over = True
            # With its first frame here, the agent can answer at once, if it
            # gets the GIL: a new thread only asks for it after a switch
            # interval (5 ms), and on a loaded machine gets it later still.
            # So this thread waits for the agent to send its first answers,
            # without the GIL, for 20 ms at most (the agent opens the gate
            # before anything that could block, or once it has written).
            # Signals are blocked meanwhile: a handler run by the wait could
            # raise (KeyboardInterrupt) into this code, which must swallow
            # everything; blocked, a signal is handled by another thread's
            # C handler and its Python handler runs on this thread as usual
            # once it is back in its own code. (2.7 cannot block signals,
            # and hands the GIL over after 100 bytecodes anyway.)
            sigmask = None
            if len(rbuf) >= 4 and sys.version_info[0] >= 3:
                import _signal
                sigmask = getattr(_signal, 'pthread_sigmask', None)
            if sigmask is not None:
                valid = getattr(_signal, 'valid_signals', None)
                old = sigmask(_signal.SIG_BLOCK, valid() if valid is not None else range(1, 32))
                try:
                    gate.acquire(True, 0.02)
                finally:
                    sigmask(_signal.SIG_SETMASK, old)
        except BaseException:
            pass
        finally:
            if not handed_over:
                if s is not None:
                    try:
                        s.close()
                    except BaseException:
                        pass
                    s = None
                _forget(before)

    if TARGET_PID and os.getpid() != TARGET_PID:
        raise RuntimeError('forked child')
    # The session is gone (the pending call ran late): do nothing at all.
    os.stat(PATH)
    _start(BEFORE)
except BaseException:
    try:
        _forget(BEFORE)
    except BaseException:
        pass
