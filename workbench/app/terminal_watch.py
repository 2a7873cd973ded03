"""End the app when its terminal is gone.

When a terminal window or tmux pane closes, its pty is deleted. A process that is not told by a
SIGHUP (say, started by `make run`, whose make stays alive) keeps a Textual app reading a dead
terminal and spinning at full CPU. A daemon thread polls the terminal and hangs the process up
the way the terminal should have.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
from collections.abc import Callable


def terminal_gone(fd: int) -> bool:
    """True when `fd` is a terminal device whose node was deleted (or the fd is closed)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return True
    return stat.S_ISCHR(st.st_mode) and st.st_nlink == 0


def watch_terminal(fd: int, interval: float = 2.0,
                   on_gone: Callable[[], None] | None = None) -> threading.Thread:
    """Start a daemon thread calling `on_gone` (default: SIGHUP to this process, or SIGTERM
    where SIGHUP is ignored, as under `nohup`: a dead terminal must end the app all the same)
    once `fd`'s terminal is gone."""
    def hang_up() -> None:
        ignored = signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM if ignored else signal.SIGHUP)

    def run() -> None:
        while not terminal_gone(fd):
            threading.Event().wait(interval)
        (on_gone or hang_up)()

    thread = threading.Thread(target=run, name="terminal-watch", daemon=True)
    thread.start()
    return thread
