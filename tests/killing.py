"""Killing a command's whole process group at a chosen moment, as a preemption would."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def kill_when(
    command: list[str], done: Callable[[], bool], cwd: Path = ROOT, timeout: float = 600
) -> None:
    """Start `command` in its own session in `cwd`; SIGKILL the whole group once `done()` holds.

    Fails if the command ends before `done()` holds, or after `timeout` seconds.
    """
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, "the command finished before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
