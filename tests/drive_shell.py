"""Drives `memsleuth shell PID` through a pty like a person would.

Usage: drive_shell.py MEMSLEUTH PID. Exits 0 when every step showed what it
should: a multi-line block decided by the target's codeop, tab completion,
Ctrl-C cancelling the input line (the target keeps running), Ctrl-D detaching.
"""
import os
import pty
import re
import select
import sys
import time

binary, target = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execv(binary, [binary, "shell", target])

buf = b""
mark = 0
ANSI = re.compile(rb"\x1b\[[?0-9;]*[a-zA-Z]")


def read_until(token, timeout=15):
    global buf, mark
    end = time.time() + timeout
    while time.time() < end:
        clean = ANSI.sub(b"", buf)
        i = clean.find(token.encode(), mark)
        if i >= 0:
            mark = i + len(token)
            return
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
    sys.stdout.write(ANSI.sub(b"", buf).decode(errors="replace"))
    sys.exit("timed out waiting for %r" % token)


def send(s):
    time.sleep(0.15)  # a person types after the prompt is drawn
    os.write(fd, s.encode())


read_until(">>> ")
send("x = 41\r")
read_until(">>> ")
send("if x:\r")
read_until("... ")
send("    print(x + 1)\r")
read_until("... ")
send("\r")
read_until("42")
read_until(">>> ")
send("sys.version_in\t")
read_until("sys.version_info")
send("\x03")
read_until("KeyboardInterrupt")
read_until(">>> ")
send("x\r")
read_until("41")
read_until(">>> ")
send("\x04")
read_until("detached")
_, status = os.waitpid(pid, 0)
sys.exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "memsleuth exited with %r" % status)
