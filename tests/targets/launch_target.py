"""Target for `memsleuth run` tests (Python 2.7 and 3.6+), standalone.

    launch_target.py [--nondumpable] grow [RATE]
        makes itself non-dumpable (prctl(PR_SET_DUMPABLE, 0)) if asked, prints
        "ready <pid>", then appends RATE Record objects a second (default
        1000, each holding a 1000-byte str) to the module-level list `cache`,
        up to 100,000, then idles. SIGUSR1 makes it exit normally (status 0).
    launch_target.py echo STATUS
        prints to stdout and stderr what it sees of its environment (the same
        with and without `memsleuth run`), echoes stdin in upper case, and
        exits with STATUS.
    launch_target.py modules
        prints the sorted names in sys.modules, one a line.
    launch_target.py stuck
        prints "ready <pid>", then sleeps 60 s in C code holding the GIL
        (libc sleep() through ctypes.PyDLL), so the listener cannot run.
"""
from __future__ import print_function

import os
import sys
import time

cache = []


class Record(object):
    def __init__(self, i):
        self.i = i
        self.payload = ("%d" % i) * 1 + "x" * 999


def nondumpable():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        raise OSError(ctypes.get_errno(), "prctl")
    if libc.prctl(3, 0, 0, 0, 0) != 0:  # PR_GET_DUMPABLE
        raise RuntimeError("still dumpable")


def grow(rate):
    import signal
    signal.signal(signal.SIGUSR1, lambda *a: sys.exit(0))
    print("ready %d" % os.getpid())
    sys.stdout.flush()
    i = 0
    step = 0.05
    per_step = max(1, int(rate * step))
    while True:
        if len(cache) < 100000:
            for _ in range(per_step):
                cache.append(Record(i))
                i += 1
        time.sleep(step)


def echo(status):
    env = sorted(k for k in os.environ if k.startswith("MEMSLEUTH") or k == "PYTHONPATH")
    print("argv %r" % (sys.argv[1:],))
    print("env %r pythonpath %r" % (env, os.environ.get("PYTHONPATH")))
    print("path %r" % ([p for p in sys.path if "memsleuth" in p],))
    # Without a sitecustomize of its own, the interpreter keeps the
    # listener's module under that name (documented); with one, it is that.
    sc = getattr(sys.modules.get("sitecustomize"), "__file__", None)
    print("sitecustomize %r" % (sc if sc and "memsleuth" not in sc else None,))
    sys.stderr.write("to stderr\n")
    for line in sys.stdin:
        sys.stdout.write(line.upper())
    sys.stdout.flush()
    sys.exit(status)


def main():
    args = sys.argv[1:]
    if args and args[0] == "--nondumpable":
        nondumpable()
        args = args[1:]
    if args[0] == "grow":
        grow(int(args[1]) if len(args) > 1 else 1000)
    elif args[0] == "echo":
        echo(int(args[1]))
    elif args[0] == "stuck":
        import ctypes
        print("ready %d" % os.getpid())
        sys.stdout.flush()
        ctypes.PyDLL(None).sleep(60)
    elif args[0] == "modules":
        for m in sorted(sys.modules):
            print(m)


if __name__ == "__main__":
    main()
