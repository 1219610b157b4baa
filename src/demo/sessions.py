"""The demo service's session store (memsleuth demo)."""


class UserSession(object):
    def __init__(self, user):
        self.user = user
        self.token = user * 8
        self.profile = {"name": user, "history": ["login"] * 8}


# The bug: every login is kept forever.
_cache = {}


def login(user):
    s = UserSession(user)
    _cache[user] = s
    return s


class BoundedCache(object):
    """A cache that evicts its oldest entry: bounded, not a leak."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.order = []
        self.data = {}

    def put(self, key, value):
        if key not in self.data:
            self.order.append(key)
            if len(self.order) > self.capacity:
                del self.data[self.order.pop(0)]
        self.data[key] = value
