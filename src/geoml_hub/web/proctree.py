"""Process identity and process trees (psutil): the WPS dispatcher's workers and ``geoml-hub up``.

A process is identified by its pid *and* its start time, so that a pid the kernel has given to
a new process is not taken for the old one. The start time is kept as clock ticks since boot
(``/proc/PID/stat`` field 22), the integer the job table's ``pid_start`` column and the
``up.pid`` file hold.
"""

from __future__ import annotations

import os
import signal
import time
from typing import List, Optional, Tuple

import psutil

#: Clock ticks per second (``getconf CLK_TCK``): psutil gives start times in seconds.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _ticks(proc: psutil.Process) -> Optional[int]:
    """Start time of a live process in clock ticks since boot, ``None`` for a zombie."""
    if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
        return None
    return round((proc.create_time() - psutil.boot_time()) * CLOCK_TICKS)


def process_start_ticks(pid: int) -> Optional[int]:
    """Start time of process ``pid`` (clock ticks since boot), or ``None`` if no such live
    process exists (zombies count as dead).

    Together with the pid it identifies a process even after the pid is reused.
    """
    try:
        return _ticks(psutil.Process(int(pid)))
    except (psutil.Error, ValueError, TypeError):
        return None


def alive(pid: Optional[int], ticks: Optional[int]) -> bool:
    """Whether process ``pid`` that started at ``ticks`` (``None``: any start time) still runs."""
    if not pid:
        return False
    now = process_start_ticks(pid)
    return now is not None and (ticks is None or now == ticks)


def descendants(pid: int) -> List[Tuple[int, int]]:
    """``(pid, start ticks)`` of every live descendant of ``pid``."""
    try:
        children = psutil.Process(int(pid)).children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for child in children:
        try:
            ticks = _ticks(child)
        except psutil.Error:
            continue
        if ticks is not None:
            out.append((child.pid, ticks))
    return out


def stop_tree(pid: int, ticks: Optional[int], timeout: float = 45.0) -> List[int]:
    """SIGTERM ``pid`` (JupyterHub stops its servers and services), wait up to ``timeout``
    seconds, SIGKILL it, then stop whatever of its process tree is left (SIGTERM, 10 s, SIGKILL).
    Returns the pids that had to be killed and did not end."""
    tree = descendants(pid)
    if alive(pid, ticks):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive(pid, ticks):
            time.sleep(0.2)
        if alive(pid, ticks):
            os.kill(pid, signal.SIGKILL)
    tree += [d for d in descendants(pid) if d not in tree]
    left = [(p, t) for p, t in tree if alive(p, t)]
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for p, t in left:
            if alive(p, t):
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(alive(p, t) for p, t in left):
            time.sleep(0.1)
        left = [(p, t) for p, t in left if alive(p, t)]
        if not left:
            break
    return [p for p, _ in left]


def stop_group(pid: Optional[int], ticks: Optional[int], grace: float = 3.0) -> bool:
    """Stop process ``pid`` and its process group: SIGTERM, then SIGKILL after ``grace`` seconds.
    Returns ``True`` once no such process is left (the WPS dispatcher's job workers lead their
    own process group)."""
    if not alive(pid, ticks):
        return True
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid, ticks):
                return True
            time.sleep(0.05)
    return not alive(pid, ticks)
