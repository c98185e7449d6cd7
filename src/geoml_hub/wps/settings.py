"""Settings of the geoml-hub WPS server and the PyWPS configuration generated from them.

One INI file configures the server. Its ``[geoml]`` section holds our settings; any
other section (``[server]``, ``[logging]``, ``[processing]``, ...) is passed to PyWPS
as it is and overrides what we generate. Example::

    [geoml]
    state_dir = /var/lib/geoml-hub/wps
    data_roots = data=/srv/shared/data
    database = postgresql://wps@db/wps
    parallelprocesses = 2
    maxprocesses = 30
    retention_hours = 168
    job_retries = 1
    url = https://hub.example.org/services/wps

Everything the server writes lives under ``state_dir``: ``pywps.cfg`` (generated),
``log.sqlite`` (the logging database unless ``database`` names another one),
``outputs/`` (status documents and job outputs, served at ``<url>/outputs/``),
``work/`` (working directories of running jobs), ``workspace/`` (the writable
workspace data root) and ``logs/`` (one log file per async job).
"""

from __future__ import annotations

import configparser
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from pywps import configuration

from ..errors import ParameterError
from ..fileio import write_text
from .jobs.store import install_request_log
from .ogc.inputs import UrlPolicy

#: Names that data-root names may not take: they are dataset prefixes with their own meaning.
RESERVED_ROOTS = ("jobs", "workspace", "results", "http", "https", "file")

ENV_SETTINGS = "GEOML_WPS_SETTINGS"

#: The processes that run as Kubernetes Jobs by default (those that may are marked in the process
#: registry, :func:`geoml_hub.processes.kubernetes_capable`).
KUBERNETES_PROCESSES = ("train_model", "classify_scene")


