# memsleuth bootstrap: the first code that runs inside the target.
#
# The injector runs it with PyRun_SimpleString (in __main__'s namespace) or as
# a PEP 768 script. session.rs renders it: the quoted placeholders below
# become literals (PATH a str, TOKEN a bytes, TOOL_UID and TARGET_PID ints), comment lines and blank lines are dropped, and the result
# is wrapped into ONE statement that leaves no names behind:
#
#     exec(compile('<this source>', '<memsleuth-bootstrap>', 'exec'),
#          {'__name__': '_memsleuth_bootstrap'})
#
# Rules: one source for Python 2.7 and 3.6-3.15; never raise (an exception from
# a pending call surfaces in the target as SystemError in unrelated code);
# return at once (the real work happens on a new thread); no `threading`
# import (importing it off the main thread breaks 3.7-3.8 at exit).
#
# The thread connects to the tool's Unix socket, checks that the peer runs as
# the tool's uid (SO_PEERCRED), reads the load frame (4-byte big-endian length,
# JSON header line, payload = agent source), checks the token, refuses when an
# agent is already running here (one that is only retiring after its session
# does not count), then runs the agent in a fresh dict (not in
# sys.modules) and calls its main(sock, params).
try:
    import sys
    BEFORE = set(sys.modules)
    # What this bootstrap may import itself; forgotten again unless an agent
    # takes over (the agent then removes what it and we imported).
    OWN_IMPORTS = ('thread', '_thread', '_socket', 'fcntl')

    def _forget(before):
        try:
            for k in OWN_IMPORTS:
                if k in sys.modules and k not in before:
                    del sys.modules[k]
        except BaseException:
            pass

    import os
    try:
        import _thread as _ms_thread
    except ImportError:
        import thread as _ms_thread

    PATH = '__MEMSLEUTH_PATH__'
    TOKEN = '__MEMSLEUTH_TOKEN__'
    TOOL_UID = '__MEMSLEUTH_UID__'
    # The pid the target sees for itself (0: not checked). A pending call
    # queued just before a fork also runs in the child: it must do nothing.
    TARGET_PID = '__MEMSLEUTH_PID__'
    MAX_LOAD = 16 << 20
    AGENT_FILE = '<memsleuth-agent>'

    def _recv_exact(s, n):
        chunks = []
        while n > 0:
            try:
                c = s.recv(min(n, 65536))
            except Exception as e:
                # 2.7 does not retry EINTR by itself.
                if getattr(e, 'errno', None) == 4:
                    continue
                raise
            if not c:
                return None
            chunks.append(c)
            n -= len(c)
        return b''.join(chunks)

    def _u32(b, off, little):
        if little:
            return b[off] | (b[off + 1] << 8) | (b[off + 2] << 16) | (b[off + 3] << 24)
        return b[off + 3] | (b[off + 2] << 8) | (b[off + 1] << 16) | (b[off] << 24)

    def _agent_running():
        # A live agent is a thread inside the agent's main(), unless it is in
        # _retire: that one has ended its session (everything restored, its
        # socket closed) and only waits to let go of its old proxies. (Other
        # frames from AGENT_FILE can be a leftover proxy's write, called by a
        # thread printing through a wrapper that kept it.)
        for f in sys._current_frames().values():
            live = False
            while f is not None:
                if f.f_code.co_filename == AGENT_FILE:
                    if f.f_code.co_name == '_retire':
                        live = False
                        break
                    if f.f_code.co_name == 'main':
                        live = True
                f = f.f_back
            if live:
                return True
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

    def _run(before):
        s = None
        handed_over = False
        try:
            import _socket
            s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            if sys.version_info[0] < 3:
                # 3.4+ sockets are close-on-exec already (PEP 446).
                try:
                    import fcntl
                    fcntl.fcntl(s.fileno(), fcntl.F_SETFD, fcntl.fcntl(s.fileno(), fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
                except BaseException:
                    pass
            s.settimeout(30.0)
            s.connect(PATH)
            little = sys.byteorder == 'little'
            cred = bytearray(s.getsockopt(_socket.SOL_SOCKET, getattr(_socket, 'SO_PEERCRED', 17), 12))
            if len(cred) != 12:
                return
            peer_pid = _u32(cred, 0, little)
            peer_uid = _u32(cred, 4, little)
            peer_gid = _u32(cred, 8, little)
            if peer_uid != TOOL_UID:
                return
            head = _recv_exact(s, 4)
            if head is None:
                return
            n = _u32(bytearray(head), 0, False)
            if n > MAX_LOAD:
                _refuse(s, b'too-large')
                return
            body = _recv_exact(s, n)
            if body is None:
                return
            nl = body.find(b'\n')
            header = body[:max(nl, 0)]
            key = b'"token":"'
            i = header.find(key)
            want = bytearray(TOKEN)
            got = bytearray(header[i + len(key):i + len(key) + len(want)]) if i >= 0 else bytearray()
            diff = len(got) ^ len(want)
            for a, b in zip(got, want):
                diff |= a ^ b
            if nl < 0 or i < 0 or diff != 0:
                _refuse(s, b'token')
                return
            if _agent_running():
                _refuse(s, b'busy')
                return
            try:
                code = compile(body[nl + 1:], AGENT_FILE, 'exec', 0, True)
                body = None
                g = {'__name__': '_memsleuth_agent'}
                exec(code, g)
                code = None
                main = g['main']
                g = None
            except BaseException:
                _refuse(s, b'agent-error')
                return
            params = {
                'header': header,
                'peer': (peer_pid, peer_uid, peer_gid),
                'modules_before': before,
            }
            s.settimeout(None)
            sock = s
            s = None
            handed_over = True
            # The agent owns the socket and all cleanup from here on.
            main(sock, params)
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
    _ms_thread.start_new_thread(_run, (BEFORE,))
except BaseException:
    try:
        _forget(BEFORE)
    except BaseException:
        pass
