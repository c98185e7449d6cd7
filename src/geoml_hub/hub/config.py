"""The JupyterHub configuration of ``geoml-hub up`` (one machine).

``geoml-hub up`` writes ``STATE/jupyterhub_config.py``, which calls :func:`configure`
with the settings in ``STATE/up.json``. What it sets up:

- JupyterHub with configurable-http-proxy (from the npm registry), state in ``STATE``
  (SQLite database, cookie secret, proxy token);
- authentication: jupyterhub-nativeauthenticator (hashed passwords in the hub database,
  sign-up plus admin approval), or OAuth2 (GenericOAuthenticator) from an extra config file;
- :class:`geoml_hub.hub.spawner.GeomlLocalSpawner` with the profiles of ``profiles.yaml``,
  with ``system_users`` (as root) each user's server runs as their own account
  ``jupyter-<name>`` with its home in ``homes_dir``, else as the hub's account with its home in
  ``STATE/users/<name>``; either way with ``~/data`` (the shared data, read-only) and
  ``~/results`` (published results of everyone, see :func:`shared_results`);
- the WPS server as the hub-managed service ``wps`` at ``/services/wps/``, authenticating
  every request with the hub (``geoml-hub wps serve --auth jupyterhub``);
- the web map as the service ``map`` at ``/services/map/`` (``geoml-hub map serve --auth
  jupyterhub``), whose users' OAuth tokens may call the WPS (``access:services!service=wps``);
- jupyterhub-idle-culler as the service ``idle-culler`` (off with ``cull_timeout = 0``);
- the example notebooks (:func:`find_notebooks`) copied into each user's ``~/notebooks`` before
  every spawn, only those missing (a user's edits are kept).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional

from .services import Culler, Service, hub_services

#: Scopes of ``JUPYTERHUB_API_TOKEN`` in a user's server: what JupyterHub gives by default plus
#: access to the geoml-hub services and the user's own name and groups (for the WPS owner).
SERVER_TOKEN_SCOPES = ["users:activity!user", "access:servers!user", "access:services",
                       "read:users:name!user", "read:users:groups!user"]

#: Options of every user server, on one machine and on Kubernetes: a busy kernel counts as
#: activity for the idle culler (:mod:`geoml_hub.hub.busy_activity`).
SERVER_ARGS = ['--ServerApp.jpserver_extensions={"geoml_hub.hub.busy_activity": True}']


def load(path) -> Dict:
    return json.loads(Path(path).read_text())


def _bin(name: str) -> str:
    """A console script of this Python environment (the venv's ``bin``), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def public_url(s: Dict) -> str:
    host = s["ip"] if s["ip"] not in ("", "0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{s['port']}"


def shared_results(s: Dict) -> Path:
    """Where the WPS publishes results for everyone: ``PUBLIC/results`` with system accounts
    (outside the 0700 state directory, readable by the users' accounts), else
    ``STATE/wps/results``."""
    if s.get("system_users"):
        return Path(s["public_dir"]) / "results"
    return Path(s["state_dir"]) / "wps" / "results"


def user_data(s: Dict):
    """What ``~/data`` points to: the read-only mount of the data root when there is one."""
    return s.get("data_mount") or s.get("data_root")


#: the example notebooks a user finds in ``~/notebooks`` (from :func:`find_notebooks`)
NOTEBOOK_FILES = ("*.ipynb", "wps_quickstart.py")


def find_notebooks() -> Optional[Path]:
    """The example notebooks ``geoml-hub up`` copies into each user's ``~/notebooks``:
    ``$GEOML_NOTEBOOKS``, else the repository's ``notebooks/`` (a source checkout, an editable
    install), else ``share/geoml-hub/notebooks`` of the Python environment (where a wheel
    installs them, pyproject.toml's ``data-files``); ``None`` if there are none."""
    env = os.environ.get("GEOML_NOTEBOOKS")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[3] / "notebooks",
                   Path(sys.prefix) / "share" / "geoml-hub" / "notebooks"]
    for c in candidates:
        if c.is_dir() and any(c.glob("*.ipynb")):
            return c.resolve()
    return None


def copy_notebooks(source: Path, home: Path, uid: int, gid: int) -> List[str]:
    """Copy the example notebooks of ``source`` into ``home/notebooks`` (created if missing),
    owned by ``uid:gid``; only files that are not there: a user's edited copy is never
    overwritten (a deleted one comes back). Returns the names copied.

    As root the home belongs to the user's account: nothing is followed through a link the
    user made (``~/notebooks`` a symlink: nothing is copied), and files are created, never
    opened for writing if they exist (``O_EXCL | O_NOFOLLOW``).
    """
    files = sorted({f for pattern in NOTEBOOK_FILES for f in source.glob(pattern) if f.is_file()})
    if not files:
        return []
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    home_fd = os.open(home, flags)
    copied = []
    try:
        try:
            os.mkdir("notebooks", 0o755, dir_fd=home_fd)
            os.chown("notebooks", uid, gid, dir_fd=home_fd, follow_symlinks=False)
        except FileExistsError:
            pass
        try:
            dir_fd = os.open("notebooks", flags, dir_fd=home_fd)
        except OSError:  # a link or a file of the user's: leave it alone
            return []
        try:
            for f in files:
                try:
                    fd = os.open(f.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "wb") as out:
                    os.fchown(out.fileno(), uid, gid)
                    out.write(f.read_bytes())
                copied.append(f.name)
        finally:
            os.close(dir_fd)
    finally:
        os.close(home_fd)
    return copied


def make_pre_spawn_hook(s: Dict):
    data_root = user_data(s)
    results = shared_results(s)
    notebooks = s.get("notebooks_dir")

    def pre_spawn_hook(spawner):
        """Create the user's home with ``~/data`` and ``~/results`` links and the example
        notebooks in ``~/notebooks`` (idempotent; see :func:`copy_notebooks`)."""
        home = Path(spawner.home_dir)
        home.mkdir(parents=True, exist_ok=True)
        owner = home.stat()
        if notebooks and Path(notebooks).is_dir():
            try:
                copied = copy_notebooks(Path(notebooks), home, owner.st_uid, owner.st_gid)
            except OSError as exc:  # a missing notebook must not keep the server from starting
                spawner.log.warning("Could not copy the example notebooks into %s: %s", home, exc)
            else:
                if copied:
                    spawner.log.info("Copied %d example notebooks into %s/notebooks", len(copied), home)
        for name, target in (("data", data_root), ("results", results)):
            if not target:
                continue
            link = home / name
            if link.is_symlink() and os.readlink(link) == str(target):
                continue
            if link.is_symlink():
                link.unlink()
            if not link.exists():
                Path(target).mkdir(parents=True, exist_ok=True)
                link.symlink_to(target, target_is_directory=True)
                os.lchown(link, owner.st_uid, owner.st_gid)

    return pre_spawn_hook


def configure(c, settings_path) -> None:
    """Fill the JupyterHub config object ``c`` from ``up.json``."""
    s = load(settings_path)
    state = Path(s["state_dir"])
    url = public_url(s)

    # -- hub, proxy, state -------------------------------------------------------------------------
    c.JupyterHub.ip = s["ip"]
    c.JupyterHub.port = s["port"]
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = s["hub_port"]
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.cleanup_proxy = True
    c.ConfigurableHTTPProxy.command = [s["chp"]]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s['proxy_api_port']}"
    c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
    c.ConfigurableHTTPProxy.auth_token = (state / "proxy_token").read_text().strip()
    c.JupyterHub.public_url = url + "/"

    # -- authentication ---------------------------------------------------------------------------
    c.Authenticator.admin_users = {s["admin_user"]}
    if s["authenticator"] == "native":
        import nativeauthenticator

        c.JupyterHub.authenticator_class = "geoml_hub.hub.auth.NativeAuthenticator"
        c.JupyterHub.template_paths = [str(Path(nativeauthenticator.__file__).parent / "templates")]
        native = c.NativeAuthenticator
        native.open_signup = False           # an admin approves every new user
        native.minimum_password_length = 10
        native.check_common_password = True
        native.allowed_failed_logins = 10
        native.seconds_before_next_try = 60
        c.Authenticator.allow_all = True                    # approval is the gate
    elif s["authenticator"] == "generic-oauth":
        # client id/secret, URLs and allowed users come from the extra config file
        c.JupyterHub.authenticator_class = "generic-oauth"
    else:
        raise ValueError(f"unknown authenticator {s['authenticator']!r}")

    # -- user servers -----------------------------------------------------------------------------
    c.JupyterHub.spawner_class = "geoml_hub.hub.spawner.GeomlLocalSpawner"
    if s.get("profiles_file"):
        c.GeomlLocalSpawner.profiles_file = s["profiles_file"]
    c.Spawner.cmd = [_bin("jupyterhub-singleuser")]
    c.Spawner.default_url = "/lab"
    c.Spawner.notebook_dir = "~"
    c.SimpleLocalProcessSpawner.home_dir_template = str(state / "users" / "{username}")
    if s.get("system_users"):
        # root: every user's server and kernels run as their own account jupyter-<name>
        c.GeomlLocalSpawner.system_users = True
        c.GeomlLocalSpawner.system_homes_dir = s["homes_dir"]
    c.Spawner.start_timeout = 120
    c.Spawner.http_timeout = 60
    args = list(SERVER_ARGS)
    if os.geteuid() == 0 and not s.get("system_users"):
        args.append("--allow-root")  # one account, root; JupyterLab refuses otherwise
    c.Spawner.args = args
    c.Spawner.server_token_scopes = SERVER_TOKEN_SCOPES
    c.Spawner.environment = {
        "GEOML_WPS_URL": url + "/services/wps",
        "GEOML_DATA": "~/data",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    c.Spawner.pre_spawn_hook = make_pre_spawn_hook(s)

    # -- services, roles and the idle culler: geoml_hub.hub.services, as the chart's ------------------
    wps_state = state / "wps"
    wps_cmd = [_bin("geoml-hub"), "wps", "serve", "--auth", "jupyterhub", "--host", "127.0.0.1",
               "--port", str(s["wps_port"]), "--state-dir", str(wps_state), "--url", url + "/services/wps",
               "--parallel", str(s.get("wps_parallel", 2)), "--shared-results", str(shared_results(s))]
    if s.get("data_root"):
        wps_cmd += ["--data-root", f"data={s['data_root']}"]
    omp = os.environ.get("OMP_NUM_THREADS")
    wps = Service(url=f"http://127.0.0.1:{s['wps_port']}", command=wps_cmd,
                  environment={"OMP_NUM_THREADS": omp} if omp else {})
    web_map = None
    map_port = s.get("map_port")
    if map_port:
        map_cmd = [_bin("geoml-hub"), "map", "serve", "--auth", "jupyterhub", "--host", "127.0.0.1",
                   "--port", str(map_port), "--url", url + "/services/map",
                   "--wps-url", f"http://127.0.0.1:{s['wps_port']}/services/wps",
                   "--wps-public-url", url + "/services/wps", "--cache-dir", str(state / "map-cache")]
        if s.get("data_root"):
            map_cmd += ["--data-root", f"data={s['data_root']}"]
        web_map = Service(url=f"http://127.0.0.1:{map_port}", command=map_cmd,
                          environment={"GEOML_MAP_VENDOR": s["map_vendor"]} if s.get("map_vendor") else {})
    culler = Culler(timeout=int(s.get("cull_timeout", 0)), every=int(s.get("cull_every", 60)))
    hub = hub_services(wps=wps, map=web_map, culler=culler)
    if hub.activity_interval is not None:
        c.JupyterHub.last_activity_interval = hub.activity_interval
        c.Spawner.environment["JUPYTERHUB_ACTIVITY_INTERVAL"] = str(hub.activity_interval)
    c.JupyterHub.services = hub.services
    c.JupyterHub.load_roles = hub.roles

    extra = s.get("extra_config")
    if extra:
        # an admin's own settings (e.g. GenericOAuthenticator) win over everything above
        code = compile(Path(extra).read_text(), str(extra), "exec")
        exec(code, {"c": c, "__file__": str(extra)})  # noqa: S102
