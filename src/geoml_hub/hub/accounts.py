"""System accounts for the users of ``geoml-hub up`` run as root (one machine).

As The Littlest JupyterHub does, each hub user ``<name>`` gets a system account
``jupyter-<name>`` on their first spawn: created with ``useradd`` (its own group, home
``HOMES/jupyter-<name>`` with mode 0700 owned by that account), and their server and kernels
run as that account. The platform (JupyterHub, the proxy, the WPS, the map, the culler) keeps
running as the account that started ``geoml-hub up``, and its state directory (hub and job
databases, cookie secret, proxy token, admin password, job directories) is mode 0700, so a
user's kernel reads none of it.

What users share is outside the state directory and read-only to them: the published results
(written only by the WPS) and the shared data root, which :func:`writable_by_others` checks at
start-up (a data root that another account may write is mounted read-only by
:func:`mount_read_only`).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import stat
import subprocess
from pathlib import Path
from typing import List, Optional

from ..errors import GeomlError

#: prefix of the system account of a hub user (The Littlest JupyterHub's convention)
ACCOUNT_PREFIX = "jupyter-"

#: a portable Linux user name (useradd's default NAME_REGEX), at most 32 characters
_NAME_OK = re.compile(r"^[a-z_][a-z0-9_-]*$")
_MAX_NAME = 32


def system_username(name: str, prefix: str = ACCOUNT_PREFIX) -> str:
    """The system account of hub user ``name``: ``jupyter-<name>``.

    A name that is not a portable Linux user name or makes the account name longer than 32
    characters is shortened and given a hash suffix (as The Littlest JupyterHub does), so two
    hub users never share an account.

    Parameters
    ----------
    name : str
        The JupyterHub user name.
    prefix : str
        The account prefix (default ``jupyter-``).

    Returns
    -------
    str
        The system account name.
    """
    full = prefix + name
    if _NAME_OK.match(full) and len(full) <= _MAX_NAME:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    safe = re.sub(r"[^a-z0-9_-]", "-", name.lower())
    return f"{prefix}{safe[:_MAX_NAME - len(prefix) - 7]}-{digest}"


def ensure_account(username: str, homes_dir: Path) -> pwd.struct_passwd:
    """Create the system account ``username`` if it does not exist; make its home mode 0700.

    Parameters
    ----------
    username : str
        The system account (see :func:`system_username`).
    homes_dir : Path
        Where a new account's home is created (``homes_dir/username``). An existing account
        keeps its home.

    Returns
    -------
    pwd.struct_passwd
        The account.

    Raises
    ------
    GeomlError
        If ``useradd`` fails (e.g. not run as root).
    """
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        Path(homes_dir).mkdir(parents=True, exist_ok=True)
        home = Path(homes_dir) / username
        res = subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash",
                              "--user-group", "--comment", "geoml-hub user", username],
                             capture_output=True, text=True)
        if res.returncode != 0 and res.returncode != 9:  # 9: created meanwhile by another spawn
            raise GeomlError(f"could not create the system account {username}: {res.stderr.strip()}")
        entry = pwd.getpwnam(username)
    home = Path(entry.pw_dir)
    home.mkdir(parents=True, exist_ok=True)
    st = home.stat()
    if (st.st_uid, st.st_gid) != (entry.pw_uid, entry.pw_gid):
        os.chown(home, entry.pw_uid, entry.pw_gid)
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(home, 0o700)
    return entry


def reachable_by_others(path: Path) -> Optional[str]:
    """Why another account cannot open ``path`` (a directory or file), or ``None`` if it can.

    Every parent must be searchable by others (``o+x``) and ``path`` itself readable
    (``o+r``, and ``o+x`` for a directory).
    """
    path = Path(path).resolve()
    for p in [*reversed(path.parents), path]:
        mode = p.stat().st_mode
        need = stat.S_IXOTH if p != path or p.is_dir() else 0
        need |= stat.S_IROTH if p == path else 0
        if mode & need != need:
            return f"{p} is mode {stat.filemode(mode)}"
    return None


def writable_by_others(root: Path, limit: int = 100_000) -> List[Path]:
    """Files and directories under ``root`` that accounts other than their owner may write
    (group- or other-writable; the hub users' accounts are new, so they own nothing there).

    Parameters
    ----------
    root : Path
        The shared data root.
    limit : int
        Stop after this many entries (the answer is then a non-empty list if any was found).

    Returns
    -------
    list of Path
        At most 10 offending paths; empty when only root may write.
    """
    found: List[Path] = []
    seen = 0
    root = Path(root).resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [None, *filenames]:
            p = Path(dirpath) if name is None else Path(dirpath) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            seen += 1
            if stat.S_ISLNK(st.st_mode):
                continue
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                found.append(p)
                if len(found) >= 10:
                    return found
        if seen >= limit:
            break
    return found


def mount_read_only(source: Path, target: Path) -> None:
    """Bind-mount ``source`` read-only at ``target`` (created if needed).

    Raises
    ------
    GeomlError
        If the kernel refuses the mount (e.g. in an unprivileged container).
    """
    target.mkdir(parents=True, exist_ok=True)
    unmount(target)  # left over from an earlier start that was killed
    for cmd in (["mount", "--bind", str(source), str(target)],
                ["mount", "-o", "remount,bind,ro", str(target)]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            if cmd[1] == "-o":
                subprocess.run(["umount", str(target)], capture_output=True)
            raise GeomlError(f"could not mount the data root {source} read-only at {target}: {res.stderr.strip()} "
                             "(make it writable by root only, or run geoml-hub up as a normal user)")


def is_mounted(target: Path) -> bool:
    """Whether something is mounted at ``target`` (``/proc/self/mountinfo``; a bind mount from
    the same file system is one too, which ``os.path.ismount`` does not see)."""
    where = os.path.realpath(target)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")  # spaces are written \040
            if point == where:
                return True
    return False


def unmount(target: Path) -> None:
    """Undo :func:`mount_read_only` (nothing happens if ``target`` is not a mount point).

    Raises
    ------
    GeomlError
        If the mount stays.
    """
    while is_mounted(target):
        res = subprocess.run(["umount", str(target)], capture_output=True, text=True)
        if res.returncode != 0:
            raise GeomlError(f"could not unmount {target}: {res.stderr.strip()}")
