"""The base class of geoml-hub's WPS processes and the pieces PyWPS lacks.

:class:`GeomlProcess` is a :class:`pywps.Process` that

- records every Execute in the job table (:mod:`geoml_hub.wps.jobs.store`) with its owner;
- queues async Executes for the dispatcher instead of PyWPS's own queue (which starts a
  queued job only when another job finishes, and forgets it on a restart);
- checks dataset inputs (:mod:`geoml_hub.wps.ogc.inputs`) before accepting a job, so a bad
  name is an ExceptionReport and nothing runs; input rasters larger than ``max_input_pixels``
  and users over their storage quota (``user_quota_mb``) are refused there too;
- holds a running job to its output limit (:class:`OutputGuard`: ``max_job_output_mb`` and
  what is left of the user's quota): a job that writes more fails, its partial outputs removed;
- writes status documents atomically (temporary file + rename);
- turns library errors into messages that survive PyWPS's sanitising (at most 300
  characters; letters, digits and ``.:!?=,;-_/`` only).

A process module subclasses it with no constructor arguments, so PyWPS and the job
worker can re-create it from its class name.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from pywps import Process
from pywps.app.Common import Metadata
from pywps.app.exceptions import ProcessError, format_message
from pywps.app.WPSRequest import WPSRequest
from pywps.exceptions import (InvalidParameterValue, NoApplicableCode, OperationNotSupported, ServerBusy,
                              StorageNotSupported)
from pywps.inout.formats import FORMATS
from pywps.inout.outputs import ComplexOutput, LiteralOutput
from pywps.response.execute import ExecuteResponse
from pywps.response.status import WPS_STATUS

from ... import __version__, params
from ...errors import GeomlError
from ...web.auth import STANDALONE_OWNER
import geoml_hub.wps.ogc.inputs as ds
from .operations import TIFF_MAGIC, check_pixels
from ..jobs.store import FAILED, RUNNING, SUCCEEDED, store_for, wake
from ..settings import current_settings

LOGGER = logging.getLogger("geoml_hub.wps")
#: The ``xlink:role`` (before ``#attribute``) of the ``ows:Metadata`` carrying registry attributes.
METADATA_ROLE = "urn:geoml-hub:process"

_UNSAFE = re.compile(r"[^\w.:!?=,;\-_/ ]")


def wps_message(text: str, settings=None, limit: int = 300) -> str:
    """Rewrite ``text`` so that PyWPS's message sanitiser keeps it whole.

    Server paths of the data roots and state directory are replaced by their dataset
    names, quotes and brackets are dropped, and the text is cut at a word boundary to
    ``limit`` characters. ``format_message(wps_message(t)) == wps_message(t)``.
    """
    text = str(text)
    if settings is not None:
        for path, name in ds.server_path_names(settings):
            text = text.replace(path, name)
    text = text.replace("%", " percent").replace("->", " to ").replace("<=", " at most ").replace(">=", " at least ")
    text = text.replace("(", ", ").replace(")", "").replace("[", "").replace("]", "").replace("{", "").replace("}", "")
    text = _UNSAFE.sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip(" ,")
    text = re.sub(r"\s+,", ",", text)
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(" ,.:;")
    if len(text) < 3:
        text = "process failed"
    assert format_message(text) == text, text
    return text


class AtomicExecuteResponse(ExecuteResponse):
    """PyWPS's ExecuteResponse with an atomically written status document that also keeps
    the job table in step with every status change."""

    def _update_status(self, status, message, status_percentage, clean=True):
        job = getattr(self.process, "job", None)
        final = status in (WPS_STATUS.SUCCEEDED, WPS_STATUS.FAILED)
        if job is None or not final or not self.store_status_file:
            if job is not None and status == WPS_STATUS.STARTED and self.store_status_file:  # async jobs only
                if not job.store.progress(self.uuid, float(status_percentage or 0), message):
                    # dismissed (or failed) meanwhile, e.g. a cancelled Kubernetes Job whose pod
                    # still runs: its final status document stands, this worker stops
                    raise JobEnded(self.uuid)
            super()._update_status(status, message, status_percentage, clean)
            if job is not None and final:
                job.store.finish(self.uuid, SUCCEEDED if status == WPS_STATUS.SUCCEEDED else FAILED, message)
            return
        # a final status: build the document (outputs stored), record it in the job table, then
        # publish the document, so a client that reads "succeeded" finds the job record final too
        self._hold_status_file = True
        try:
            super()._update_status(status, message, status_percentage, clean)
        finally:
            self._hold_status_file = False
        job.store.finish(self.uuid, SUCCEEDED if status == WPS_STATUS.SUCCEEDED else FAILED, message)
        self._update_status_file()

    def _update_status_file(self):
        if getattr(self, "_hold_status_file", False):
            return
        path = Path(self.process.status_location)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        data = self.doc if isinstance(self.doc, (bytes, bytearray)) else str(self.doc).encode("utf-8")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise NoApplicableCode(f"Writing Response Document failed with : {exc}")


class JobEnded(BaseException):
    """Raised in a worker whose job was dismissed or failed elsewhere while it ran (a
    ``BaseException``, so that PyWPS does not turn it into a failure of its own); the worker
    stops without touching the job's final state or status document."""


