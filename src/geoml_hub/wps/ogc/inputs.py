"""Dataset names: how WPS inputs refer to data, and the checks that keep jobs inside it.

A WPS input names a dataset, never a server path:

``<root>/<path>``
    A file or directory inside a configured read-only data root, e.g.
    ``data/eurosat_ms`` or ``data/landsat7_chiapas/training_data.gtif``. In a user's
    notebook server the same root is mounted at ``~/<root>``, so the names match.
``workspace/<path>``
    Inside the writable workspace; ``workspace/<user>/...`` (where the workspace API and the
    web map save a user's files) only for that user or an admin when requests carry hub
    identities.
``results/<owner>/<job id>/<file>``
    Published outputs in the shared results area, readable by everyone.
``jobs/<job id>/<path>``
    An output of an earlier job of the same owner (or a published one), e.g.
    ``jobs/6f1c.../model.pt`` — how steps are chained.
``http(s)://...``
    A file fetched into the job's working directory (at most ``max_download_mb``). A URL
    of this server's own outputs is mapped to the job output without a download. Only
    public addresses are fetched: a host that resolves to a loopback, link-local, private,
    shared (carrier-grade NAT), multicast or reserved address, or a cluster-internal name
    (``localhost``, ``*.svc``, ``*.cluster.local``, ``*.internal``, ``*.local``), is refused,
    on the first request and on every redirect, unless the ``url_allow`` setting lists the
    host or a network holding the address (:class:`UrlPolicy`).

Absolute paths, ``..`` components, NUL bytes and symbolic links that lead out of a root
(other than into a read-only data root) are rejected with :class:`DatasetError` before anything is read.
"""

from __future__ import annotations

import http.client
import json
import ipaddress
import os
import re
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from ...errors import DataError
from ..jobs.store import store_for

_JOB_ID = re.compile(r"^[0-9a-fA-F-]{8,64}$")


class DatasetError(DataError):
    """A dataset name is malformed, outside the allowed roots, missing or not accessible."""


@dataclass
class Access:
    """Who asks: the owner name and whether they may read every job's outputs."""

    owner: str
    admin: bool = False


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def split_name(name: str) -> List[str]:
    """Split a dataset name into its components, rejecting anything that is not a plain
    relative name (absolute path, ``..``, ``.``, empty parts, NUL, backslash)."""
    if not isinstance(name, str) or not name.strip():
        raise DatasetError("empty dataset name")
    name = name.strip()
    if "\x00" in name or "\\" in name:
        raise DatasetError(f"dataset {name[:80]}: invalid character")
    if name.startswith("/") or name.startswith("~"):
        raise DatasetError(f"dataset {name[:80]}: give a dataset name such as data/eurosat_ms, not a server path")
    parts = name.split("/")
    if any(p in ("..", ".") for p in parts):
        raise DatasetError(f"dataset {name[:80]}: path traversal is not allowed")
    parts = [p for p in parts if p]
    return parts


