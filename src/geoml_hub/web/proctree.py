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


def _signal(procs, sig) -> None:
    for p, t in procs:
        if alive(p, t):
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _children(pid: int) -> List[Tuple[int, int]]:
    try:
        kids = psutil.Process(int(pid)).children()
    except psutil.Error:
        return []
    out = []
    for k in kids:
        try:
            t = _ticks(k)
        except psutil.Error:
            continue
        if t is not None:
            out.append((k.pid, t))
    return out


def stop_tree(pid: int, ticks: Optional[int], grace: float = 4.0, term: float = 2.0, kill: float = 2.0,
              children_signal: Optional[int] = signal.SIGINT) -> List[int]:
    """Stop process ``pid`` and its whole process tree, every part at once (JupyterHub with its
    proxy, services, user servers, kernels and the WPS job workers: ``geoml-hub up``/``down``).

    1. SIGTERM ``pid`` and, at the same moment, ``children_signal`` (SIGINT: what JupyterHub
       sends its services and servers; ``None``: nothing) to its direct children, so they stop
       in parallel instead of one after the other (JupyterHub stops its services in turn, each
       with up to 10 s of grace); then wait up to ``grace`` seconds for the whole tree;
    2. SIGTERM whatever is left (e.g. a kernel whose server is gone), wait up to ``term`` s;
    3. SIGKILL what is still left, wait up to ``kill`` s.

    At worst ``grace + term + kill`` seconds (8 by default). Processes the tree starts while
    it stops (seen on every check) are stopped too. Returns the pids that had to be killed and
    did not end.
    """
    tree = set(descendants(pid))
    root = (pid, ticks)
    if alive(pid, ticks):
        os.kill(pid, signal.SIGTERM)
        if children_signal is not None:
            _signal(_children(pid), children_signal)
    members = {root} | tree

    def live():
        # new descendants of whatever still runs (e.g. a service the hub restarted) count too:
        # one scan of the process table finds them
        running = [m for m in members if alive(*m)]
        if running:
            kids: dict = {}
            for proc in psutil.process_iter(["ppid"]):
                kids.setdefault(proc.info["ppid"], []).append(proc)
            todo = [p for p, _ in running]
            while todo:
                for child in kids.get(todo.pop(), ()):
                    try:
                        t = _ticks(child)
                    except psutil.Error:
                        continue
                    if t is not None and (child.pid, t) not in members:
                        members.add((child.pid, t))
                        todo.append(child.pid)
        return [m for m in members if alive(*m)]

    left = live()
    for sig, wait in ((None, grace), (signal.SIGTERM, term), (signal.SIGKILL, kill)):
        if sig is not None:
            _signal(left, sig)
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = live()
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
