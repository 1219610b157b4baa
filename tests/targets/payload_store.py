"""A module for retained_target.py (not a target itself): module-level
dicts of bytes payloads whose sizes the target reports."""

_blobs = {}
_left = {}
_right = {}


class PayloadBox(object):
    __slots__ = ("payload",)

    def __init__(self, payload):
        self.payload = payload


_boxes = []
