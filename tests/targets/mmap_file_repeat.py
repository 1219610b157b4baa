"""File mmap leak: one temp file mmapped again and again, every mapping kept.

The file lives in a fresh directory under $TMPDIR and is removed at exit and on
SIGTERM. Note: Python's mmap.mmap dup()s the fd, so fds grow too.
Prints "path <abs path>" and "size <bytes>" before "ready <pid>".
"""
from __future__ import print_function

import mmap
import os
import shutil
import tempfile

import _target


def main():
    p = _target.parser(__doc__)
    p.add_argument("--size", type=int, default=65536, help="file size in bytes")
    args = p.parse_args()

    d = tempfile.mkdtemp(prefix="memsleuth-mmap-")
    _target.on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    path = os.path.abspath(os.path.join(d, "data.bin"))
    with open(path, "wb") as f:
        f.write(b"\0" * args.size)
    fd = os.open(path, os.O_RDWR)
    page = _target.page_size()
    maps = []

    def leak(i):
        m = mmap.mmap(fd, 0)
        for off in range(0, len(m), page):
            m[off:off + 1] = b"\x01"
        maps.append(m)

    _target.emit("path", path)
    _target.emit("size", args.size)
    _target.run(args, leak)


if __name__ == "__main__":
    main()
