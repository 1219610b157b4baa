"""Retained sizes: payload_store._blobs holds --count bytes payloads of
--size bytes each (nothing else refers to them); payload_store._left and
payload_store._right both hold one shared bytes object of --shared bytes
(and a small payload of their own).

Prints "blobs_id", "blobs_bytes" (sys.getsizeof of the dict, its keys and
its values: what would be freed with it), "boxes_id", "boxes_bytes" (the
list payload_store._boxes of 50 PayloadBox objects holding 20000-byte
payloads, and what it holds), "left_id", "right_id",
"shared_id", "shared_bytes" before "ready <pid>".
"""
from __future__ import print_function

import sys

import _target
import payload_store


def fill(count, size, shared_size):
    blobs = payload_store._blobs
    for i in range(count):
        blobs["blob-%06d" % i] = (b"%06d" % i) * (size // 6)
    total = sys.getsizeof(blobs)
    for k, v in blobs.items():
        total += sys.getsizeof(k) + sys.getsizeof(v)
    shared = b"s" * shared_size
    payload_store._left["shared"] = shared
    payload_store._right["shared"] = shared
    payload_store._left["own"] = b"l" * 1000
    payload_store._right["own"] = b"r" * 1000
    _target.emit("blobs_id", id(blobs))
    _target.emit("blobs_bytes", total)
    boxes = payload_store._boxes
    for i in range(50):
        boxes.append(payload_store.PayloadBox((b"%05d" % i) * 4000))
    held = sys.getsizeof(boxes)
    for b in boxes:
        held += sys.getsizeof(b) + sys.getsizeof(b.payload)
    _target.emit("boxes_id", id(boxes))
    _target.emit("boxes_bytes", held)
    _target.emit("left_id", id(payload_store._left))
    _target.emit("right_id", id(payload_store._right))
    _target.emit("shared_id", id(shared))
    _target.emit("shared_bytes", sys.getsizeof(shared))


def main():
    p = _target.parser(__doc__, rate=0.0, initial=0)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--size", type=int, default=48000)
    p.add_argument("--shared", type=int, default=4000000)
    args = p.parse_args()
    fill(args.count, args.size, args.shared)
    _target.run(args)


if __name__ == "__main__":
    main()
