"""Shared plumbing for memsleuth test targets (Python 2.7 and 3.6+).

Protocol on stdout (line-buffered, flushed):
    <key> <value>          zero or more info lines (e.g. "shmid 123")
    ready <pid>            set-up done, initial leak events done
or
    unsupported <reason>   feature missing on this interpreter; exit status 0

Common options: --rate R (events/s, <= 0: none after --initial),
--initial N (events before "ready"), --max N (stop leaking after N events in
total, then idle), --main busy|spin|sleep|event|accept (what the main thread does;
with anything but "busy" a daemon thread named "leak-driver" does the leaking).

SIGTERM runs the registered cleanups and exits with status 0 (os._exit).
"""
from __future__ import print_function

import argparse
import atexit
import errno
import json
import os
import signal
import socket
import sys
import threading
import time

_cleanups = []
_cleaned = [False]


def emit(key, value):
    """Print one `key value` line on stdout and flush it."""
    sys.stdout.write("%s %s\n" % (key, value))
    sys.stdout.flush()


def unsupported(reason):
    emit("unsupported", reason)
    sys.exit(0)


def on_cleanup(fn):
    """Register fn to run at exit and on SIGTERM (last registered runs first)."""
    _cleanups.append(fn)


def _run_cleanups():
    if _cleaned[0]:
        return
    _cleaned[0] = True
    for fn in reversed(_cleanups):
        try:
            fn()
        except Exception as e:  # best effort, never mask the real exit
            sys.stderr.write("cleanup failed: %r\n" % (e,))


def _on_sigterm(signum, frame):
    _run_cleanups()
    os._exit(0)


def _report_state(signum, frame):
    """SIGUSR2: print what an attach must leave unchanged, as one line."""
    try:
        fds = sorted(os.listdir("/proc/self/fd"))
    except OSError:
        fds = []
    state = {
        "modules": sorted(sys.modules),
        "threads": sorted(sys._current_frames()),
        "fds": fds,
        "main_names": sorted(vars(sys.modules["__main__"])),
    }
    emit("state", json.dumps(state, sort_keys=True))


atexit.register(_run_cleanups)
signal.signal(signal.SIGTERM, _on_sigterm)
signal.signal(signal.SIGUSR2, _report_state)


def parser(description, rate=20.0, initial=5):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--rate", type=float, default=rate,
                   help="leak events per second (<= 0: none after --initial)")
    p.add_argument("--initial", type=int, default=initial,
                   help="leak events done before printing ready")
    p.add_argument("--max", type=int, default=None,
                   help="stop leaking after this many events in total, then idle")
    p.add_argument("--main", choices=("busy", "spin", "sleep", "event", "accept"),
                   default="busy", help="what the main thread does")
    return p


def libc():
    """The C library through ctypes, or unsupported() when ctypes is missing."""
    try:
        import ctypes
    except ImportError as e:
        unsupported("ctypes unavailable: %s" % (e,))
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return ctypes.CDLL("libc.so.6", use_errno=True)


def page_size():
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4096


def _idle_forever():
    while True:
        time.sleep(3600)


def _leak_loop(do_event, state, rate, limit):
    if rate > 0:
        interval = 1.0 / rate
        next_t = time.time()
        while limit is None or state[0] < limit:
            now = time.time()
            if next_t > now:
                time.sleep(next_t - now)
                continue
            do_event()
            next_t += interval
            # After a stall (e.g. the process was stopped by a tracer) do not
            # burst to catch up; just resume at the nominal rate.
            if time.time() - next_t > 1.0:
                next_t = time.time()
    _idle_forever()


def _park(mode, sock):
    if mode == "spin":
        # Busy in bytecode, never blocking.
        n = 0
        while True:
            n += 1
    elif mode == "event":
        ev = threading.Event()
        while True:
            ev.wait()
    elif mode == "accept":
        while True:
            try:
                conn, _ = sock.accept()
            except socket.error as e:
                if e.args and e.args[0] == errno.EINTR:
                    continue
                raise
            conn.close()
    else:  # "sleep", or "busy" with nothing to do
        _idle_forever()


def run(args, event=None):
    """Do the leak events according to args; never returns.

    event(i) performs leak event number i (0-based). With event=None the
    target only parks its main thread (a control).
    """
    state = [0]

    def do_event():
        event(state[0])
        state[0] += 1

    limit = args.max
    initial = args.initial
    if limit is not None:
        initial = min(initial, limit)
    if event is None:
        initial = 0

    sock = None
    if args.main == "accept":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)

    if event is not None and args.main == "busy":
        for _ in range(initial):
            do_event()
        emit("ready", os.getpid())
        _leak_loop(do_event, state, args.rate, limit)

    if event is not None:
        started = threading.Event()

        def driver():
            for _ in range(initial):
                do_event()
            started.set()
            _leak_loop(do_event, state, args.rate, limit)

        t = threading.Thread(target=driver, name="leak-driver")
        t.daemon = True
        t.start()
        while not started.is_set():
            if not t.is_alive():
                sys.stderr.write("leak-driver died before ready\n")
                sys.exit(1)
            started.wait(0.05)

    if sock is not None:
        emit("port", sock.getsockname()[1])
    emit("ready", os.getpid())
    _park(args.main, sock)
