"""``geoml-hub up`` and ``geoml-hub down``: the whole platform on one machine.

``up`` writes the hub configuration into a state directory, starts JupyterHub (which
starts configurable-http-proxy, the WPS service and the idle culler), creates the first
admin on the first start (a generated password in ``STATE/admin_password``, mode 0600),
prints the URL and how to log in, and waits. Ctrl-C (or ``geoml-hub down`` from another
shell) stops JupyterHub and, at the same moment, the proxy, the services and the user
servers (SIGINT, as JupyterHub would send them one after the other); then every process
still left of the hub's process tree (a kernel, a WPS job worker) gets SIGTERM and finally
SIGKILL, so nothing is orphaned and stopping takes at most about 8 s
(:func:`geoml_hub.web.proctree.stop_tree`).

Two modes, chosen by the account that runs it (docs/security.md):

- **as root** (the default on a shared machine): each hub user gets their own system account
  ``jupyter-<name>`` (:mod:`geoml_hub.hub.accounts`); the state directory with every secret
  and database stays mode 0700 (root only); published results go to ``PUBLIC/results``
  (readable, written only by the WPS); the data root must be writable by root only, or it is
  bind-mounted read-only at ``PUBLIC/data``. ``--single-account`` turns this off.
- **as a normal user**: every server runs as that one account, so users can read each
  other's files and the hub's secrets; for one person or trusted colleagues. It says so at
  start-up.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Optional, Tuple

import requests

from ..errors import GeomlError, ParameterError
from ..web.proctree import alive, process_start_ticks, stop_tree
from ..web.vendor import find_vendor
from . import accounts
from .config import find_notebooks, public_url
from .profiles import ProfileError, load_profiles

DEFAULT_STATE = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "geoml-hub" / "hub"
#: as root: where the users' accounts get their homes, and what they share (results, data)
DEFAULT_HOMES = Path("/home")
DEFAULT_PUBLIC = Path("/srv/geoml-hub")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chp() -> str:
    """The configurable-http-proxy executable: ``$GEOML_CHP``, ``node_modules/.bin`` of the
    repository or the current directory (``npm install``, see the README), or ``PATH``.

    Raises
    ------
    GeomlError
        If none is found.
    """
    env = os.environ.get("GEOML_CHP")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[3]
    candidates += [repo / "node_modules" / ".bin" / "configurable-http-proxy",
                   Path.cwd() / "node_modules" / ".bin" / "configurable-http-proxy"]
    for c in candidates:
        if c.exists():
            return str(c)
    found = shutil.which("configurable-http-proxy")
    if found:
        return found
    raise GeomlError("configurable-http-proxy not found: run `npm install` in the repository (see the README) "
                     "or set GEOML_CHP")


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)


# -- up ----------------------------------------------------------------------------------------------
def prepare(state_dir: Path, port: int = 8000, ip: str = "127.0.0.1", data_root: Optional[Path] = None,
            cull_timeout: int = 3600, cull_every: int = 60, authenticator: str = "native",
            admin_user: str = "admin", profiles_file: Optional[Path] = None,
            extra_config: Optional[Path] = None, wps_parallel: int = 2, single_account: bool = False,
            homes_dir: Path = DEFAULT_HOMES, public_dir: Path = DEFAULT_PUBLIC) -> Dict:
    """Write ``up.json``, ``jupyterhub_config.py`` and the proxy token into ``state_dir``.

    As root (and without ``single_account``) users get system accounts with homes in
    ``homes_dir``; ``public_dir`` holds what they share (``results/``, and ``data/`` when the
    data root has to be mounted read-only). Raises ``ParameterError`` for a bad option, e.g.
    a Python environment or data root the users' accounts could not read.
    """
    state = Path(state_dir).expanduser().resolve()
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    if data_root is not None:
        data_root = Path(data_root).expanduser().resolve()
        if not data_root.is_dir():
            raise ParameterError(f"--data-root: no such directory {data_root}")
    system_users = os.geteuid() == 0 and not single_account
    data_mount = None
    if system_users:
        homes_dir, public_dir = Path(homes_dir).resolve(), Path(public_dir).resolve()
        if state == public_dir or public_dir in state.parents or state in public_dir.parents:
            raise ParameterError(f"--public-dir {public_dir} must lie outside the state directory {state}")
        server = Path(sys.executable).parent / "jupyterhub-singleuser"
        for path in (server, Path(os.path.realpath(sys.executable))):
            why = accounts.reachable_by_others(path) if path.exists() else None
            if why:
                raise ParameterError(f"the users' accounts cannot run this Python environment: {why} (make the "
                                     "venv from a Python others may read, e.g. Debian's /usr/bin/python3 -m venv; "
                                     "or pass --single-account)")
        if data_root is not None:
            why = accounts.reachable_by_others(data_root)
            if why:
                raise ParameterError(f"--data-root: the users' accounts cannot read it ({why})")
            if accounts.writable_by_others(data_root):
                data_mount = str(public_dir / "data")
        for d in (public_dir, public_dir / "results"):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o755)
    for what, path in (("--profiles", profiles_file), ("--config", extra_config)):
        if path is not None and not Path(path).is_file():
            raise ParameterError(f"{what}: no such file {path}")
    try:
        load_profiles(profiles_file)  # a bad file fails here, not when the first user opens the form
    except ProfileError as exc:
        raise ParameterError(str(exc)) from None
    if authenticator not in ("native", "generic-oauth"):
        raise ParameterError(f"--authenticator must be native or generic-oauth, got {authenticator!r}")
    if authenticator == "generic-oauth" and extra_config is None:
        raise ParameterError("--authenticator generic-oauth needs --config FILE with the GenericOAuthenticator settings")
    token = state / "proxy_token"
    if not token.exists():
        _write_secret(token, secrets.token_hex(32))
    settings = {
        "state_dir": str(state), "port": port, "ip": ip, "hub_port": free_port(), "proxy_api_port": free_port(),
        "wps_port": free_port(), "map_port": free_port(), "data_root": str(data_root) if data_root else None,
        "cull_timeout": cull_timeout, "cull_every": cull_every, "authenticator": authenticator,
        "admin_user": admin_user, "profiles_file": str(Path(profiles_file).resolve()) if profiles_file else None,
        "extra_config": str(Path(extra_config).resolve()) if extra_config else None, "chp": find_chp(),
        "wps_parallel": wps_parallel, "map_vendor": str(find_vendor()),
        "system_users": system_users, "homes_dir": str(homes_dir) if system_users else None,
        "public_dir": str(public_dir) if system_users else None, "data_mount": data_mount,
        "notebooks_dir": str(find_notebooks() or "") or None,
    }
    (state / "up.json").write_text(json.dumps(settings, indent=1) + "\n")
    (state / "jupyterhub_config.py").write_text(
        "# written by geoml-hub up; edit up.json or pass --config EXTRA.py instead\n"
        "from geoml_hub.hub.config import configure\n\n"
        f"configure(c, {str(state / 'up.json')!r})  # noqa: F821\n")
    return settings


def _get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GeomlError(f"JupyterHub exited with status {proc.returncode}; see {log}")
        if _get(url + "/hub/api") == 200 and _get(url + "/services/wps/health") == 200:
            return
        time.sleep(0.3)
    raise GeomlError(f"JupyterHub did not answer at {url} within {timeout:.0f} s; see {log}")


def create_admin(url: str, state: Path, admin_user: str) -> Optional[str]:
    """On the first start: sign the admin up (NativeAuthenticator authorizes admin users at
    sign-up) with a generated password, stored in ``STATE/admin_password`` (0600)."""
    pw_file = state / "admin_password"
    if pw_file.exists():
        return None
    password = secrets.token_urlsafe(15)
    with requests.Session() as s:
        s.get(url + "/hub/signup", timeout=30)
        xsrf = s.cookies.get("_xsrf", "")
        r = s.post(url + "/hub/signup", data={"username": admin_user, "signup_password": password,
                                              "signup_password_confirmation": password, "_xsrf": xsrf},
                   timeout=30)
        r.raise_for_status()
        ok = s.post(url + "/hub/login?next=", data={"username": admin_user, "password": password,
                                                    "_xsrf": s.cookies.get("_xsrf", xsrf)},
                    timeout=30, allow_redirects=False)
        if ok.status_code not in (302, 303):
            raise GeomlError(f"could not create the admin user {admin_user} (login after sign-up: {ok.status_code})")
    _write_secret(pw_file, password)
    return password


def mode_line(s: Dict) -> str:
    """How users are kept apart, as ``geoml-hub up`` prints it at start-up."""
    if s.get("system_users"):
        return (f"multi-user: each user's server runs as their own account jupyter-<name> (homes in "
                f"{s['homes_dir']}, mode 0700); shared results in {s['public_dir']}/results")
    return (f"single-account: every user's server runs as {getpass.getuser()!r} and can read the others' "
            "files and the hub's secrets; for one person or trusted colleagues (run as root for one "
            "account per user, docs/security.md)")


def _release(s: Dict) -> None:
    if s.get("data_mount"):
        accounts.unmount(Path(s["data_mount"]))


def pid_file(state: Path) -> Path:
    return state / "up.pid"


def running(state: Path) -> Optional[Tuple[int, int]]:
    """``(pid, start ticks)`` of the JupyterHub of ``state`` if it runs."""
    f = pid_file(state)
    if not f.exists():
        return None
    try:
        pid, ticks = (int(v) for v in f.read_text().split())
    except ValueError:
        return None
    return (pid, ticks) if alive(pid, ticks) else None


def up(state_dir: Path = DEFAULT_STATE, foreground: bool = True, **options) -> int:
    """Start the platform (see the module docstring); with ``foreground`` wait until Ctrl-C."""
    state = Path(state_dir).expanduser().resolve()
    if state.exists() and running(state):
        raise GeomlError(f"geoml-hub is already running with state {state}: geoml-hub down --state-dir {state}")
    s = prepare(state, **options)
    url = public_url(s)
    if s["data_mount"]:
        accounts.mount_read_only(Path(s["data_root"]), Path(s["data_mount"]))
    log = state / "hub.log"
    env = dict(os.environ)
    env["GEOML_HUB_STATE"] = str(state)
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyterhub"), "-f",
                                 str(state / "jupyterhub_config.py")], cwd=state, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    ticks = process_start_ticks(proc.pid)
    pid_file(state).write_text(f"{proc.pid} {ticks}\n")
    try:
        wait_ready(url, proc, log)
        password = create_admin(url, state, s["admin_user"]) if s["authenticator"] == "native" else None
    except BaseException:
        stop_tree(proc.pid, ticks)
        _release(s)
        pid_file(state).unlink(missing_ok=True)
        raise
    print(f"geoml-hub is running at {url}/", flush=True)
    print("  " + mode_line(s))
    if s["authenticator"] == "native":
        print(f"  log in as {s['admin_user']!r} with the password in {state / 'admin_password'} (mode 0600)"
              + (" (created now)" if password else ""))
        print(f"  new users sign up at {url}/hub/signup; the admin approves them at {url}/hub/authorize")
    print(f"  map: {url}/services/map/   WPS: {url}/services/wps/wps")
    print(f"  state: {state}   log: {log}")
    print("  stop with Ctrl-C or: geoml-hub down" + (f" --state-dir {state}" if state != DEFAULT_STATE else ""),
          flush=True)
    if not foreground:
        return 0
    stop = {"now": False}

    def _stop(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop["now"] and proc.poll() is None:
        time.sleep(0.3)
    print("stopping geoml-hub ...", flush=True)
    stop_tree(proc.pid, ticks)
    _release(s)
    pid_file(state).unlink(missing_ok=True)
    print("stopped", flush=True)
    return 0


def down(state_dir: Path = DEFAULT_STATE) -> int:
    """Stop the platform started with ``state_dir`` (every process of it)."""
    state = Path(state_dir).expanduser().resolve()
    r = running(state)
    if r is None:
        print(f"geoml-hub is not running (state {state})")
        pid_file(state).unlink(missing_ok=True)
        return 0
    stop_tree(*r)
    settings = state / "up.json"
    if settings.exists():
        _release(json.loads(settings.read_text()))
    pid_file(state).unlink(missing_ok=True)
    print("stopped")
    return 0

