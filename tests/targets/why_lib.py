"""Objects kept alive in the ways `memsleuth why` must explain (not a target
itself: why_target.py sets up one case). Python 2.7 and 3.6+.

module_dict    why_lib._registry[i] -> Record
class_methods  why_lib.Bus.listeners[i] -> bound method Listener.on_event -> Listener
closure        why_lib.handler (a closure) -> cell 'seen' -> list -> Event
thread_local   thread 'worker-1' running worker(): local 'cache' -> list -> Job
traceback      why_lib.last_error (exception / exc_info) -> traceback -> frame
               of parse(): local 'payload' -> Payload
cycle          Node objects in reference cycles, unreachable (gc disabled)
"""
from __future__ import print_function

import sys
import threading
import time

_registry = {}


class Record(object):
    def __init__(self, i):
        self.i = i
        self.tags = ["a", "b"]
        self.meta = {"n": i}


def fill_registry(n):
    for i in range(n):
        _registry[i] = Record(i)


class Listener(object):
    def __init__(self, i):
        self.i = i

    def on_event(self, event):
        return self.i


class Bus(object):
    listeners = []


def subscribe(n):
    for i in range(n):
        Bus.listeners.append(Listener(i).on_event)


class Event(object):
    def __init__(self, i):
        self.i = i


def make_handler():
    seen = []

    def handle(event):
        seen.append(event)
        return len(seen)
    return handle


handler = None


def install_handler(n):
    global handler
    handler = make_handler()
    for i in range(n):
        handler(Event(i))


class Job(object):
    def __init__(self, i):
        self.i = i


def worker(n, started):
    cache = [Job(i) for i in range(n)]
    started.set()
    while True:
        time.sleep(3600)
        cache.append(Job(-1))


def start_worker(n):
    started = threading.Event()
    t = threading.Thread(target=worker, args=(n, started), name="worker-1")
    t.daemon = True
    t.start()
    started.wait(10)


class Payload(object):
    def __init__(self, text):
        self.text = text


def parse(text):
    payload = Payload(text)
    raise ValueError("cannot parse %d bytes" % len(payload.text))


last_error = None


def fail_once():
    global last_error
    try:
        parse("x" * 100)
    except ValueError:
        if sys.version_info[0] >= 3:
            last_error = sys.exc_info()[1]
        else:
            last_error = sys.exc_info()


class Node(object):
    def __init__(self, i):
        self.i = i
        self.other = None


def make_cycles(n):
    import gc
    gc.disable()
    for i in range(n):
        a = Node(i)
        b = Node(-i)
        a.other = b
        b.other = a
    a = b = None
