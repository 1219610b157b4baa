"""fd leak: raw file descriptors opened and never closed.

Events cycle through --kinds (default file,pipe,socket): "file" os.open()s a
file in a temp dir (removed at exit / SIGTERM), "pipe" is os.pipe() (2 fds),
"socket" an unconnected TCP socket (objects kept so they are never collected).
Prints "path <file>" and "kinds <list>" before "ready <pid>".
"""
from __future__ import print_function

import os
import shutil
import socket
import tempfile

import _target

KINDS = ("file", "pipe", "socket")


def main():
    p = _target.parser(__doc__)
    p.add_argument("--kinds", default=",".join(KINDS),
                   help="comma-separated subset of file,pipe,socket")
    args = p.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        p.error("--kinds must be a non-empty subset of %s" % ",".join(KINDS))

    d = tempfile.mkdtemp(prefix="memsleuth-fd-")
    _target.on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    path = os.path.abspath(os.path.join(d, "leaked.txt"))
    with open(path, "w") as f:
        f.write("memsleuth fd leak target\n")
    kept = []

    def leak(i):
        kind = kinds[i % len(kinds)]
        if kind == "file":
            kept.append(os.open(path, os.O_RDONLY))
        elif kind == "pipe":
            kept.append(os.pipe())
        else:
            kept.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))

    _target.emit("path", path)
    _target.emit("kinds", ",".join(kinds))
    _target.run(args, leak)


if __name__ == "__main__":
    main()
