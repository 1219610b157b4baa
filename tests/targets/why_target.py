"""Target for `memsleuth why`: sets up one way of keeping objects alive
(see why_lib.py), prints "class <name>" and "ready <pid>", then idles.

    why_target.py --case module_dict|class_methods|closure|thread_local|traceback|cycle
                  [--count N]
"""
from __future__ import print_function

import _target
import why_lib

CASES = {
    "module_dict": ("Record", why_lib.fill_registry),
    "class_methods": ("Listener", why_lib.subscribe),
    "closure": ("Event", why_lib.install_handler),
    "thread_local": ("Job", why_lib.start_worker),
    "traceback": ("Payload", lambda n: why_lib.fail_once()),
    "cycle": ("Node", why_lib.make_cycles),
}


def main():
    p = _target.parser(__doc__, rate=0, initial=0)
    p.add_argument("--case", choices=sorted(CASES), required=True)
    p.add_argument("--count", type=int, default=50)
    args = p.parse_args()
    name, setup = CASES[args.case]
    setup(args.count)
    _target.emit("class", "why_lib." + name)
    _target.run(args, None)


if __name__ == "__main__":
    main()
