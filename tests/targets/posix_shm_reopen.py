"""POSIX shm leak: a SharedMemory segment re-opened by name again and again.

Every SharedMemory(name=...) object is kept (never closed) and its pages are
touched. The segment is unlinked at exit and on SIGTERM. The multiprocessing
resource tracker is kept out of the picture (no helper process, no warnings).
Python 3.8+. Prints "name <shm name>" (file /dev/shm/<name>) and
"size <bytes>" before "ready <pid>".
"""
from __future__ import print_function

import sys

import _target


def main():
    p = _target.parser(__doc__)
    p.add_argument("--size", type=int, default=65536, help="segment size in bytes")
    args = p.parse_args()

    if sys.version_info < (3, 8):
        _target.unsupported("multiprocessing.shared_memory needs Python 3.8+")
    try:
        from multiprocessing import resource_tracker, shared_memory
    except ImportError as e:
        _target.unsupported("multiprocessing.shared_memory unavailable: %s" % (e,))

    # SharedMemory registers every create/attach with the resource tracker
    # (which would spawn a helper process and warn about "leaked" segments).
    resource_tracker.register = lambda *a, **k: None
    resource_tracker.unregister = lambda *a, **k: None

    owner = shared_memory.SharedMemory(create=True, size=args.size)
    _target.on_cleanup(owner.unlink)
    name = owner.name
    page = _target.page_size()
    kept = [owner]

    def touch(shm):
        buf = shm.buf
        for off in range(0, len(buf), page):
            buf[off] = 1

    touch(owner)

    def leak(i):
        shm = shared_memory.SharedMemory(name=name)
        touch(shm)
        kept.append(shm)

    _target.emit("name", name)
    _target.emit("size", args.size)
    _target.run(args, leak)


if __name__ == "__main__":
    main()