def resolve(name: str, settings, access: Access, kind: str = "any", must_exist: bool = True,
            job_store=None) -> Path:
    """Resolve a dataset name (see the module docstring) to a real path on this server.

    Parameters
    ----------
    name : str
        The dataset name as given in the request.
    settings : geoml_hub.wps.settings.Settings
        Data roots, workspace and outputs directory.
    access : Access
        The requesting owner (``jobs/...`` names are checked against it).
    kind : {'any', 'file', 'dir'}
        What the dataset must be.
    must_exist : bool
        Raise if the path does not exist.
    job_store : JobStore, optional
        Used to check the owner of ``jobs/<id>`` datasets (default: the settings' database).

    Returns
    -------
    Path
        The resolved path, guaranteed to lie inside its root after following symbolic links.

    Raises
    ------
    DatasetError
        Malformed name, unknown root, traversal, a symbolic link out of the root, a job of
        another owner, a missing dataset or the wrong kind.
    """
    if is_url(name):
        local = own_output_path(name, settings)
        if local is None:
            raise DatasetError(f"dataset {name[:80]}: a URL must be fetched with fetch_url")
        name = local
    parts = split_name(name)
    root_name, rest = parts[0], parts[1:]
    if root_name == "workspace":
        root = settings.workspace_dir
        # workspace/<user>/... is that user's (the workspace API writes there): with hub
        # identities, other users' folders are not readable (admins read everything)
        if (settings.auth != "none" and len(rest) > 1 and rest[0] != access.owner and not access.admin
                and (root / rest[0]).is_dir()):
            raise DatasetError(f"dataset {name[:80]}: workspace/{rest[0]}/ belongs to another user")
    elif root_name == "results":
        root = settings.results_dir
    elif root_name == "jobs":
        if not rest or not _JOB_ID.match(rest[0]):
            raise DatasetError(f"dataset {name[:80]}: expected jobs/JOB_ID/FILE")
        if job_store is None:
            job_store = store_for(settings.database)
        job = job_store.get(rest[0])
        if job is None or not (access.admin or job.owner == access.owner or job.published):
            raise DatasetError(f"dataset {name[:80]}: no such job of user {access.owner}")
        if job.outputs_removed is not None:
            raise DatasetError(f"dataset {name[:80]}: the outputs of job {rest[0]} were removed by the retention policy")
        root = settings.outputs_dir / rest[0]
        rest = rest[1:]
    elif root_name in settings.data_roots:
        root = settings.data_roots[root_name]
    else:
        roots = ", ".join(sorted(list(settings.data_roots) + ["workspace", "results", "jobs"]))
        raise DatasetError(f"dataset {name[:80]}: unknown data root {root_name}; known roots: {roots}")
    root_real = Path(os.path.realpath(root))
    path = Path(os.path.realpath(root.joinpath(*rest)))
    # a symbolic link may lead into a read-only data root (e.g. workspace/scene.tif -> data/...),
    # never anywhere else
    inside = [root_real] + [Path(os.path.realpath(p)) for p in settings.data_roots.values()]
    if not any(_is_within(path, r) for r in inside):
        raise DatasetError(f"dataset {name[:80]}: leads outside its data root")
    if must_exist:
        if not path.exists():
            raise DatasetError(f"dataset {name[:80]} does not exist")
        if kind == "file" and not path.is_file():
            raise DatasetError(f"dataset {name[:80]} is not a file")
        if kind == "dir" and not path.is_dir():
            raise DatasetError(f"dataset {name[:80]} is not a directory")
    return path


def server_path_names(settings, extra=()) -> List[tuple]:
    """``(server path prefix, dataset name)`` pairs, longest prefix first: how messages and JSON
    outputs show server paths to users (``/srv/data/x.tif`` → ``data/x.tif``).

    Each path appears as the settings hold it (real, symbolic links resolved), as its real path,
    and as it was given where a symbolic link makes that differ (:meth:`Settings.path_aliases`):
    a data root reached through ``/srv/shared -> /mnt/disk1/shared`` is hidden in both spellings.
    """
    pairs = [(str(settings.outputs_dir), "jobs"), (str(settings.workspace_dir), "workspace"),
             (str(settings.results_dir), "results"), (str(settings.work_dir), "work"),
             (str(settings.state_dir), "state")]
    pairs += [(str(p), name) for name, p in settings.data_roots.items()] + list(extra)
    pairs += [(os.path.realpath(p), name) for p, name in pairs]
    aliases = settings.path_aliases() if hasattr(settings, "path_aliases") else {}
    for given, real in aliases.items():
        pairs += [(given + p[len(real):], name) for p, name in list(pairs) if p == real or p.startswith(real + os.sep)]
    return sorted(set(pairs), key=lambda t: -len(t[0]))


def allowed_roots(settings, access: Access, job_store=None) -> List[Path]:
    """Real paths a job of ``access.owner`` may read: data roots, the workspace and the
    outputs of the owner's jobs (all outputs for admins)."""
    roots = [Path(os.path.realpath(p)) for p in settings.data_roots.values()]
    roots.append(Path(os.path.realpath(settings.workspace_dir)))
    roots.append(Path(os.path.realpath(settings.results_dir)))
    if access.admin:
        roots.append(Path(os.path.realpath(settings.outputs_dir)))
    else:
        if job_store is None:
            job_store = store_for(settings.database)
        for job in job_store.list(owner=access.owner):
            roots.append(Path(os.path.realpath(settings.outputs_dir / job.uuid)))
        roots += [Path(os.path.realpath(settings.outputs_dir / j.uuid)) for j in job_store.list() if j.published]
    return roots