class OutputLimitError(GeomlError):
    """A job wrote more than its output limit or its user's storage quota allows."""


class OutputGuard:
    """The output limit of one running job: the bytes it may write into its output and working
    directories, ``max_job_output_mb`` or what is left of its user's ``user_quota_mb``,
    whichever is less.

    :meth:`check` measures the directories (at most once per ``interval`` seconds unless
    ``force``) and raises :class:`OutputLimitError` once they hold more; the handler's progress
    callbacks call it, and the handler's end does with ``force``.
    """

    def __init__(self, job, interval: float = 1.0):
        settings = job.settings
        self.dirs = [job.outputs, job.workdir]
        self.interval = interval
        self._last = 0.0
        self.limit = None
        self.reason = ""
        if settings.max_job_output_mb:
            self.limit = int(settings.max_job_output_mb * 2**20)
            self.reason = f"the output limit of a job, {settings.max_job_output_mb:g} MB (max_job_output_mb)"
        if settings.user_quota_mb:
            used = ds.user_storage(settings, job.store, job.access.owner, exclude=[job.uuid])
            left = int(settings.user_quota_mb * 2**20) - used
            if self.limit is None or left < self.limit:
                self.limit = max(0, left)
                self.reason = (f"what is left of the storage quota of {job.access.owner}, {ds.mib(max(0, left))} of "
                               f"{settings.user_quota_mb:g} MB (user_quota_mb)")
        self.exceeded: Optional[str] = None

    def check(self, force: bool = False) -> None:
        if self.exceeded:
            raise OutputLimitError(self.exceeded)
        if self.limit is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        written = sum(ds.tree_size(d) for d in self.dirs)
        if written > self.limit:
            self.exceeded = (f"the job wrote {ds.mib(written)}, more than {self.reason}; "
                             "its partial outputs were removed")
            raise OutputLimitError(self.exceeded)


def check_quota(settings, store, owner: str) -> None:
    """Refuse an Execute of a user whose job outputs and workspace already take
    ``user_quota_mb`` or more.

    Raises
    ------
    NoApplicableCode
        (HTTP 403) with the usage and the quota.
    """
    if not settings.user_quota_mb:
        return
    used = ds.user_storage(settings, store, owner)
    if used >= settings.user_quota_mb * 2**20:
        raise NoApplicableCode(wps_message(
            f"{owner} uses {ds.mib(used)} of the storage quota of {settings.user_quota_mb:g} MB (user_quota_mb): "
            "no new job until old outputs are removed (retention) or workspace files deleted", settings), code=403)


@dataclass
class JobContext:
    """What a running handler knows about its job."""

    uuid: str
    access: ds.Access
    settings: Any
    store: Any
    workdir: Path
    #: Runs the blocks of a fan-out as Kubernetes Jobs (:class:`geoml_hub.wps.jobs.kubernetes.ClusterBlockRunner`),
    #: set by the worker of a fan-out-capable job on a Kubernetes WPS; ``None``: no fan-out.
    block_runner: Any = None

    @property
    def outputs(self) -> Path:
        """The job's output directory (``jobs/<uuid>`` as a dataset name)."""
        return self.settings.job_outputs(self.uuid)

    def dataset_name(self, path: Path) -> str:
        """The dataset name of a file or directory inside this job's outputs."""
        rel = Path(path).resolve().relative_to(self.outputs.resolve())
        return f"jobs/{self.uuid}/{rel.as_posix()}"


def request_access(wps_request, settings) -> ds.Access:
    """The identity of a request: set by the server's authentication middleware in the WSGI
    environ (``geoml.identity``); the standalone server (``auth = none``) has one local owner.

    Raises
    ------
    NoApplicableCode
        (HTTP 401) when the server requires authentication and the request has none.
    """
    http = getattr(wps_request, "http_request", None)
    ident = http.environ.get("geoml.identity") if http is not None else None
    if ident is not None:
        return ds.Access(ident.name, ident.admin)
    if settings.auth == "none":
        return ds.Access(STANDALONE_OWNER, True)
    raise NoApplicableCode("authentication required", code=401)


