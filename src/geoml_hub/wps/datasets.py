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
    of this server's own outputs is mapped to the job output without a download.

Absolute paths, ``..`` components, NUL bytes and symbolic links that lead out of a root
(other than into a read-only data root) are rejected with :class:`DatasetError` before anything is read.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

from ..errors import DataError

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
            from .jobs import store_for
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
            from .jobs import store_for
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


def fetch_url(url: str, workdir: Path, max_mb: float, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``workdir`` (at most ``max_mb`` MiB), atomically.

    Raises
    ------
    DatasetError
        If the scheme is not http(s), the server answers with an error, or the file is
        larger than ``max_mb``.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise DatasetError(f"input URL {url[:80]}: only http and https are allowed")
    name = os.path.basename(parsed.path) or "download"
    name = re.sub(r"[^\w.\-]", "_", name)[:100]
    workdir.mkdir(parents=True, exist_ok=True)
    dest = workdir / name
    limit = int(max_mb * 1024 * 1024)
    fd, tmp = tempfile.mkstemp(prefix=".download-", dir=workdir)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
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
    except OSError as exc:
        raise DatasetError(f"input URL {url[:80]}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def share_outputs(source: Path, target: Path, info: dict) -> Path:
    """Publish a job's output directory as ``target`` in the shared results area: files are
    hard-linked (copied across file systems) into a temporary directory that is renamed into
    place, with ``job.json`` describing the job."""
    import json

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