def check_paths(paths: Iterable, roots: List[Path], what: str) -> None:
    """Raise :class:`DatasetError` if any path (e.g. the files a manifest lists) lies outside ``roots``."""
    for p in paths:
        real = Path(os.path.realpath(p))
        if not any(_is_within(real, r) for r in roots):
            raise DatasetError(f"{what} lists {Path(p).name}, which lies outside the allowed data roots")


def is_url(name: str) -> bool:
    return isinstance(name, str) and name.strip().lower().startswith(("http://", "https://"))


def own_output_path(url: str, settings) -> Optional[str]:
    """``jobs/<id>/<file>`` for a URL of this server's outputs, else ``None``."""
    base = settings.outputs_url.rstrip("/") + "/"
    url = url.strip()
    if not url.startswith(base):
        return None
    rest = urllib.parse.unquote(url[len(base):].split("?", 1)[0])
    return "jobs/" + rest


#: Host names that name cluster-internal or local services, refused without a DNS look-up.
INTERNAL_NAMES = ("localhost", ".localhost", ".svc", ".cluster.local", ".internal", ".local", ".localdomain")


def _address_rule(ip) -> Optional[str]:
    """The rule an address breaks (``'a loopback address'``, ...), or ``None`` for a public one."""
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    for test, rule in (("is_loopback", "a loopback address"), ("is_link_local", "a link-local address"),
                       ("is_unspecified", "an unspecified address"), ("is_multicast", "a multicast address"),
                       ("is_private", "a private address"), ("is_reserved", "a reserved address")):
        if getattr(ip, test):
            return rule
    if not ip.is_global:
        return "a non-public address (e.g. shared or cluster-internal)"
    return None


@dataclass
class UrlPolicy:
    """Which hosts URL inputs may be fetched from.

    Parameters
    ----------
    allow : sequence of str
        The ``url_allow`` setting: host names (``data.example.org``; ``.example.org`` for the
        domain and every host under it) and IP networks or addresses (``10.1.0.0/16``,
        ``127.0.0.1``, ``fd00::/8``) that may be fetched although they are not public.
    """

    allow: Sequence[str] = ()
    hosts: List[str] = field(init=False, default_factory=list)
    networks: List = field(init=False, default_factory=list)

    def __post_init__(self):
        for item in self.allow:
            item = str(item).strip().lower()
            if not item:
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.hosts.append(item.rstrip("."))

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == h or (h.startswith(".") and (host.endswith(h) or host == h[1:])) for h in self.hosts)

    def check(self, host: str, port: int) -> List[tuple]:
        """The addresses (``socket.getaddrinfo`` tuples) to connect to for ``host``.

        Raises
        ------
        DatasetError
            If the host is cluster-internal by name, does not resolve, or resolves to an
            address that is not public and not allowed.
        """
        name = (host or "").lower().rstrip(".").strip("[]")
        allowed_host = self.host_allowed(name)
        if not allowed_host and (name == "localhost" or name.endswith(INTERNAL_NAMES)):
            raise DatasetError(f"host {name} is a cluster-internal or local name; the WPS fetches only public "
                               "hosts (an admin may allow it with url_allow)")
        try:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise DatasetError(f"host {name} does not resolve: {exc.strerror}") from None
        if allowed_host:
            return infos
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            rule = _address_rule(ip)
            if rule and not any(ip in net for net in self.networks if net.version == ip.version):
                shown = name if name == str(ip) else f"{name} ({ip})"
                raise DatasetError(f"host {shown} is {rule}; the WPS fetches only public addresses "
                                   "(an admin may allow the host or network with url_allow)")
        return infos


