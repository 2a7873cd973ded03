"""A process whose terminal is deleted is hung up, not left reading a dead pty."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def _child_on_a_pty(watch: bool, hup: str = "SIG_DFL") -> subprocess.Popen:
    # SIGHUP's disposition set here, not inherited (a test run under nohup ignores it)
    code = f"import signal, time\nsignal.signal(signal.SIGHUP, signal.{hup})\n"
    if watch:
        code += ("from workbench.app.terminal_watch import watch_terminal\n"
                 "watch_terminal(0, interval=0.1)\n")
    code += "time.sleep(30)\n"
    master, slave = os.openpty()
    child = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave,
                             stderr=slave, cwd=ROOT)
    os.close(slave)
    time.sleep(1.0)
    assert child.poll() is None
    os.close(master)   # the terminal window closes: its pty is deleted
    return child


def _ended_within(child: subprocess.Popen, seconds: float) -> int | None:
    try:
        return child.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return None


def test_watched_process_is_hung_up_when_its_terminal_is_deleted():
    assert _ended_within(_child_on_a_pty(watch=True), 5) == -1   # SIGHUP


def test_a_process_that_ignores_sighup_is_still_ended_when_its_terminal_is_deleted():
    """Under `nohup` SIGHUP is ignored; the watch then terminates the process."""
    assert _ended_within(_child_on_a_pty(watch=True, hup="SIG_IGN"), 5) == -15   # SIGTERM


def test_unwatched_process_outlives_its_terminal():
    """The control: without the watch nothing tells the process (this is the bug)."""
    assert _ended_within(_child_on_a_pty(watch=False), 1.5) is None