class GeomlProcess(Process):
    """Base class of the geoml-hub WPS processes (see the module docstring).

    Parameters
    ----------
    handler : callable
        ``handler(request, response)``; it may raise :class:`geoml_hub.errors.GeomlError`,
        which becomes a failed status or an ExceptionReport with the error's message.
    datasets : mapping of str to str
        Inputs that name datasets and what they must be (``'file'``, ``'dir'`` or
        ``'any'``); they are checked before a job is accepted.
    **kwargs
        Passed to :class:`pywps.Process` (``identifier``, ``title``, ``abstract``,
        ``inputs``, ``outputs``, ...). Store and status are always supported.

    Attributes
    ----------
    rerunnable : bool
        Whether a job whose worker was killed may simply run again (the dispatcher retries it
        ``job_retries`` times). True for a process that writes only to its job's directories,
        as all of geoml-hub's do; a subclass with effects outside them sets it to False.
    """

    rerunnable = True

    #: The dataclass declaring the core operation's parameters (:mod:`geoml_hub.params`): its
    #: WPS inputs come from it (:func:`~geoml_hub.wps.ogc.wpsio.param_inputs`) and
    #: :meth:`param_values` reads them back as the core's keyword arguments.
    param_class: Optional[type] = None
    #: The process identifier (a class attribute, so the registry can be read without instances).
    identifier: str = ""
    #: Whether the process may run as a Kubernetes Job (it takes a ``device`` input).
    kubernetes: bool = False
    #: Whether the outputs are a quality-control report (the web map shows them as one).
    qc: bool = False
    #: The raster input whose size decides a fan-out over Kubernetes Jobs (``fan_out_min_pixels``);
    #: ``None``: the process does not fan out.
    fan_out: Optional[str] = None
    #: How the web map fills inputs from earlier jobs: ``{input: ((source, name), ...)}``, a
    #: source being a process (its outputs and the inputs it ran with) or ``"map"`` (the scene
    #: layer turned on last, ``scene``; the training polygons saved last, ``samples``).
    chain: Mapping[str, tuple] = {}

    def __init__(self, handler: Callable, datasets: Optional[Mapping[str, str]] = None, **kwargs):
        kwargs.setdefault("identifier", type(self).identifier)
        kwargs.setdefault("metadata", self.registry_metadata())
        kwargs.setdefault("version", __version__)
        kwargs.setdefault("store_supported", True)
        kwargs.setdefault("status_supported", True)
        self.datasets = dict(datasets or {})
        self.job: Optional[JobContext] = None
        self._inner_handler = handler
        super().__init__(self._run_guarded, **kwargs)

    # -- handler helpers ------------------------------------------------------------------------
    def _run_guarded(self, request, response):
        # A bound method, not a closure: PyWPS deep-copies the process for every request and
        # deepcopy rebinds methods to the copy (closures would keep the original instance).
        guard = self._guard = OutputGuard(self.job) if self.job is not None else None
        # the outputs as declared, before the handler points them at files: a job stopped by the
        # output limit gets them back, since its files are removed before the failure is reported
        declared = copy.deepcopy(list(self.outputs)) if guard is not None else []
        try:
            if guard is not None:
                guard.check(force=True)  # a user already at the quota
            result = self._inner_handler(request, response)
            if guard is not None:
                guard.check(force=True)
            return result
        except ProcessError:
            raise
        except Exception as exc:
            if guard is not None and guard.exceeded:
                self._remove_partial_outputs()
                # both the process description and the response document list the outputs
                self.outputs[:] = declared
                response.outputs.clear()
                response.outputs.update({o.identifier: o for o in declared})
                LOGGER.info("job %s failed: %s", self.uuid, guard.exceeded)
                raise ProcessError(wps_message(guard.exceeded, self._settings())) from exc
            raise self._process_error(exc) from exc
        finally:
            self._guard = None

    def _remove_partial_outputs(self) -> None:
        job = self.job
        ds.remove_tree(job.outputs)
        if job.workdir.is_dir():
            for entry in job.workdir.iterdir():
                ds.remove_tree(entry)

    def _process_error(self, exc: Exception) -> ProcessError:
        """The failure a handler's exception becomes (a message PyWPS keeps whole)."""
        if isinstance(exc, GeomlError):
            LOGGER.info("job %s failed: %s", self.uuid, exc)
            return ProcessError(wps_message(str(exc), self._settings()))
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            LOGGER.info("job %s failed: %s", self.uuid, exc)
            return ProcessError(wps_message(f"{type(exc).__name__}: {exc}", self._settings()))
        if isinstance(exc, MemoryError):
            return ProcessError("out of memory: try smaller settings, e.g. a smaller batch_size or tile_size")
        LOGGER.error("job %s: unexpected error in %s", self.uuid, self.identifier, exc_info=exc)
        return ProcessError(wps_message(f"internal error in {self.identifier}: {type(exc).__name__}: {exc}",
                                        self._settings()))

    def _settings(self):
        try:
            return current_settings()
        except GeomlError:
            return None

    def dataset(self, request, identifier: str, kind: Optional[str] = None, must_exist: bool = True) -> Optional[Path]:
        """Resolve the dataset named by input ``identifier`` (``None`` if the input is absent).

        URLs of other servers are downloaded into the job's working directory.
        """
        if identifier not in request.inputs:
            return None
        return self._resolve(request.inputs[identifier][0].data, kind or self.datasets.get(identifier, "any"),
                             must_exist, identifier)

    def datasets_of(self, request, identifier: str, kind: Optional[str] = None):
        """All datasets given for a repeatable input (e.g. the files of a multi-file scene)."""
        if identifier not in request.inputs:
            return []
        kind = kind or self.datasets.get(identifier, "any")
        return [self._resolve(i.data, kind, True, identifier) for i in request.inputs[identifier]]

    def _resolve(self, name, kind, must_exist, identifier) -> Path:
        job = self.job
        settings = job.settings if job else current_settings()
        access = job.access if job else ds.Access("local", True)
        try:
            if ds.is_url(name) and ds.own_output_path(name, settings) is None:
                workdir = Path(job.workdir if job else self.workdir)
                return ds.fetch_url(name, workdir / "inputs", settings.max_download_mb, policy=settings.url_policy)
            return ds.resolve(name, settings, access, kind=kind, must_exist=must_exist,
                              job_store=job.store if job else None)
        except ds.DatasetError as exc:
            raise ds.DatasetError(f"input {identifier}: {exc}") from None

    def allowed_roots(self):
        job = self.job
        return ds.allowed_roots(job.settings, job.access, job.store)

    @classmethod
    def registry_metadata(cls) -> list:
        """The process's registry attributes as ``ows:Metadata`` of GetCapabilities and
        DescribeProcess (role :data:`METADATA_ROLE` ``#`` attribute; the web map reads them):
        ``qc``, ``kubernetes`` (title ``true``) and one ``chain`` entry per input, titled
        ``input=source.name,source.name``."""
        out = []
        for flag in ("qc", "kubernetes"):
            if getattr(cls, flag):
                out.append(Metadata("true", role=f"{METADATA_ROLE}#{flag}"))
        for name, sources in cls.chain.items():
            out.append(Metadata(f"{name}=" + ",".join(f"{src}.{key}" for src, key in sources),
                                role=f"{METADATA_ROLE}#chain"))
        return out

    def param_values(self, request) -> dict:
        """The core's keyword arguments from the inputs declared by :attr:`param_class`: each
        given value, else the declared default; comma-separated integers become tuples.

        Raises
        ------
        ParameterError
            For comma-separated integers that are not such (or below 1).
        """
        out = {}
        for p in params.declared(self.param_class) if self.param_class else []:
            if p.wps:
                value = self.value(request, p.wps, p.default)
                out[p.name] = params.parse_integers(value, p.wps, minimum=1) if p.kind == "integers" else value
        return out

    @staticmethod
    def value(request, identifier: str, default=None):
        """The data of a literal input, or ``default`` when it was not given."""
        if identifier in request.inputs and request.inputs[identifier]:
            return request.inputs[identifier][0].data
        return default

    def progress(self, response, start: float = 0.0, stop: float = 100.0, min_interval: float = 1.0):
        """A core-library ``progress(fraction, message)`` callback that updates the WPS status
        (percent between ``start`` and ``stop``; at most one update per whole percent or per
        ``min_interval`` seconds)."""
        state = {"pct": -1, "t": 0.0}
        settings = self.job.settings if self.job else None

        def update(fraction: float, message: str) -> None:
            guard = getattr(self, "_guard", None)
            if guard is not None:
                guard.check()
            pct = int(start + (stop - start) * min(1.0, max(0.0, fraction)))
            now = time.monotonic()
            if pct == state["pct"] and now - state["t"] < min_interval:
                return
            state.update(pct=pct, t=now)
            response.update_status(wps_message(message, settings, limit=200), min(pct, 99))

        return update

    @staticmethod
    def set_outputs(response, values: Mapping[str, Any]) -> None:
        """Set outputs by identifier: files (paths) for complex outputs, values for literal ones.
        An optional output whose value is ``None`` (e.g. ``reliability`` without a confidence
        input) is left out of the response."""
        for name, value in values.items():
            if name in response.outputs and value is None:
                del response.outputs[name]
                continue
            if name not in response.outputs:
                continue
            out = response.outputs[name]
            if isinstance(out, ComplexOutput):
                out.file = str(value)
            else:
                out.data = value

    # -- execution ----------------------------------------------------------------------------------
    def execute(self, wps_request, uuid):
        self._set_uuid(uuid)
        self._setup_status_storage()
        self.async_ = False
        wps_response = AtomicExecuteResponse(wps_request, process=self, uuid=self.uuid)
        if wps_request.store_execute == "true":
            if self.store_supported != "true":
                raise StorageNotSupported("Process does not support the storing of the execute response")
            if wps_request.status == "true":
                if self.status_supported != "true":
                    raise OperationNotSupported("Process does not support the updating of status")
                wps_response.store_status_file = True
                self.async_ = True
            else:
                wps_response.store_status_file = False
        return self._execute_process(self.async_, wps_request, wps_response)

    def check_inputs(self, wps_request, access: ds.Access, settings) -> None:
        """Resolve every dataset input before a job is accepted.

        Raises
        ------
        InvalidParameterValue
            With the dataset error's message and the input as locator.
        """
        store = store_for(settings.database)
        for ident, kind in self.datasets.items():
            for inp in wps_request.inputs.get(ident, []):
                name = inp.data
                if ds.is_url(name) and ds.own_output_path(name, settings) is None:
                    continue  # fetched (and checked) when the job runs
                try:
                    path = ds.resolve(name, settings, access, kind=kind, job_store=store)
                    if settings.max_input_pixels and path.is_file() and _is_tiff(path):
                        check_pixels([path], "raster", settings.max_input_pixels)
                except GeomlError as exc:
                    raise InvalidParameterValue(wps_message(f"input {ident}: {exc}", settings), ident) from None
        try:
            self.check(wps_request)
        except GeomlError as exc:
            raise InvalidParameterValue(wps_message(str(exc), settings), "DataInputs") from None

    def check(self, wps_request) -> None:
        """Checks of literal inputs before a job is accepted: the declared parameters parse
        (:meth:`param_values`). Processes may extend it; raise
        :class:`geoml_hub.errors.ParameterError`."""
        self.param_values(wps_request)

    def _execute_process(self, async_, wps_request, wps_response):
        settings = current_settings()
        store = store_for(settings.database)
        access = request_access(wps_request, settings)
        self.check_inputs(wps_request, access, settings)
        check_quota(settings, store, access.owner)
        if async_:
            # the queue limit is checked and the job recorded in one transaction (a burst of
            # submissions must not overshoot it)
            if not store.submit(str(self.uuid), self.identifier, access.owner, wps_request.json, mode="async",
                                max_queued=settings.maxprocesses):
                raise ServerBusy(f"Maximum number of processes in queue reached, {settings.maxprocesses}. "
                                 "Please try later.")
            wps_response._update_status(WPS_STATUS.ACCEPTED, "queued: waiting for a free worker", 0)
            if self.workdir and os.path.isdir(self.workdir):
                shutil.rmtree(self.workdir, ignore_errors=True)  # the worker gets its own
            wake()
            return wps_response
        store.submit(str(self.uuid), self.identifier, access.owner, None, mode="sync", state=RUNNING,
                     message="running")
        self.job = JobContext(str(self.uuid), access, settings, store, Path(self.workdir))
        wps_response._update_status(WPS_STATUS.ACCEPTED, "PyWPS Request accepted", 0)
        wps_response = self._run_process(wps_request, wps_response)
        # no-op unless PyWPS ended without a final status
        store.finish(str(self.uuid), FAILED, wps_response.message or "process ended without a status",
                     expected=(RUNNING,))
        return wps_response

    def launch_next_process(self):
        """Disabled: the dispatcher starts queued jobs (PyWPS would start one only when another
        one ends)."""
        return None


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in TIFF_MAGIC
    except OSError:
        return False


def restore_request(job) -> "Any":
    """Re-create the :class:`pywps.app.WPSRequest` stored with an async job."""
    req = WPSRequest()
    req.restore_json(json.loads(job.request))
    return req


__all__ = ["GeomlProcess", "AtomicExecuteResponse", "JobContext", "wps_message", "request_access",
           "restore_request", "LiteralOutput", "ComplexOutput", "FORMATS"]