@dataclass
class Settings:
    """Resolved server settings.

    Attributes
    ----------
    state_dir : Path
        Directory for everything the server writes (created on start).
    data_roots : dict of str to Path
        Read-only data roots by name; a dataset ``data/eurosat_ms`` is ``eurosat_ms``
        inside the root named ``data``.
    database : str
        SQLAlchemy URL of the logging and job database. Default: a SQLite file
        ``state_dir/log.sqlite`` (never ``:memory:``, which breaks async jobs).
    parallelprocesses : int
        Jobs that run at the same time (worker processes).
    maxprocesses : int
        Jobs that may wait in the queue; a submission beyond it gets ServerBusy.
    maxrequestsize : str
        Largest request body PyWPS accepts, e.g. ``3mb``.
    max_download_mb : float
        Largest file fetched for a URL input, in MiB.
    url_allow : list of str
        Hosts and networks that URL inputs may be fetched from although they are not public
        (INI: comma-separated; default none): host names (``data.example.org``, or
        ``.example.org`` for a domain) and IP networks or addresses (``10.1.0.0/16``,
        ``127.0.0.1``). Without an entry, loopback, link-local, private, shared, reserved and
        cluster-internal addresses are refused, on every redirect too
        (:class:`geoml_hub.wps.ogc.inputs.UrlPolicy`).
    retention_hours : float
        Outputs of finished jobs older than this are removed (0: keep forever).
    max_job_output_mb : float
        Most MiB a job may write (its outputs and working files); a job that writes more
        fails and its partial outputs are removed (0: no limit).
    user_quota_mb : float
        Most MiB of storage a user's job outputs and workspace files may take; a job that
        would go over fails (outputs removed), and an Execute of a user already over it is
        refused (0: no quota).
    max_input_pixels : int
        Most pixels (width x height) of an input raster; a larger one is refused before it is
        read (0: no limit).
    job_retries : int
        How often a job whose worker was killed (a signal such as SIGKILL from the OOM killer, or
        a worker gone while the server was down) is put back in the queue and run again before it
        fails; only for processes that are safe to rerun (all of geoml-hub's: they write only to
        their job directory). Local workers only: Kubernetes Jobs have their own
        ``backoff_limit``. Default 1; 0: never.
    url : str
        Public base URL of the service (the WPS endpoint is ``url + '/wps'``).
    auth : str
        ``none`` (standalone: requests are not authenticated) or ``jupyterhub``.
    shared_results : Path, optional
        The shared results area where published job outputs go (default ``state_dir/results``).
    log_level : str
        PyWPS log level.
    backend : str
        Where jobs run: ``local`` (worker processes of this server, the default) or
        ``kubernetes`` (the processes in ``kubernetes_processes`` run as Kubernetes Jobs;
        the others stay local).
    kubernetes_processes : list of str
        Process identifiers that run as Kubernetes Jobs with ``backend = kubernetes``
        (INI: comma-separated; default ``train_model, classify_scene``).
    kubernetes_job_spec : Path, optional
        JSON file with the fields of :class:`geoml_hub.wps.jobs.kubernetes.JobSpec` (images, namespace,
        volumes, placement, limits); required with ``backend = kubernetes``.
    kubernetes_config : str
        ``""``: the in-cluster ServiceAccount when running in a pod, else ``$KUBECONFIG`` /
        ``~/.kube/config``; or the path of a kubeconfig file.
    kubernetes_max_jobs : int
        Kubernetes Jobs of this server at the same time (queued jobs wait for a slot; they do
        not count against ``parallelprocesses``).
    fan_out_min_pixels : int
        With ``backend = kubernetes``: a ``classify_scene`` or ``validate_classification`` job
        whose raster (the scene; the classification) has at least this many pixels fans out: its
        worker runs in this server and its blocks (:mod:`geoml_hub.blocks`) run as one Indexed
        Kubernetes Job (one Job per block on Kubernetes before 1.22), in the CPU or CUDA image of
        its ``device`` input; the block results are assembled here. 0 (default): never.
    fan_out_parallelism : int
        Block pods of one fan-out running at once; also the most worker processes a job's
        ``workers`` input gets on this server (default 2).
    fan_out_blocks : int
        Blocks a fanned-out raster is cut into (0, default: ``fan_out_parallelism``); a failed
        block is retried ``job_retries`` times on its own.
    pywps : dict
        Extra PyWPS configuration sections, ``{section: {option: value}}``.

    Notes
    -----
    ``database`` may be ``env:NAME``: the URL is read from environment variable ``NAME`` and
    ``settings.json`` keeps ``env:NAME``, so a password in the URL is never written to disk
    (the Helm chart passes it from a Secret to the WPS and to its job pods).
    """

    state_dir: Path
    data_roots: Dict[str, Path] = field(default_factory=dict)
    database: str = ""
    parallelprocesses: int = 2
    maxprocesses: int = 30
    maxrequestsize: str = "3mb"
    max_download_mb: float = 512.0
    url_allow: List[str] = field(default_factory=list)
    retention_hours: float = 168.0
    max_job_output_mb: float = 2048.0
    user_quota_mb: float = 10240.0
    max_input_pixels: int = 1_000_000_000
    job_retries: int = 1
    url: str = "http://127.0.0.1:5000"
    auth: str = "none"
    log_level: str = "INFO"
    shared_results: Optional[Path] = None
    backend: str = "local"
    kubernetes_processes: List[str] = field(default_factory=lambda: list(KUBERNETES_PROCESSES))
    kubernetes_job_spec: Optional[Path] = None
    kubernetes_config: str = ""
    kubernetes_max_jobs: int = 10
    fan_out_min_pixels: int = 0
    fan_out_parallelism: int = 2
    fan_out_blocks: int = 0
    pywps: Dict[str, Dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._database_ref = ""
        if str(self.database).startswith("env:"):
            name = self.database[4:]
            value = os.environ.get(name, "")
            if not value:
                raise ParameterError(f"database = env:{name}, but environment variable {name} is not set")
            self._database_ref, self.database = self.database, value
        given = [Path(self.state_dir)] + [Path(v) for v in self.data_roots.values()]
        given += [Path(self.shared_results)] if self.shared_results else []
        self.state_dir = Path(self.state_dir).expanduser().resolve()
        self.data_roots = {str(k): Path(v).expanduser().resolve() for k, v in self.data_roots.items()}
        if self.shared_results:
            self.shared_results = Path(self.shared_results).expanduser().resolve()
        # the paths as given, where a symlink makes them differ from the real ones (path_aliases)
        self._aliases = {}
        for path in given:
            spelt = Path(os.path.abspath(path.expanduser()))
            if spelt != spelt.resolve():
                self._aliases[str(spelt)] = str(spelt.resolve())
        for name in self.data_roots:
            if name in RESERVED_ROOTS or not name.replace("_", "").replace("-", "").isalnum():
                raise ParameterError(f"data root name {name!r} is reserved or not a plain word")
        if not self.database:
            self.database = f"sqlite:///{self.state_dir / 'log.sqlite'}"
        if ":memory:" in self.database:
            raise ParameterError("database: an in-memory SQLite database breaks async jobs; give a file or PostgreSQL URL")
        for name in ("max_job_output_mb", "user_quota_mb", "max_input_pixels"):
            if getattr(self, name) < 0:
                raise ParameterError(f"{name} must be 0 (no limit) or more, got {getattr(self, name)}")
        if self.parallelprocesses < 1:
            raise ParameterError(f"parallelprocesses must be at least 1, got {self.parallelprocesses}")
        if self.job_retries < 0:
            raise ParameterError(f"job_retries must be 0 or more, got {self.job_retries}")
        if self.maxprocesses < 0:
            raise ParameterError(f"maxprocesses must be 0 or more, got {self.maxprocesses}")
        if self.auth not in ("none", "jupyterhub"):
            raise ParameterError(f"auth must be none or jupyterhub, got {self.auth!r}")
        self.url = self.url.rstrip("/")
        if isinstance(self.url_allow, str):
            self.url_allow = [p.strip() for p in self.url_allow.replace("\n", ",").split(",") if p.strip()]
        self.url_allow = [str(p).strip() for p in self.url_allow if str(p).strip()]
        self.url_policy = UrlPolicy(self.url_allow)
        if self.backend not in ("local", "kubernetes"):
            raise ParameterError(f"backend must be local or kubernetes, got {self.backend!r}")
        if isinstance(self.kubernetes_processes, str):
            self.kubernetes_processes = [p.strip() for p in self.kubernetes_processes.split(",") if p.strip()]
        # which processes may run as Kubernetes Jobs is the registry's to say: build_service checks it
        if self.kubernetes_max_jobs < 1:
            raise ParameterError(f"kubernetes_max_jobs must be at least 1, got {self.kubernetes_max_jobs}")
        if self.fan_out_min_pixels < 0 or self.fan_out_blocks < 0:
            raise ParameterError("fan_out_min_pixels and fan_out_blocks must be 0 or more")
        if self.fan_out_parallelism < 1:
            raise ParameterError(f"fan_out_parallelism must be at least 1, got {self.fan_out_parallelism}")
        if self.kubernetes_job_spec:
            self.kubernetes_job_spec = Path(self.kubernetes_job_spec).expanduser().resolve()
        if self.backend == "kubernetes" and not self.kubernetes_job_spec:
            raise ParameterError("backend = kubernetes needs kubernetes_job_spec (a JSON file of the Job settings)")

    def runs_on_kubernetes(self, identifier: str) -> bool:
        """Whether jobs of process ``identifier`` run as Kubernetes Jobs."""
        return self.backend == "kubernetes" and identifier in self.kubernetes_processes

    def fans_out(self, pixels: int) -> bool:
        """Whether a fan-out-capable job whose raster has ``pixels`` pixels runs its blocks as
        Kubernetes Jobs (see ``fan_out_min_pixels``)."""
        return self.backend == "kubernetes" and 0 < self.fan_out_min_pixels <= pixels

    @property
    def fan_out_block_count(self) -> int:
        """Blocks of a fanned-out raster (``fan_out_blocks``, else ``fan_out_parallelism``)."""
        return self.fan_out_blocks or self.fan_out_parallelism

    def path_aliases(self) -> Dict[str, str]:
        """``{path as given: real path}`` for the state directory, data roots and shared results
        given through a symbolic link (messages hide both, see
        :func:`geoml_hub.wps.ogc.inputs.server_path_names`). Only in the process that read the
        settings as given: ``settings.json`` keeps the real paths."""
        return dict(getattr(self, "_aliases", {}))

    # -- layout -----------------------------------------------------------------------------
    @property
    def outputs_dir(self) -> Path:
        return self.state_dir / "outputs"

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "work"

    @property
    def workspace_dir(self) -> Path:
        return self.state_dir / "workspace"

    @property
    def results_dir(self) -> Path:
        """The shared results area (``results/<owner>/<job id>/``): published outputs, readable
        by every user, and the read-only dataset root ``results``."""
        return Path(self.shared_results) if self.shared_results else self.state_dir / "results"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pywps_cfg(self) -> Path:
        return self.state_dir / "pywps.cfg"

    @property
    def settings_file(self) -> Path:
        return self.state_dir / "settings.json"

    @property
    def wps_url(self) -> str:
        return self.url + "/wps"

    @property
    def outputs_url(self) -> str:
        return self.url + "/outputs"

    def job_outputs(self, uuid: str) -> Path:
        return self.outputs_dir / str(uuid)

    def job_workdir(self, uuid: str) -> Path:
        return self.work_dir / str(uuid)

    def status_file(self, uuid: str) -> Path:
        return self.outputs_dir / f"{uuid}.xml"

    # -- files ----------------------------------------------------------------------------------
    def prepare(self) -> "Settings":
        """Create the state directory layout, write ``pywps.cfg`` and ``settings.json``, and load
        the configuration into PyWPS in this process (``PYWPS_CFG`` is set for children)."""
        for d in (self.state_dir, self.outputs_dir, self.work_dir, self.workspace_dir, self.logs_dir, self.results_dir):
            d.mkdir(parents=True, exist_ok=True)
        write_text(self.pywps_cfg, self.render_pywps_cfg())
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["data_roots"] = {k: str(v) for k, v in self.data_roots.items()}
        data["shared_results"] = str(self.shared_results) if self.shared_results else None
        data["kubernetes_job_spec"] = str(self.kubernetes_job_spec) if self.kubernetes_job_spec else None
        data["database"] = self._database_ref or self.database
        write_text(self.settings_file, json.dumps(data, indent=2) + "\n")
        self.activate()
        return self

    def activate(self) -> None:
        """Load ``pywps.cfg`` into PyWPS's configuration of this process, and give PyWPS's request
        log the job store's engine (:func:`geoml_hub.wps.jobs.store.install_request_log`)."""
        os.environ["PYWPS_CFG"] = str(self.pywps_cfg)
        os.environ[ENV_SETTINGS] = str(self.settings_file)
        configuration.load_configuration([str(self.pywps_cfg)])
        install_request_log(self.database)
        _set_current(self)

    def render_pywps_cfg(self) -> str:
        """The PyWPS configuration (INI text) for these settings."""
        cfg = configparser.ConfigParser(interpolation=None)
        cfg["metadata:main"] = {
            "identification_title": "geoml-hub WPS",
            "identification_abstract": "Training-sample balancing, PyTorch training, scene classification and "
                                       "PyCM quality control for satellite imagery.",
            "identification_keywords": "remote sensing,machine learning,classification,quality control,WPS",
            "provider_name": "geoml-hub",
        }
        cfg["server"] = {
            "url": self.wps_url,
            "outputurl": self.outputs_url + "/",
            "outputpath": str(self.outputs_dir),
            "workdir": str(self.work_dir),
            "maxrequestsize": self.maxrequestsize,
            "parallelprocesses": str(self.parallelprocesses),
            "maxprocesses": str(self.maxprocesses),
            "maxsingleinputsize": "1mb",
            "allowedinputpaths": "",
            "cleantempdir": "true",
            "storage_copy_function": "link",
            "language": "en-US",
        }
        cfg["processing"] = {"mode": "multiprocessing"}
        cfg["logging"] = {
            "level": self.log_level,
            # PyWPS expands ${NAME} when it reads the file: the URL stays off disk
            "database": "${%s}" % self._database_ref[4:] if self._database_ref else self.database,
            "prefix": "pywps_",
        }
        for section, options in self.pywps.items():
            if not cfg.has_section(section):
                cfg[section] = {}
            for k, v in options.items():
                cfg[section][k] = str(v)
        lines = []
        for section in cfg.sections():
            lines.append(f"[{section}]")
            lines += [f"{k} = {v}" for k, v in cfg[section].items()]
            lines.append("")
        return "\n".join(lines)


_CURRENT: Optional[Settings] = None


def _set_current(settings: Settings) -> None:
    global _CURRENT
    _CURRENT = settings


def current_settings() -> Settings:
    """The settings of this server process (or job worker).

    Set by :meth:`Settings.activate`; in a fresh process (a PyWPS-restored job) read from the
    ``settings.json`` named by ``GEOML_WPS_SETTINGS``.

    Raises
    ------
    ParameterError
        If no settings were activated and the environment names none.
    """
    if _CURRENT is not None:
        return _CURRENT
    path = os.environ.get(ENV_SETTINGS)
    if not path:
        raise ParameterError("no WPS settings: start the server with geoml-hub wps serve or set GEOML_WPS_SETTINGS")
    settings = load_settings_json(path)
    settings.activate()
    return settings


def load_settings_json(path) -> Settings:
    """Read the ``settings.json`` written by :meth:`Settings.prepare`."""
    data = json.loads(Path(path).read_text())
    return Settings(**data)


def parse_roots(text: str) -> Dict[str, Path]:
    roots = {}
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, path = item.partition("=")
        if not sep:
            raise ParameterError(f"data_roots expects NAME=DIR items, got {item!r}")
        roots[name.strip()] = Path(path.strip())
    return roots


def load_settings(config: Optional[os.PathLike] = None, **overrides) -> Settings:
    """Build :class:`Settings` from an optional INI file and keyword overrides.

    Parameters
    ----------
    config : path-like, optional
        INI file with a ``[geoml]`` section (see the module docstring); other sections are
        passed to PyWPS.
    **overrides
        Settings fields that win over the file (``None`` values are ignored);
        ``data_roots`` may be a dict or a ``NAME=DIR,...`` string.

    Raises
    ------
    ParameterError
        If the file is missing or a value is invalid.
    """
    values: Dict = {}
    pywps_sections: Dict[str, Dict[str, str]] = {}
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ParameterError(f"--config: no such file {path}")
        cfg = configparser.ConfigParser(interpolation=None)
        try:
            cfg.read(path)
        except configparser.Error as exc:
            raise ParameterError(f"--config {path}: {str(exc).splitlines()[0]}") from None
        for section in cfg.sections():
            if section == "geoml":
                values.update(dict(cfg[section]))
            else:
                pywps_sections[section] = dict(cfg[section])
    values.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(values.get("data_roots"), str):
        values["data_roots"] = parse_roots(values["data_roots"])
    if "state_dir" not in values:
        values["state_dir"] = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "geoml-hub" / "wps"
    casts = {"parallelprocesses": int, "maxprocesses": int, "max_download_mb": float, "retention_hours": float,
             "kubernetes_max_jobs": int, "max_job_output_mb": float, "user_quota_mb": float,
             "max_input_pixels": lambda v: int(float(v)), "job_retries": int,
             "fan_out_min_pixels": lambda v: int(float(v)), "fan_out_parallelism": int, "fan_out_blocks": int}
    for key, cast in casts.items():
        if key in values:
            try:
                values[key] = cast(values[key])
            except (TypeError, ValueError):
                raise ParameterError(f"{key} must be a number, got {values[key]!r}") from None
    known = set(Settings.__dataclass_fields__)
    unknown = set(values) - known
    if unknown:
        raise ParameterError(f"unknown [geoml] setting(s): {', '.join(sorted(unknown))}")
    values.setdefault("pywps", {}).update(pywps_sections)
    return Settings(**values)
