# memsleuth launch listener, loaded as `sitecustomize` by `memsleuth run`.
#
# `memsleuth run -- python app.py` writes this file to
# <base>/<pid>-<start time>/site/, puts that directory first on PYTHONPATH,
# and execs the program, which stays unchanged. At start-up this file:
#   1. restores the environment (PYTHONPATH as it was, our variables gone:
#      child processes inherit nothing of ours), takes its directory off
#      sys.path and deletes it (with any .pyc: all was read by now);
#   2. makes <base>/<pid>-<start time>/ (0700) with a random `token` (0600)
#      and a Unix socket `s` (0600), and starts one thread blocked in
#      accept(): no polling, no wake-ups while nobody connects;
#   3. imports the sitecustomize that would have run without us, if any,
#      so that one still runs (and its errors are reported as before).
# At exit it removes what it made, and <base> itself when that is empty.
#
# A connection must come from our uid or root (SO_PEERCRED) and begin with
# b'MSL1', the token (64 hex digits) and a u32 BE length; then comes that
# much Python source (the usual attach bootstrap, or the /proc relay),
# which runs on this thread in a fresh dict with the connection as SOCK
# (and our listening fd as LISTEN_FD); it sets KEEP to keep SOCK open.
# We answer one byte: K (ran), T (bad token), E (the source raised).
#
# Rules: one source for 2.7 and 3.6-3.15; never raise into the program's
# start-up; import only _socket, _thread/thread (both forgotten again) and
# atexit (kept: 3.6 keeps exit handlers in the module); leave no names in
# this module but the dunders.


def _memsleuth_launch():
    import os
    import sys
    env = os.environ
    base = env.pop('MEMSLEUTH_LAUNCH_DIR', None)
    site = env.pop('MEMSLEUTH_LAUNCH_SITE', None)
    old = env.pop('MEMSLEUTH_LAUNCH_PYTHONPATH', None)
    if old is not None:
        if old[:1] == '=':
            env['PYTHONPATH'] = old[1:]
        else:
            env.pop('PYTHONPATH', None)
    if site:
        while site in sys.path:
            sys.path.remove(site)
        getattr(sys, 'path_importer_cache', {}).pop(site, None)
        # Deleted only if it is the one `memsleuth run` made.
        if base and os.path.basename(site) == 'site' and \
                os.path.dirname(os.path.dirname(site)) == base:
            _forget_site(os, site)
    if not base:
        return
    try:
        _listen(os, sys, base)
    except BaseException:
        pass


def _forget_site(os, site):
    # This file was read (and its .pyc written) before it ran: nothing of
    # it needs to stay on disk. Its parent is the launch directory of the
    # pid that ran `memsleuth run`: ours (made again below), or, when a
    # non-Python program started us, one that would stay empty.
    try:
        for d in (site + '/__pycache__', site, os.path.dirname(site)):
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for n in names:
                if n.startswith('sitecustomize.'):
                    try:
                        os.unlink(d + '/' + n)
                    except OSError:
                        pass
            try:
                os.rmdir(d)
            except OSError:
                pass
    except BaseException:
        pass


def _listen(os, sys, base):
    # Imported for the listener and forgotten again at the end (the thread
    # keeps its references); a later import by the program loads its own.
    before = set(sys.modules)
    try:
        _listen_on(os, sys, base)
    finally:
        for k in ('_socket', 'thread', '_thread'):
            if k not in before:
                sys.modules.pop(k, None)