def _guarded_connection(policy: UrlPolicy):
    """A ``create_connection`` for :mod:`http.client` that connects only to addresses the policy
    passed, after resolving the host itself (no second look-up that could answer differently)."""

    def create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
        host, port = address
        last = None
        for family, kind, proto, _, sockaddr in policy.check(host, port):
            sock = socket.socket(family, kind, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last or OSError(f"cannot connect to {host}")

    return create_connection


def url_opener(policy: UrlPolicy) -> urllib.request.OpenerDirector:
    """An opener for http and https only (redirects followed, each checked), no proxies, no
    other schemes, whose every connection goes through :meth:`UrlPolicy.check`."""
    connect = _guarded_connection(policy)

    class Http(http.client.HTTPConnection):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self._create_connection = connect

    class Https(http.client.HTTPSConnection):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self._create_connection = connect

    class HttpHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(Http, req)

    class HttpsHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(Https, req, context=self._context)

    opener = urllib.request.OpenerDirector()
    for handler in (HttpHandler(), HttpsHandler(), urllib.request.HTTPRedirectHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
                    urllib.request.UnknownHandler()):
        opener.add_handler(handler)
    return opener


def fetch_url(url: str, workdir: Path, max_mb: float, timeout: float = 60.0,
              policy: Optional[UrlPolicy] = None) -> Path:
    """Download ``url`` into ``workdir`` (at most ``max_mb`` MiB), atomically.

    Parameters
    ----------
    policy : UrlPolicy, optional
        The hosts that may be fetched (default: public addresses only). It is applied to the
        URL and to every redirect.

    Raises
    ------
    DatasetError
        If the scheme is not http(s), the host is not public and not allowed (also after a
        redirect), the server answers with an error, or the file is larger than ``max_mb``.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise DatasetError(f"input URL {url[:80]}: only http and https are allowed")
    policy = policy or UrlPolicy()
    name = os.path.basename(parsed.path) or "download"
    name = re.sub(r"[^\w.\-]", "_", name)[:100]
    workdir.mkdir(parents=True, exist_ok=True)
    dest = workdir / name
    limit = int(max_mb * 1024 * 1024)
    fd, tmp = tempfile.mkstemp(prefix=".download-", dir=workdir)
    try:
        with os.fdopen(fd, "wb") as out, url_opener(policy).open(url, timeout=timeout) as resp:
            size = int(resp.headers.get("Content-Length") or 0)
            if size > limit:
                raise DatasetError(f"input URL {url[:80]}: {size / 2**20:.0f} MiB is over the {max_mb:g} MiB limit")
            copied = 0
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                copied += len(chunk)
                if copied > limit:
                    raise DatasetError(f"input URL {url[:80]}: larger than the {max_mb:g} MiB limit")
                out.write(chunk)
        os.replace(tmp, dest)
    except urllib.error.HTTPError as exc:
        raise DatasetError(f"input URL {url[:80]}: the server answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DatasetError(f"input URL {url[:80]}: {exc.reason}") from None
    except DatasetError as exc:  # the policy refused the host (of the URL or of a redirect)
        if str(exc).startswith("input URL"):
            raise
        raise DatasetError(f"input URL {url[:80]}: {exc}") from None
    except OSError as exc:
        raise DatasetError(f"input URL {url[:80]}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def tree_size(path: Path) -> int:
    """Bytes (apparent sizes) of the files under ``path`` (0 if it does not exist); symbolic links
    are not followed."""
    total = 0
    stack = [str(path)]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        pass
        except NotADirectoryError:
            try:
                total += os.lstat(top).st_size
            except OSError:
                pass
        except OSError:
            pass
    return total


def user_storage(settings, store, owner: str, exclude: Iterable[str] = ()) -> int:
    """Bytes of storage ``owner`` uses: the outputs of their jobs (not yet removed by the retention
    policy) and their workspace folder (``workspace/<owner>``); jobs in ``exclude`` are left out."""
    skip = set(exclude)
    total = tree_size(settings.workspace_dir / owner) if owner else 0
    for job in store.list(owner=owner):
        if job.uuid in skip or job.outputs_removed is not None:
            continue
        total += tree_size(settings.job_outputs(job.uuid))
    return total


def mib(n: float) -> str:
    """``12.3 MB`` (MiB) for a byte count."""
    return f"{n / 2**20:.1f} MB"


def share_outputs(source: Path, target: Path, info: dict) -> Path:
    """Publish a job's output directory as ``target`` in the shared results area: files are
    hard-linked (copied across file systems) into a temporary directory that is renamed into
    place, with ``job.json`` describing the job."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for src in sorted(source.rglob("*")):
            dest = tmp / src.relative_to(source)
            if src.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dest)
            except OSError:
                shutil.copy2(src, dest)
        (tmp / "job.json").write_text(json.dumps(info, indent=1) + "\n")
        os.chmod(tmp, 0o755)
        remove_tree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def remove_tree(path: Path) -> None:
    """Remove a file or directory tree if it exists (errors ignored)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        try:
            path.unlink()
        except OSError:
            pass
