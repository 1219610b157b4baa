"""A tiny "application" module for unbounded_cache.py (not a target itself).

Leak: app._session_cache maps increasing session ids to app.UserSession
objects and nothing ever evicts them.
"""
from __future__ import print_function

import itertools
import time

_session_cache = {}
_ids = itertools.count(1)


class UserSession(object):
    def __init__(self, session_id, username, payload):
        self.session_id = session_id
        self.username = username
        self.created = time.time()
        self.token = "tok-%08x-%d" % (session_id * 2654435761 % (1 << 32), session_id)
        self.roles = ["user", "reader"]
        self.prefs = {"theme": "dark", "lang": "en"}
        self.payload = "s" * payload


def login(username, payload=1024):
    sid = next(_ids)
    _session_cache[sid] = UserSession(sid, username, payload)
    return sid