def _listen_on(os, sys, base):
    import _socket
    try:
        import _thread as thr
    except ImportError:
        import thread as thr
    py3 = sys.version_info[0] >= 3
    euid = os.geteuid()
    st = os.lstat(base)
    if (st.st_mode & 0o170000) != 0o040000 or st.st_uid != euid or st.st_mode & 0o077:
        return
    pid = os.getpid()
    f = open('/proc/self/stat', 'rb')
    try:
        raw = f.read()
    finally:
        f.close()
    start = raw[raw.rindex(b')') + 2:].split()[19]
    if py3:
        start = start.decode('ascii')
    d = '%s/%d-%s' % (base, pid, start)
    path = d + '/s'
    tpath = d + '/token'
    try:
        try:
            os.mkdir(d, 0o700)
        except OSError:
            # The base went away with the last program in it: once more.
            if os.path.isdir(d):
                raise
            try:
                os.mkdir(base, 0o700)
            except OSError:
                pass
            st = os.lstat(base)
            if (st.st_mode & 0o170000) != 0o040000 or st.st_uid != euid or st.st_mode & 0o077:
                return
            os.mkdir(d, 0o700)
    except OSError:
        # The same pid and start time: this process exec'd Python again.
        st = os.lstat(d)
        if (st.st_mode & 0o170000) != 0o040000 or st.st_uid != euid:
            return
        for p in (path, tpath):
            try:
                os.unlink(p)
            except OSError:
                pass
    token = ''.join(['%02x' % b for b in bytearray(os.urandom(32))])
    btoken = token.encode('ascii') if py3 else token
    fd = os.open(tpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o600)
    try:
        os.write(fd, btoken)
    finally:
        os.close(fd)
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    if not py3:
        # 3.4+ sockets are close-on-exec already (PEP 446).
        had = 'fcntl' in sys.modules
        import fcntl
        fcntl.fcntl(s.fileno(), fcntl.F_SETFD, fcntl.fcntl(s.fileno(), fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
        if not had:
            del sys.modules['fcntl']
    s.bind(path)
    os.chmod(path, 0o600)
    s.listen(8)
    little = sys.byteorder == 'little'
    lsize = 8 if sys.maxsize > 2 ** 32 else 4
    peercred = getattr(_socket, 'SO_PEERCRED', 17)
    uids = (0, euid, os.getuid())
    # This module's dict stays alive with the thread (2.7 clears a module's
    # dict when the module goes, and a real sitecustomize replaces ours).
    keep_module = sys.modules.get('sitecustomize')

    def u32(b, off, le):
        if le:
            return b[off] | (b[off + 1] << 8) | (b[off + 2] << 16) | (b[off + 3] << 24)
        return b[off + 3] | (b[off + 2] << 8) | (b[off + 1] << 16) | (b[off] << 24)

    def recvn(c, n):
        buf = b''
        while len(buf) < n:
            got = c.recv(n - len(buf))
            if not got:
                break
            buf += got
        return buf

    def handle(c):
        # A peer that says nothing cannot hold this thread for long.
        tv = bytearray(2 * lsize)
        tv[0 if little else lsize - 1] = 10
        for opt, default in (('SO_RCVTIMEO', 20), ('SO_SNDTIMEO', 21)):
            c.setsockopt(_socket.SOL_SOCKET, getattr(_socket, opt, default), bytes(tv))
        cred = bytearray(c.getsockopt(_socket.SOL_SOCKET, peercred, 12))
        if len(cred) != 12 or u32(cred, 4, little) not in uids:
            return False
        head = bytearray(recvn(c, 72))
        if len(head) != 72 or bytes(head[:4]) != b'MSL1':
            return False
        diff = 0
        for a, b in zip(head[4:68], bytearray(btoken)):
            diff |= a ^ b
        if diff:
            c.sendall(b'T')
            return False
        n = u32(head, 68, False)
        if n > (16 << 20):
            return False
        code = recvn(c, n)
        if len(code) != n:
            return False
        g = {'__name__': '_memsleuth_launch', 'SOCK': c, 'LISTEN_FD': s.fileno()}
        try:
            exec(compile(code, '<memsleuth-launch>', 'exec', 0, True), g)
        except BaseException:
            c.sendall(b'E')
            return False
        c.sendall(b'K')
        return bool(g.get('KEEP'))

    def serve():
        errors = 0
        held = keep_module  # noqa: F841 (held for the thread's life)
        while True:
            c = None
            try:
                acc = getattr(s, '_accept', None)
                if acc is not None:
                    c = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, acc()[0])
                else:
                    c = s.accept()[0]
                errors = 0
            except BaseException:
                # EINTR on 2.7, or EMFILE: try again, a little later after
                # many failures in a row; a closed socket ends the thread.
                errors += 1
                if s.fileno() < 0 or errors > 1000:
                    return
                if errors > 10:
                    import time
                    time.sleep(0.1)
                continue
            keep = False
            try:
                keep = handle(c)
            except BaseException:
                pass
            if not keep:
                try:
                    c.close()
                except BaseException:
                    pass

    def cleanup():
        # Forked children run atexit too: only the owner removes.
        if os.getpid() != pid:
            return
        for p in (path, tpath):
            try:
                os.unlink(p)
            except OSError:
                pass
        # Session directories of a tool killed before its agent connected.
        try:
            names = os.listdir(d)
        except OSError:
            names = []
        for n in names:
            sub = d + '/' + n
            if not n.startswith('memsleuth-') or os.path.islink(sub):
                continue
            try:
                for f in os.listdir(sub):
                    os.unlink(sub + '/' + f)
            except OSError:
                pass
        for p in (d, base):
            try:
                os.rmdir(p)
            except OSError:
                pass

    import atexit
    atexit.register(cleanup)
    thr.start_new_thread(serve, ())


def _memsleuth_chain():
    # The sitecustomize that would have run without us (our directory is
    # off sys.path by now). Its own errors propagate as they would have.
    import sys
    me = sys.modules.pop('sitecustomize', None)
    try:
        import sitecustomize  # noqa: F401
    except ImportError as e:
        name = getattr(e, 'name', None)
        if name not in (None, 'sitecustomize') or (name is None and 'sitecustomize' not in str(e)):
            raise
        if me is not None:
            sys.modules['sitecustomize'] = me


_memsleuth_launch()
del _memsleuth_launch, _forget_site, _listen, _listen_on
try:
    _memsleuth_chain()
finally:
    del _memsleuth_chain
