# memsleuth /proc relay: sent over a launch socket (see sitecustomize.py),
# it reads this process's own /proc/self files for a tool that may not
# (a non-dumpable process's maps, smaps, fd and exe belong to root).
#
# It runs with SOCK, the connection, in its globals and serves it on a
# thread of its own until the tool hangs up; the thread waits in recv()
# without the GIL between requests. No interpreter state is looked at or
# changed: it only opens files under /proc/self.
#
# Request: u32 BE length, then ASCII `read NAME`, `link NAME` or `fds`.
# Answer: one status byte (0, or the errno), u32 BE length, the bytes
# (`fds`: lines `FD TARGET`, without the relay's own and the listener's).
try:
    import os
    import sys
    try:
        import _thread as _relay_thread
    except ImportError:
        import thread as _relay_thread

    def _relay(s, allowed, limit, py3, own):
        def recvn(n):
            buf = b''
            while len(buf) < n:
                got = s.recv(n - len(buf))
                if not got:
                    return None
                buf += got
            return buf

        def be32(n):
            return bytes(bytearray([(n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255]))

        def enc(x):
            return os.fsencode(x) if py3 else x

        try:
            # Between requests the tool may be busy for minutes: no timeout.
            s.setsockopt(1, 20, bytes(bytearray(16 if sys.maxsize > 2 ** 32 else 8)))
            while True:
                h = recvn(4)
                if h is None:
                    return
                h = bytearray(h)
                n = (h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3]
                if n > 256:
                    return
                req = recvn(n)
                if req is None:
                    return
                if py3:
                    req = req.decode('ascii', 'replace')
                parts = req.split(' ')
                status, data = 22, b''
                try:
                    if parts[0] == 'fds' and len(parts) == 1:
                        mine = set(own + [s.fileno()])
                        lines = []
                        for e in os.listdir('/proc/self/fd'):
                            if not e.isdigit() or int(e) in mine:
                                continue
                            try:
                                t = os.readlink('/proc/self/fd/' + e)
                            except OSError:
                                continue
                            lines.append(enc(e) + b' ' + enc(t))
                        status, data = 0, b'\n'.join(lines)
                    elif len(parts) == 2 and parts[1] in allowed:
                        if parts[0] == 'read':
                            f = open('/proc/self/' + parts[1], 'rb')
                            try:
                                chunks, total = [], 0
                                while total < limit:
                                    c = f.read(min(1 << 20, limit - total))
                                    if not c:
                                        break
                                    chunks.append(c)
                                    total += len(c)
                            finally:
                                f.close()
                            status, data = 0, b''.join(chunks)
                        elif parts[0] == 'link':
                            status, data = 0, enc(os.readlink('/proc/self/' + parts[1]))
                except (IOError, OSError) as e:
                    status, data = (e.errno or 5) & 255, b''
                s.sendall(bytes(bytearray([status])) + be32(len(data)) + data)
        except BaseException:
            pass
        finally:
            try:
                s.close()
            except BaseException:
                pass

    _relay_thread.start_new_thread(_relay, (SOCK, (
        'maps', 'smaps', 'smaps_rollup', 'status', 'statm', 'stat', 'environ',
        'cmdline', 'exe', 'limits', 'io', 'numa_maps', 'oom_score', 'comm',
    ), 256 << 20, sys.version_info[0] >= 3, [LISTEN_FD]))
    KEEP = True
except BaseException:
    KEEP = False
