"""Python-object leak: app._session_cache grows by one app.UserSession per event.

Prints "module app", "cache _session_cache", "class UserSession" and
"payload <bytes>" before "ready <pid>".
"""
from __future__ import print_function

import _target
import app


def main():
    p = _target.parser(__doc__)
    p.add_argument("--payload", type=int, default=1024,
                   help="length of the string each session holds")
    args = p.parse_args()

    def leak(i):
        app.login("user%d" % i, args.payload)

    _target.emit("module", "app")
    _target.emit("cache", "_session_cache")
    _target.emit("class", "UserSession")
    _target.emit("payload", args.payload)
    _target.run(args, leak)


if __name__ == "__main__":
    main()
