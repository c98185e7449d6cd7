"""A Python client for geoml-hub's WPS processes, in the spirit of birdhouse's *birdy*.

Every process of the server becomes a method with keyword arguments::

    from geoml_hub.client import Client

    hub = Client()                       # GEOML_WPS_URL, JUPYTERHUB_API_TOKEN
    bal = hub.balance_samples(samples="data/eurosat_ms", step=2)
    fit = hub.train_model(samples=bal.dataset("manifest"), epochs=10)
    qc = hub.evaluate_model(model=fit.dataset("model"), samples="data/eurosat_ms")
    qc.overall_accuracy, qc.kappa        # floats
    qc.summary["ppv"]                    # the JSON summary as a dict
    qc.heatmap                           # pathlib.Path of the downloaded PNG
    qc.pycm                              # pycm.ConfusionMatrix (when the server offers it)

A call submits an asynchronous WPS 1.0.0 Execute (``storeExecuteResponse`` and
``status``), follows the status document with a progress bar and returns a
:class:`Result`. With ``wait=False`` it returns a :class:`Job` at once.

The protocol documents are built and parsed with OWSLib; every HTTP request (capabilities,
process descriptions, Execute, status documents, downloads, the job API) goes through one
:class:`requests.Session` that carries the ``Authorization: token ...`` header, retries
idempotent requests on transient failures and applies the timeout.
"""

from __future__ import annotations

import inspect
import json
import keyword
import logging
import numbers
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import requests

from . import __version__
from .errors import GeomlError

LOGGER = logging.getLogger("geoml_hub.client")

#: Environment variable with the service URL (base URL or ``/wps`` endpoint).
ENV_URL = "GEOML_WPS_URL"
#: Environment variable with the JupyterHub API token (set in every single-user server).
ENV_TOKEN = "JUPYTERHUB_API_TOKEN"

#: Keyword arguments of every process method that control the call, not the process.
CONTROL_OPTIONS = ("wait", "progress", "download_dir")

_TRANSIENT_HTTP = {404, 408, 425, 429, 500, 502, 503, 504}
_STATES = {"ProcessAccepted": "accepted", "ProcessStarted": "running", "ProcessPaused": "paused",
           "ProcessSucceeded": "succeeded", "ProcessFailed": "failed"}
_FINAL = ("succeeded", "failed", "dismissed")
_PY_TYPES = {"integer": int, "int": int, "nonNegativeInteger": int, "positiveInteger": int, "long": int,
             "float": float, "double": float, "decimal": float, "boolean": bool, "string": str}


# -- errors -----------------------------------------------------------------------------------------------

class WPSError(GeomlError):
    """The WPS service could not be reached or answered something unexpected (no URL
    configured, HTTP errors after the retries, a document that is not WPS)."""


class WPSJobError(WPSError):
    """A job was refused (an ExceptionReport on submit) or failed, or was dismissed.

    Attributes
    ----------
    message : str
        The server's message (for a refused request: the ExceptionText).
    job_id : str or None
        The job, when one was created.
    process : str or None
        The process identifier.
    code, locator : str or None
        The OWS exception code and locator (e.g. ``InvalidParameterValue`` and the input).
    state : str or None
        ``'failed'`` or ``'dismissed'`` for a job that ran; ``None`` for a refused request.
    """

    def __init__(self, message: str, job_id: Optional[str] = None, process: Optional[str] = None,
                 code: Optional[str] = None, locator: Optional[str] = None, state: Optional[str] = None):
        self.message = message
        self.job_id = job_id
        self.process = process
        self.code = code
        self.locator = locator
        self.state = state
        where = process or "WPS"
        if job_id:
            where += f" job {job_id}"
        super().__init__(f"{where}: {message}")


class WPSTimeoutError(WPSError, TimeoutError):
    """:meth:`Job.wait` gave up after its ``timeout``; the job itself still runs."""


# -- small helpers -----------------------------------------------------------------------------------------

def _pyname(identifier: str) -> str:
    """A Python identifier for a WPS identifier (``my-process`` -> ``my_process``)."""
    name = re.sub(r"\W", "_", identifier)
    if not name or name[0].isdigit():
        name = "_" + name
    if keyword.iskeyword(name):
        name += "_"
    return name


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _exception_texts(root) -> List[Tuple[Optional[str], Optional[str], str]]:
    """``[(code, locator, text)]`` of an ``ows:ExceptionReport`` element (or one containing it)."""
    out = []
    for el in root.iter():
        if _local(el.tag) == "Exception":
            text = " ".join(" ".join(t.strip() for t in sub.itertext() if t.strip())
                            for sub in el if _local(sub.tag) == "ExceptionText")
            out.append((el.get("exceptionCode"), el.get("locator"), text.strip()))
    return out


def _exception_message(root) -> Tuple[str, Optional[str], Optional[str]]:
    excs = _exception_texts(root)
    if not excs:
        return "the server reported an error without a message", None, None
    code, locator, text = excs[0]
    msg = "; ".join(t for _, _, t in excs if t) or code or "error"
    return msg, code, locator


def _parse_xml(content: bytes):
    """Parse an XML document; ``None`` when it is empty or not well-formed."""
    from owslib.etree import etree

    if not content or not content.strip():
        return None
    try:
        return etree.fromstring(content)
    except Exception:  # lxml's XMLSyntaxError or ElementTree's ParseError
        return None


def _status_state(root) -> str:
    """The state of an ExecuteResponse from its ``wps:Status`` element (OWSLib overwrites its
    own ``status`` with ``'Exception'`` when a ProcessFailed carries an ExceptionReport)."""
    for status in root:
        if _local(status.tag) == "Status":
            for child in status:
                if _local(child.tag) in _STATES:
                    return _STATES[_local(child.tag)]
    return "failed" if _local(root.tag) == "ExceptionReport" else "unknown"


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "geoml-hub" / "jobs"


def _safe_name(text: str, fallback: str = "output") -> str:
    name = re.sub(r"[^\w.\-]", "_", text or "")[:120].lstrip(".")
    return name or fallback


@dataclass(frozen=True)
class JobStatus:
    """One look at a job's status document.

    Attributes
    ----------
    job_id : str
    state : str
        ``'accepted'`` (queued), ``'running'``, ``'paused'``, ``'succeeded'``, ``'failed'``
        or ``'dismissed'`` (cancelled; the status document says failed with a message that
        starts with ``dismissed``).
    percent : int
        0 to 100.
    message : str
        The status message (for a failed job: the error).
    """

    job_id: str
    state: str
    percent: int
    message: str

    @property
    def done(self) -> bool:
        """Whether the job has ended (succeeded, failed or dismissed)."""
        return self.state in _FINAL

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"


# -- inputs --------------------------------------------------------------------------------------------------

@dataclass
class _InputInfo:
    identifier: str
    name: str  # Python keyword
    title: str
    abstract: str
    kind: str  # 'literal', 'complex' or 'bbox'
    data_type: Optional[str]
    min_occurs: int
    max_occurs: int
    default: Any
    allowed: List[Any]
    ranges: List[Tuple[str, str, Optional[str]]]
    uom: Optional[str]

    @property
    def required(self) -> bool:
        return self.min_occurs > 0 and self.default is None

    @property
    def repeatable(self) -> bool:
        return self.max_occurs != 1

    def py_type(self):
        t = _PY_TYPES.get(self.data_type or "", str) if self.kind == "literal" else str
        return List[t] if self.repeatable else t

    def type_text(self) -> str:
        if self.allowed:
            text = "{" + ", ".join(repr(_typed(v, self.data_type)) for v in self.allowed) + "}"
        else:
            t = _PY_TYPES.get(self.data_type or "", str) if self.kind == "literal" else str
            text = t.__name__
        if self.repeatable:
            most = "" if self.max_occurs < 0 else f" (at most {self.max_occurs})"
            text = f"{text} or list of {text}{most}"
        return text + ("" if self.required else ", optional")

    def doc(self) -> str:
        lines = [f"{self.name} : {self.type_text()}"]
        body = " ".join(x for x in (self.title.rstrip(".") + "." if self.title else "", self.abstract or "") if x)
        extra = []
        if self.default is not None:
            extra.append(f"Default: {self.default!r}.")
        elif not self.required and "default:" not in body.lower():
            extra.append("Default: not set (the process decides).")
        for low, high, closure in self.ranges:
            extra.append(f"Allowed: {low} to {high}" + (f" ({closure})" if closure and closure != "closed" else "")
                         + (f" {self.uom}" if self.uom else "") + ".")
        if self.uom and not self.ranges:
            extra.append(f"Unit: {self.uom}.")
        if self.identifier != self.name:
            extra.append(f"WPS input {self.identifier!r}.")
        text = " ".join([body] + extra).strip()
        import textwrap

        lines += textwrap.wrap(text, 88, initial_indent="    ", subsequent_indent="    ") or ["    "]
        return "\n".join(lines)


def _typed(value, data_type: Optional[str]):
    """A DescribeProcess default or allowed value as the Python type of ``data_type``."""
    if value is None:
        return None
    t = _PY_TYPES.get(data_type or "", str)
    if isinstance(value, t) and not (t is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if t is bool:
            return text.lower() in ("true", "1")
        if t is int:
            return int(float(text))
        if t is float:
            return float(text)
    except ValueError:
        return text
    return text


def _literal(value, info: _InputInfo, method: str) -> str:
    """One value as the text of a WPS literal (booleans ``true``/``false``)."""
    t = _PY_TYPES.get(info.data_type or "", str) if info.kind == "literal" else str
    if isinstance(value, os.PathLike):
        value = Path(os.fspath(value)).as_posix()
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:  # numpy scalars
            value = value.item()
        except (TypeError, ValueError):
            pass

    def bad(what):
        return TypeError(f"{method}(): {info.name} expects {what}, got {value!r}")

    if isinstance(value, bool):
        if t in (int, float):
            raise bad("a number")
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        if t is bool:
            raise bad("True or False")
        return str(int(value))
    if isinstance(value, numbers.Real):
        if t is int:
            if float(value).is_integer():
                return str(int(value))
            raise bad("an integer")
        if t is bool:
            raise bad("True or False")
        return repr(float(value))
    if isinstance(value, str):
        return value
    raise bad(f"a {t.__name__}")


# -- results -------------------------------------------------------------------------------------------------

class Result(Mapping):
    """The outputs of a finished job, as Python objects, by attribute or by key.

    ``result.kappa`` and ``result["kappa"]`` are the same. Values are converted on first
    access:

    - literal outputs: ``int``, ``float``, ``bool`` or ``str`` (from the WPS data type);
    - JSON files (``application/json``): loaded, a ``dict`` or ``list``;
    - other files: downloaded into :attr:`download_dir` and returned as
      :class:`pathlib.Path`.

    Attributes
    ----------
    job_id : str
    process : str
        The process identifier.
    status_location : str or None
    message : str
        The final status message.
    download_dir : pathlib.Path
        Where files are downloaded (created on the first download).
    """

    def __init__(self, client: "Client", process: str, job_id: str, status_location: Optional[str], outputs,
                 message: str = "", download_dir: Optional[Path] = None):
        self._client = client
        self.process = process
        self.job_id = job_id
        self.status_location = status_location
        self.message = message or ""
        self._outputs = {o.identifier: o for o in outputs}
        self._values: Dict[str, Any] = {}
        self._paths: Dict[str, Path] = {}
        self._download_dir = download_dir

    # -- mapping ------------------------------------------------------------------------------------
    def __getitem__(self, key: str):
        if key not in self._outputs:
            raise KeyError(f"{self.process} has no output {key!r}; outputs: {', '.join(self._outputs)}")
        if key not in self._values:
            self._values[key] = self._convert(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        outputs = self.__dict__.get("_outputs", {})
        for ident in outputs:
            if ident == name or _pyname(ident) == name:
                return self[ident]
        raise AttributeError(f"{type(self).__name__} of {self.__dict__.get('process')} has no output {name!r}; "
                             f"outputs: {', '.join(outputs)}")

    def __dir__(self):
        return sorted(set(super().__dir__()) | {_pyname(k) for k in self._outputs})

    def __repr__(self) -> str:
        parts = []
        for ident, out in self._outputs.items():
            if out.reference:
                parts.append(f"{ident}=<{out.mimeType or 'file'}: {self._file_name(ident)}>")
            else:
                parts.append(f"{ident}={self[ident]!r}")
        return f"<Result {self.process} job {self.job_id}: " + ", ".join(parts) + ">"

    # -- what the outputs are ----------------------------------------------------------------------
    @property
    def download_dir(self) -> Path:
        if self._download_dir is None:
            self._download_dir = self._client._job_dir(self.job_id)
        return self._download_dir

    @property
    def urls(self) -> Dict[str, str]:
        """``{output: URL}`` of the outputs returned by reference (files)."""
        return {k: self._client._local_url(o.reference) for k, o in self._outputs.items() if o.reference}

    @property
    def literals(self) -> Dict[str, Any]:
        """``{output: value}`` of the literal outputs (no download)."""
        return {k: self[k] for k, o in self._outputs.items() if not o.reference}

    def url(self, name: str) -> str:
        """The URL of a file output.

        Raises
        ------
        KeyError
            No such output, or it is not a file reference.
        """
        urls = self.urls
        if name not in urls:
            raise KeyError(f"{self.process} output {name!r} is not a file reference; files: {', '.join(urls)}")
        return urls[name]

    def dataset(self, name: str) -> str:
        """The dataset name of a file output, for chaining: ``jobs/<job id>/<file>``.

        It is read from the output URL (``.../outputs/<job id>/<file>``); for a URL of
        another form the URL itself is returned (the server accepts URLs as dataset names
        too).

        A literal output that already is a dataset name (``jobs/<job id>/...``, e.g. the
        ``samples`` tree of extract_samples) is returned as it is.

        Raises
        ------
        KeyError
            No such output, or a literal output that is no dataset name.
        """
        out = self._outputs.get(name)
        if out is not None and not out.reference:
            value = self[name]
            if isinstance(value, str) and value.startswith("jobs/"):
                return value
        url = self.url(name)
        path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
        if "/outputs/" in path:
            rest = path.rsplit("/outputs/", 1)[1].strip("/")
            if "/" in rest and ".." not in rest.split("/"):
                return "jobs/" + rest
        return url

    def datasets(self) -> Dict[str, str]:
        """``{output: dataset name}`` of every file output and every literal dataset name."""
        names = {k: self.dataset(k) for k in self.urls}
        names.update({k: v for k, v in self.literals.items() if isinstance(v, str) and v.startswith("jobs/")})
        return names

    def path(self, name: str) -> Path:
        """Download a file output (once) and return its local path (JSON files too).

        Raises
        ------
        KeyError
            No such file output.
        WPSError
            The download failed after the retries.
        """
        url = self.url(name)
        if name not in self._paths:
            self._paths[name] = self._client._download(url, self.download_dir / self._file_name(name))
        return self._paths[name]

    def download(self, directory: Union[str, os.PathLike, None] = None) -> Dict[str, Path]:
        """Download every file output; returns ``{output: path}``.

        Parameters
        ----------
        directory : path, optional
            Where to put them (default :attr:`download_dir`).
        """
        if directory is not None:
            self._download_dir = Path(directory)
            self._paths.clear()
        return {k: self.path(k) for k in self.urls}

    def confusion_matrix(self, name: Optional[str] = None):
        """The PyCM confusion matrix of a QC job, loaded from its PyCM object file output.

        Parameters
        ----------
        name : str, optional
            The output (default: the one output named ``pycm_object``, or the only output
            whose name starts with it or whose file ends in ``.obj``).

        Returns
        -------
        pycm.ConfusionMatrix

        Raises
        ------
        KeyError
            The job has no (or several, and ``name`` was not given) PyCM object outputs.
        """
        if name is None:
            cands = [k for k in self.urls if k == "pycm_object"] or \
                    [k for k in self.urls if k.startswith("pycm_object") or self._file_name(k).endswith(".obj")]
            if len(cands) != 1:
                raise KeyError(f"{self.process} has {'no' if not cands else 'several'} PyCM object outputs"
                               + (f": {', '.join(cands)}; give one" if cands else ""))
            name = cands[0]
        import pycm

        with open(self.path(name), encoding="utf-8") as fh:
            return pycm.ConfusionMatrix(file=fh)

    @property
    def pycm(self):
        """The :class:`pycm.ConfusionMatrix` of a QC job, or ``None`` when the job has no PyCM
        object output (see :meth:`confusion_matrix`)."""
        try:
            return self.confusion_matrix()
        except KeyError:
            return None

    # -- conversion --------------------------------------------------------------------------------
    def _file_name(self, name: str) -> str:
        ref = self._outputs[name].reference or ""
        base = urllib.parse.unquote(urllib.parse.urlparse(ref).path.rsplit("/", 1)[-1])
        return _safe_name(base, name)

    def _convert(self, name: str):
        out = self._outputs[name]
        mime = (out.mimeType or "").split(";")[0].strip().lower()
        if out.reference:
            if mime == "application/json" or (not mime and self._file_name(name).endswith(".json")):
                return json.loads(self.path(name).read_text(encoding="utf-8"))
            return self.path(name)
        data = list(out.data or [])
        if mime == "application/json" and data:
            return json.loads("".join(data))
        values = [_typed(d, out.dataType) if out.dataType else d for d in data]
        if not values:
            return None
        return values[0] if len(values) == 1 else values


# -- jobs ----------------------------------------------------------------------------------------------------

class Job:
    """A submitted job: poll it, wait for its :class:`Result`, or cancel it.

    Attributes
    ----------
    job_id : str
        The job's id (the status document's base name, as in ``jobs/<job_id>/...``).
    process : str
        The process identifier.
    status_location : str
        URL of the WPS status document.
    """

    def __init__(self, client: "Client", process: str, status_location: str, execution=None,
                 download_dir: Optional[Path] = None, progress=None):
        from owslib.wps import WPSExecution

        self._client = client
        self.process = process
        self.status_location = status_location
        self.job_id = _safe_name(urllib.parse.unquote(
            urllib.parse.urlparse(status_location).path.rsplit("/", 1)[-1]).removesuffix(".xml"), "job")
        self._execution = execution or WPSExecution(version="1.0.0", url=client.wps_url)
        self._download_dir = download_dir
        self._progress = progress
        self._last: Optional[JobStatus] = None
        self._result: Optional[Result] = None

    def __repr__(self) -> str:
        st = self._last
        what = f"{st.state} {st.percent}%" if st else "submitted"
        return f"<Job {self.process} {self.job_id} {what}>"

    def status(self) -> JobStatus:
        """Fetch the status document once (retrying empty or broken documents and transient
        HTTP errors) and return the job's :class:`JobStatus`.

        Raises
        ------
        WPSError
            The status document could not be read after the retries.
        """
        ex = self._execution
        root = self._client._get_xml(self.status_location, what=f"status document of job {self.job_id}",
                                     expect="ExecuteResponse", transient=_TRANSIENT_HTTP)
        ex.errors = []
        ex.statusLocation = self.status_location
        ex.parseResponse(root)
        if self.process == "unknown" and getattr(ex.process, "identifier", None):
            self.process = ex.process.identifier
        state = _status_state(root)
        if state == "unknown":
            raise WPSError(f"status document of job {self.job_id} has no wps:Status ({self.status_location})")
        message = (ex.statusMessage or "").strip()
        if state == "failed":
            message = _exception_message(root)[0] if _exception_texts(root) else (message or "job failed")
            message = re.sub(r"^Process error:\s*", "", message)  # PyWPS's prefix
            if message.lower().startswith("dismissed"):
                state = "dismissed"
        percent = 100 if state == "succeeded" else int(ex.percentCompleted or 0)
        self._last = JobStatus(self.job_id, state, max(0, min(100, percent)), message)
        return self._last

    @property
    def done(self) -> bool:
        """Whether the job has ended (fetches the status document unless it already ended)."""
        if self._last is not None and self._last.done:
            return True
        return self.status().done

    def info(self) -> Dict[str, Any]:
        """The job's record from the server's job API (``GET /jobs/<id>``): status, percent,
        message, owner, times.

        Raises
        ------
        WPSError
            The server has no job API or does not know the job.
        """
        return self._client._job_record(self.job_id)

    def cancel(self) -> bool:
        """Cancel (dismiss) the job on the server (``POST /jobs/<id>/cancel``).

        Returns
        -------
        bool
            ``True`` if it was cancelled, ``False`` if it had already ended.

        Raises
        ------
        WPSError
            The server has no job API, does not know the job, or refused.
        """
        ok = self._client.cancel(self.job_id)
        if ok:
            self._last = None
        return ok

    def wait(self, progress: Union[bool, Callable[[float, str], None], None] = None,
             timeout: Optional[float] = None) -> Result:
        """Block until the job ends and return its :class:`Result`.

        Parameters
        ----------
        progress : bool or callable, optional
            ``True``: a tqdm progress bar (``tqdm.auto``, so a widget in notebooks) with the
            status message as postfix; a callable: called as ``progress(fraction, message)``
            (fraction 0 to 1, the convention of :mod:`geoml_hub.progress`) whenever the
            status changes; ``False``: silent. Default: the client's ``progress``.
        timeout : float, optional
            Seconds to wait at most (default: no limit).

        Returns
        -------
        Result

        Raises
        ------
        WPSJobError
            The job failed or was dismissed (the server's message).
        WPSTimeoutError
            ``timeout`` passed; the job still runs.
        WPSError
            The status document could not be read after the retries.
        """
        if self._result is not None:
            return self._result
        if progress is None:
            progress = self._progress if self._progress is not None else self._client.progress
        reporter = _Reporter(progress, self.process, self.job_id)
        client = self._client
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = client._first_poll  # grows to client.poll_interval
        try:
            while True:
                st = self.status()
                reporter.update(st)
                if st.done:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise WPSTimeoutError(f"{self.process} job {self.job_id}: still {st.state} at {st.percent}% "
                                          f"after {timeout:g} s; it keeps running (Client.job({self.job_id!r}))")
                sleep = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
                time.sleep(sleep)
                interval = min(client.poll_interval, interval * 1.5)
        except KeyboardInterrupt as exc:
            if hasattr(exc, "add_note"):  # Python 3.11+
                exc.add_note(f"geoml-hub: {self.process} job {self.job_id} keeps running on the server; "
                             f"Client.cancel({self.job_id!r}) stops it")
            raise
        finally:
            reporter.close()
        if st.state != "succeeded":
            raise WPSJobError(st.message or f"job {st.state}", job_id=self.job_id, process=self.process,
                              state=st.state)
        self._result = Result(client, self.process, self.job_id, self.status_location,
                              self._execution.processOutputs, st.message, self._download_dir)
        return self._result

    result = wait


class _Reporter:
    """Shows a job's progress: a tqdm bar, a callback, or nothing."""

    def __init__(self, progress, process: str, job_id: str):
        self.progress = progress
        self.process = process
        self.job_id = job_id
        self.bar = None
        self.last = None

    def update(self, st: JobStatus) -> None:
        key = (st.state, st.percent, st.message)
        if key == self.last or not self.progress:
            return
        self.last = key
        message = st.message or st.state
        if callable(self.progress):
            self.progress(st.percent / 100.0, message)
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=100, desc=self.process, unit="%",
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]")
        short = message if len(message) <= 70 else message[:67] + "..."
        self.bar.set_postfix_str(short, refresh=False)
        if st.percent > self.bar.n:
            self.bar.update(st.percent - self.bar.n)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -- the client ------------------------------------------------------------------------------------------

class Client:
    """A client of a geoml-hub WPS service (any WPS 1.0.0 server for the process calls).

    Processes are methods: ``client.train_model(samples=..., epochs=10)``. ``dir(client)``
    lists them, ``help(client.train_model)`` shows their inputs with abstracts, defaults
    and allowed values (from DescribeProcess, fetched at first use).

    Parameters
    ----------
    url : str, optional
        The service: its base URL (``http://127.0.0.1:5000``,
        ``https://hub.example.org/services/wps``) or the WPS endpoint itself (``.../wps``).
        Default: the environment variable ``GEOML_WPS_URL``.
    token : str, optional
        API token sent as ``Authorization: token <token>`` on every request. Default: the
        environment variable ``JUPYTERHUB_API_TOKEN`` (set in every JupyterHub notebook
        server); none if unset.
    progress : bool or callable
        Default of the calls' ``progress`` (see :meth:`Job.wait`): a tqdm bar (``True``),
        a callable ``progress(fraction, message)``, or nothing (``False``).
    download_dir : path, optional
        Where file outputs are downloaded, one sub-directory per job. Default:
        ``$XDG_CACHE_HOME/geoml-hub/jobs/<job id>`` (``~/.cache/...``), or a temporary
        directory when that is not writable.
    timeout : float
        Seconds for each HTTP request.
    retries : int
        How often an idempotent request (status document, download, description) is retried
        after an empty or broken document, a connection error, a timeout or an HTTP
        408/425/429/5xx (and 404 for status documents), with exponential backoff (0.25 s
        doubling, at most 8 s); the Execute POST is sent once.
    poll_interval : float
        Longest pause between two looks at a running job's status (seconds).
    verify : bool or str
        TLS certificate verification (``requests``' ``verify``).

    Raises
    ------
    WPSError
        No URL given and ``GEOML_WPS_URL`` unset or empty.

    Notes
    -----
    Nothing is requested until first use. The service type is found with one GET of the
    given URL: geoml-hub's base URL answers with a JSON index, anything else is taken as a
    WPS endpoint (and its job API, if any, as ``<endpoint without /wps>/jobs``). URLs the
    server advertises under another address (its configured public URL) are mapped to the
    address the client uses.
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None,
                 progress: Union[bool, Callable[[float, str], None]] = True,
                 download_dir: Union[str, os.PathLike, None] = None, timeout: float = 60.0, retries: int = 8,
                 poll_interval: float = 1.0, verify: Union[bool, str] = True):
        url = url if url is not None else os.environ.get(ENV_URL, "")
        url = (url or "").strip()
        if not url:
            raise WPSError(f"no WPS service URL: pass Client(url=...) or set the environment variable {ENV_URL}")
        if not re.match(r"^https?://", url, re.I):
            raise WPSError(f"the WPS service URL must start with http:// or https://, got {url[:80]!r}")
        parts = urllib.parse.urlsplit(url)
        self.url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        token = token if token is not None else os.environ.get(ENV_TOKEN)
        self.progress = progress
        self.download_dir = Path(download_dir).expanduser() if download_dir is not None else None
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.poll_interval = max(0.05, float(poll_interval))
        self._first_poll = min(0.25, self.poll_interval)
        self._backoff = (0.25, 8.0)
        self.headers = {"User-Agent": f"geoml-hub-client/{__version__}"}
        if token:
            self.headers["Authorization"] = f"token {token.strip()}"
        self.session = requests.Session()
        self.session.headers.update(self.headers)
        self.session.verify = verify
        self._resolved = False
        self._wps_url: Optional[str] = None
        self._base: Optional[str] = None
        self._advertised: Optional[str] = None
        self._owslib = None
        self._process_titles: Optional[Dict[str, str]] = None
        self._py_to_id: Dict[str, str] = {}
        self._descriptions: Dict[str, Tuple[Any, List[_InputInfo]]] = {}
        self._methods: Dict[str, Callable] = {}

    def __repr__(self) -> str:
        auth = " (token)" if "Authorization" in self.headers else ""
        return f"<geoml_hub.client.Client {self.url}{auth}>"

    # -- service discovery --------------------------------------------------------------------------
    def _resolve(self) -> None:
        if self._resolved:
            return
        index = None
        try:
            r = self._request("GET", self.url, retry=True, transient=_TRANSIENT_HTTP - {404})
            if r.ok and "json" in r.headers.get("Content-Type", ""):
                index = r.json()
        except ValueError:
            index = None
        if isinstance(index, dict) and "wps" in index:
            self._base = self.url
            self._wps_url = self.url + "/wps"
            adv = str(index.get("wps", ""))
            if adv.endswith("/wps"):
                adv = adv[:-4].rstrip("/")
                if adv and adv != self._base:
                    self._advertised = adv
        else:
            self._wps_url = self.url
            self._base = self.url[:-4] if self.url.endswith("/wps") else None
        self._resolved = True

    @property
    def wps_url(self) -> str:
        """The WPS endpoint (found at first use, see the class notes)."""
        self._resolve()
        return self._wps_url

    @property
    def wps(self):
        """The underlying :class:`owslib.wps.WebProcessingService` (capabilities loaded; it
        carries the same headers)."""
        self._capabilities()
        return self._owslib

    def _local_url(self, url: Optional[str]) -> Optional[str]:
        """Map a URL the server advertises under its configured public URL to the client's."""
        self._resolve()
        if url and self._advertised and (url == self._advertised or url.startswith(self._advertised + "/")):
            return self._base + url[len(self._advertised):]
        return url

    # -- HTTP -----------------------------------------------------------------------------------------
    def _sleep_backoff(self, attempt: int) -> None:
        low, cap = self._backoff
        time.sleep(min(cap, low * 2 ** attempt))

    def _request(self, method: str, url: str, retry: bool = False, what: Optional[str] = None,
                 transient=_TRANSIENT_HTTP, **kwargs) -> requests.Response:
        """One HTTP request through the session. Idempotent ones (``retry``) are retried on
        connection errors and HTTP 404/408/425/429/5xx with exponential backoff; the last
        response is returned whatever its status.

        Raises
        ------
        WPSError
            Connection errors or timeouts on every attempt.
        """
        kwargs.setdefault("timeout", self.timeout)
        attempts = (self.retries + 1) if retry else 1
        for attempt in range(attempts):
            try:
                r = self.session.request(method, url, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if not (retry and r.status_code in transient) or attempt == attempts - 1:
                    return r
                problem = f"HTTP {r.status_code}"
                r.close()
            if attempt < attempts - 1:
                LOGGER.info("%s %s: %s; retrying", method, url, problem)
                self._sleep_backoff(attempt)
        raise WPSError(f"{what or url}: {problem}" + (f" (after {attempts} attempts)" if attempts > 1 else ""))

    def _get_xml(self, url: str, what: str, expect: str, params=None, transient=_TRANSIENT_HTTP - {404}):
        """GET an XML document whose root is ``expect``. Connection errors, HTTP 404/429/5xx,
        empty or malformed documents (a status document caught mid-write) and foreign ones (a
        proxy's error page) are retried; an ExceptionReport or HTTP 401/403 is not. HTTP 404 is
        retried only when ``transient`` says so (status documents: a server may write the first
        one after answering the Execute).

        Raises
        ------
        WPSError
        """
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                r = self._request("GET", url, what=what, params=params)
            except WPSError as exc:
                r, problem = None, str(exc).split(": ", 1)[-1]
            if r is not None:
                root = _parse_xml(r.content)
                tag = _local(root.tag) if root is not None else None
                if tag == expect and r.status_code < 400:
                    return root
                if tag == "ExceptionReport":
                    msg, _, _ = _exception_message(root)
                    raise WPSError(f"{what}: {msg} (HTTP {r.status_code})")
                if r.status_code >= 400 and r.status_code not in transient:
                    raise WPSError(f"{what}: HTTP {r.status_code} {self._error_text(r)}".strip())
                if r.status_code >= 400:
                    problem = f"HTTP {r.status_code}"
                elif root is None:
                    problem = "an empty document" if not r.content.strip() else "a document that is not valid XML"
                else:
                    problem = f"a {tag} document instead of {expect}"
            if attempt < attempts - 1:
                LOGGER.info("%s: %s; retrying", what, problem)
                self._sleep_backoff(attempt)
        raise WPSError(f"{what}: {problem} (after {attempts} attempts)")

    @staticmethod
    def _error_text(r: requests.Response) -> str:
        try:
            body = r.json()
            if isinstance(body, dict) and body.get("error"):
                return str(body["error"])
        except ValueError:
            pass
        text = re.sub(r"\s+", " ", r.text or "").strip()
        return text[:200]

    def _download(self, url: str, dest: Path) -> Path:
        """Download ``url`` to ``dest`` (kept if it is already there: job outputs never change).
        Retried like a status document; a short body (Content-Length not reached) too.

        Raises
        ------
        WPSError
        """
        if dest.is_file():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        attempts = self.retries + 1
        for attempt in range(attempts):
            problem = self._download_once(url, dest)
            if problem is None:
                return dest
            if attempt < attempts - 1:
                LOGGER.info("download %s: %s; retrying", url, problem)
                self._sleep_backoff(attempt)
        raise WPSError(f"download {url}: {problem} (after {attempts} attempts)")

    def _download_once(self, url: str, dest: Path) -> Optional[str]:
        """One download attempt; ``None`` on success, else what went wrong (worth a retry)."""
        try:
            r = self._request("GET", url, what=f"download {url}", stream=True)
        except WPSError as exc:
            return str(exc).split(": ", 1)[-1]
        with r:
            if r.status_code in _TRANSIENT_HTTP - {404}:
                return f"HTTP {r.status_code}"
            if r.status_code != 200:
                raise WPSError(f"download {url}: HTTP {r.status_code} {self._error_text(r)}".strip())
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            try:
                size = 0
                with os.fdopen(fd, "wb") as out:
                    for chunk in r.iter_content(1 << 20):
                        out.write(chunk)
                        size += len(chunk)
                expected = r.headers.get("Content-Length", "")
                if expected.isdigit() and int(expected) != size:
                    return f"incomplete, {size} of {expected} bytes"
                os.replace(tmp, dest)
                return None
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                return f"{type(exc).__name__}: {exc}"
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def _job_dir(self, job_id: str) -> Path:
        if self.download_dir is not None:
            d = self.download_dir / job_id
            d.mkdir(parents=True, exist_ok=True)
            return d
        d = _default_cache() / job_id
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            pass
        return Path(tempfile.mkdtemp(prefix=f"geoml-hub-{job_id[:13]}-"))

    # -- processes -----------------------------------------------------------------------------------
    def _capabilities(self) -> Dict[str, str]:
        if self._process_titles is None:
            from owslib.wps import WebProcessingService

            root = self._get_xml(self.wps_url, "GetCapabilities", "Capabilities",
                                 params={"service": "WPS", "request": "GetCapabilities", "version": "1.0.0"})
            from owslib.etree import etree

            wps = WebProcessingService(self.wps_url, version="1.0.0", skip_caps=True, headers=dict(self.headers),
                                       timeout=self.timeout)
            wps.getcapabilities(xml=etree.tostring(root))
            self._owslib = wps
            self._process_titles = {p.identifier: (p.title or p.identifier) for p in wps.processes}
            self._py_to_id = {_pyname(i): i for i in self._process_titles}
        return self._process_titles

    @property
    def processes(self) -> Dict[str, str]:
        """``{process identifier: title}`` of the service (GetCapabilities, fetched once)."""
        return dict(self._capabilities())

    def refresh(self) -> None:
        """Forget the cached capabilities and process descriptions (e.g. after a server update)."""
        self._process_titles = None
        self._descriptions.clear()
        self._methods.clear()
        self._resolved = False

    def _describe(self, identifier: str):
        if identifier not in self._descriptions:
            from owslib.etree import etree

            root = self._get_xml(self.wps_url, f"DescribeProcess {identifier}", "ProcessDescriptions",
                                 params={"service": "WPS", "request": "DescribeProcess", "version": "1.0.0",
                                         "identifier": identifier})
            wps = self.wps
            process = wps.describeprocess(identifier, xml=etree.tostring(root))
            raw = {}
            for inp in root.iter():
                if _local(inp.tag) != "Input":
                    continue
                ident = next((c.text for c in inp if _local(c.tag) == "Identifier"), None)
                ranges, uom = [], None
                for el in inp.iter():
                    tag = _local(el.tag)
                    if tag == "Range":
                        low = next((c.text for c in el if _local(c.tag) == "MinimumValue"), None)
                        high = next((c.text for c in el if _local(c.tag) == "MaximumValue"), None)
                        closure = next((v for k, v in el.attrib.items() if _local(k) == "rangeClosure"), None)
                        ranges.append((low, high, closure))
                    elif tag == "UOM" and uom is None and el.text:
                        uom = el.text.strip()
                raw[ident] = (ranges, uom)
            infos = []
            used = set(CONTROL_OPTIONS)
            for inp in process.dataInputs:
                kind = "literal" if inp.dataType not in ("ComplexData", "BoundingBoxData") else \
                    ("complex" if inp.dataType == "ComplexData" else "bbox")
                name = _pyname(inp.identifier)
                ranges, uom = raw.get(inp.identifier, ([], None))
                default = inp.defaultValue if kind == "literal" else None
                infos.append(_InputInfo(
                    inp.identifier, name, getattr(inp, "title", "") or "", (inp.abstract or "").strip(), kind,
                    inp.dataType if kind == "literal" else None, max(0, inp.minOccurs), inp.maxOccurs,
                    _typed(default, inp.dataType) if default is not None else None,
                    [v for v in (inp.allowedValues or []) if v is not None], ranges, uom))
                used.add(name)
            self._descriptions[identifier] = (process, infos)
        return self._descriptions[identifier]

    def _method(self, identifier: str) -> Callable:
        if identifier in self._methods:
            return self._methods[identifier]
        process, infos = self._describe(identifier)
        name = _pyname(identifier)
        by_name = {i.name: i for i in infos}
        controls = [c for c in CONTROL_OPTIONS if c not in by_name]
        client = self

        def call(**kwargs):
            options = {c: kwargs.pop(c) for c in controls if c in kwargs}
            return client._call(identifier, kwargs, **options)

        params = []
        for info in sorted(infos, key=lambda i: not i.required):
            default = inspect.Parameter.empty if info.required else info.default
            params.append(inspect.Parameter(info.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=info.py_type()))
        option_types = {"wait": (bool, True), "progress": (Union[bool, Callable, None], None),
                        "download_dir": (Union[str, os.PathLike, None], None)}
        for c in controls:
            t, d = option_types[c]
            params.append(inspect.Parameter(c, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=t))
        call.__signature__ = inspect.Signature(params, return_annotation=Union[Result, Job])
        call.__name__ = name
        call.__qualname__ = f"Client.{name}"
        call.__doc__ = self._docstring(process, infos, controls)
        self._methods[identifier] = call
        return call

    def _docstring(self, process, infos: List[_InputInfo], controls: Sequence[str]) -> str:
        import textwrap

        def wrap(text, indent=""):
            return "\n".join(textwrap.wrap(text, 92, initial_indent=indent, subsequent_indent=indent))

        lines = [process.title or process.identifier, "", wrap(process.abstract or "").strip(), "",
                 wrap(f"Runs the WPS process ``{process.identifier}`` of {self.url}. Inputs not given take the "
                      "process's defaults."), "", "Parameters", "----------"]
        lines += [i.doc() for i in sorted(infos, key=lambda i: not i.required)]
        docs = {"wait": "wait : bool, optional\n    Block until the job ends and return its Result (default), or "
                        "return a Job\n    at once.",
                "progress": "progress : bool or callable, optional\n    A tqdm progress bar (True), a callable "
                            "``progress(fraction, message)``,\n    or nothing (False). Default: the client's.",
                "download_dir": "download_dir : path, optional\n    Where this job's file outputs are "
                                "downloaded (default: the client's)."}
        lines += [docs[c] for c in controls]
        lines += ["", "Returns", "-------", "Result or Job",
                  "    A Result (``wait=True``) with these outputs, or a Job (``wait=False``):"]
        for out in process.processOutputs:
            is_ref = out.dataType == "ComplexData"
            mimes = []
            if is_ref:
                for fmt in (getattr(out, "supportedValues", None) or []) + [getattr(out, "defaultValue", None)]:
                    mt = getattr(fmt, "mimeType", None)
                    if mt and mt not in mimes:
                        mimes.append(mt)
                kind = "dict (JSON)" if "application/json" in mimes else "pathlib.Path"
                kind += f" ({mimes[0]})" if mimes and "application/json" not in mimes else ""
            else:
                kind = _PY_TYPES.get(out.dataType or "", str).__name__
            title = getattr(out, "title", "") or ""
            text = " ".join(x for x in (title.rstrip(".") + "." if title else "", (out.abstract or "").strip()) if x)
            lines.append(f"    {out.identifier} : {kind}")
            if text:
                lines.append(wrap(text, "        "))
        lines += ["", "Raises", "------",
                  "TypeError", "    An unknown keyword, a missing required input, or a value of the wrong type.",
                  "WPSJobError", "    The server refused the request (its ExceptionReport message, e.g. a value "
                                 "out of range)\n    or the job failed or was dismissed.",
                  "WPSError", "    The server could not be reached or read after the retries."]
        return "\n".join(lines)

    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("url", "headers", "session"):
            raise AttributeError(name)
        titles = self._capabilities()
        ident = name if name in titles else self._py_to_id.get(name)
        if ident is None:
            raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}, and {self.url} has no process "
                                 f"{name!r}; processes: {', '.join(titles)}")
        return self._method(ident)

    def __dir__(self):
        names = set(super().__dir__())
        try:
            names |= {_pyname(i) for i in self._capabilities()}
        except WPSError:
            pass
        return sorted(names)

    # -- execution ------------------------------------------------------------------------------------
    def execute(self, process: str, inputs: Optional[Mapping[str, Any]] = None, wait: bool = True,
                progress: Union[bool, Callable[[float, str], None], None] = None,
                download_dir: Union[str, os.PathLike, None] = None) -> Union[Result, Job]:
        """Run a process by identifier with ``inputs`` (what the process methods call).

        Parameters
        ----------
        process : str
            The process identifier.
        inputs : mapping
            ``{input: value}``; ``None`` values are left out; lists for repeatable inputs.
        wait, progress, download_dir
            As for the process methods (see :meth:`Job.wait`).

        Returns
        -------
        Result or Job

        Raises
        ------
        TypeError
            Unknown or missing inputs, or a value of the wrong type.
        WPSJobError
            The server refused the request or the job failed.
        WPSError
            The server could not be reached.
        """
        titles = self._capabilities()
        if process not in titles:
            raise WPSError(f"{self.url} has no process {process!r}; processes: {', '.join(titles)}")
        return self._call(process, dict(inputs or {}), wait=wait, progress=progress, download_dir=download_dir)

    def _call(self, identifier: str, kwargs: Dict[str, Any], wait: bool = True, progress=None,
              download_dir=None):
        from owslib.wps import ASYNC, ComplexDataInput, WPSExecution
        from owslib.etree import etree

        process, infos = self._describe(identifier)
        method = _pyname(identifier)
        by_name = {i.name: i for i in infos}
        by_name.update({i.identifier: i for i in infos})
        unknown = [k for k in kwargs if k not in by_name]
        if unknown:
            raise TypeError(f"{method}() got an unexpected keyword argument {unknown[0]!r}; inputs: "
                            f"{', '.join(i.name for i in infos)}")
        given = {by_name[k].identifier: v for k, v in kwargs.items() if v is not None}
        missing = [i.name for i in infos if i.required and i.identifier not in given]
        if missing:
            raise TypeError(f"{method}() missing required keyword argument" + ("s" if len(missing) > 1 else "")
                            + ": " + ", ".join(repr(m) for m in missing))
        wps_inputs = []
        for info in infos:
            if info.identifier not in given:
                continue
            value = given[info.identifier]
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            if len(values) > 1 and not info.repeatable:
                raise TypeError(f"{method}(): {info.name} takes one value, got {len(values)}")
            if info.max_occurs > 0 and len(values) > info.max_occurs:
                raise TypeError(f"{method}(): {info.name} takes at most {info.max_occurs} values, got {len(values)}")
            for v in values:
                text = _literal(v, info, method)
                if info.kind == "complex":
                    wps_inputs.append((info.identifier, ComplexDataInput(text) if re.match(r"^https?://", text)
                                       else ComplexDataInput(text, mimeType=None)))
                else:
                    wps_inputs.append((info.identifier, text))
        outputs = [(o.identifier, True if o.dataType == "ComplexData" else None, None)
                   for o in process.processOutputs]
        execution = WPSExecution(version="1.0.0", url=self.wps_url, headers=dict(self.headers), timeout=self.timeout)
        body = etree.tostring(execution.buildRequest(identifier, wps_inputs, output=outputs, mode=ASYNC))
        execution.request = body
        r = self._request("POST", self.wps_url, data=body, headers={"Content-Type": "text/xml"},
                          what=f"Execute {identifier}")
        root = _parse_xml(r.content)
        if root is None:
            raise WPSError(f"Execute {identifier}: HTTP {r.status_code}, not a WPS response: {self._error_text(r)}")
        if _local(root.tag) == "ExceptionReport":
            msg, code, locator = _exception_message(root)
            if r.status_code in (401, 403):
                raise WPSError(f"Execute {identifier}: {msg} (HTTP {r.status_code})")
            raise WPSJobError(msg, process=identifier, code=code, locator=locator)
        if _local(root.tag) != "ExecuteResponse":
            raise WPSError(f"Execute {identifier}: unexpected {_local(root.tag)} document (HTTP {r.status_code})")
        execution.parseResponse(root)
        location = self._local_url(root.get("statusLocation") or execution.statusLocation)
        dl = Path(download_dir).expanduser() if download_dir is not None else None
        if not location:  # a server that ran it synchronously
            status = _status_state(root)
            if status != "succeeded":
                msg = "; ".join(e.text for e in execution.errors if e.text) or execution.statusMessage or status
                raise WPSJobError(msg, process=identifier, state="failed")
            return Result(self, identifier, "sync", None, execution.processOutputs, execution.statusMessage or "",
                          dl or Path(tempfile.mkdtemp(prefix="geoml-hub-sync-")))
        job = Job(self, identifier, location, execution, progress=progress)
        if dl is not None:
            job._download_dir = dl / job.job_id
        if not wait:
            return job
        return job.wait()

    # -- the job API ---------------------------------------------------------------------------------
    def _jobs_url(self) -> str:
        self._resolve()
        if not self._base:
            raise WPSError(f"{self.url} has no geoml-hub job API (give the service base URL)")
        return self._base + "/jobs"

    def _json(self, method: str, url: str, what: str, ok=(200,), retry: bool = True):
        r = self._request(method, url, retry=retry and method == "GET", what=what)
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code not in ok or not isinstance(body, dict):
            msg = body.get("error") if isinstance(body, dict) and body.get("error") else self._error_text(r)
            raise WPSError(f"{what}: HTTP {r.status_code} {msg}".strip())
        return r.status_code, body

    def jobs(self, status: Union[str, Sequence[str], None] = None, limit: Optional[int] = None) -> List[Dict]:
        """Your jobs on the server (``GET /jobs``), newest first.

        Parameters
        ----------
        status : str or list of str, optional
            Only jobs in these states (``queued``, ``running``, ``succeeded``, ``failed``,
            ``dismissed``).
        limit : int, optional
            At most this many.

        Returns
        -------
        list of dict
            Job records: ``job_id``, ``process``, ``status``, ``percent``, ``message``,
            ``created``, ``started``, ``finished``, ``status_location``, ...

        Raises
        ------
        WPSError
            The server has no job API or refused (e.g. HTTP 401 without a valid token).
        """
        params = {}
        if status:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if limit:
            params["limit"] = str(int(limit))
        url = self._jobs_url() + ("?" + urllib.parse.urlencode(params) if params else "")
        _, body = self._json("GET", url, "job list")
        jobs = body.get("jobs", [])
        for j in jobs:
            if j.get("status_location"):
                j["status_location"] = self._local_url(j["status_location"])
        return jobs

    def _job_record(self, job_id: str) -> Dict:
        _, body = self._json("GET", f"{self._jobs_url()}/{urllib.parse.quote(job_id)}", f"job {job_id}")
        if body.get("status_location"):
            body["status_location"] = self._local_url(body["status_location"])
        return body

    def job(self, job_id: str) -> Job:
        """A :class:`Job` handle for an existing job: by id (looked up with ``GET /jobs/<id>``)
        or by the URL of its status document (works with any WPS server).

        Raises
        ------
        WPSError
            No such job, a synchronous job (no status document), or no job API.
        """
        if re.match(r"^https?://", job_id):
            job = Job(self, "unknown", self._local_url(job_id))
            if self.download_dir is not None:
                job._download_dir = self.download_dir / job.job_id
            return job
        return self._job_from_record(self._job_record(job_id))

    def _job_from_record(self, record: Dict, location: Optional[str] = None) -> Job:
        location = location or record.get("status_location")
        if not location:
            raise WPSError(f"job {record.get('job_id')} ran synchronously and has no status document")
        job = Job(self, record.get("process") or "unknown", location)
        if self.download_dir is not None:
            job._download_dir = self.download_dir / job.job_id
        return job

    def cancel(self, job_id: Union[str, Job]) -> bool:
        """Cancel (dismiss) a queued or running job (``POST /jobs/<id>/cancel``).

        Returns
        -------
        bool
            ``True`` if it was cancelled, ``False`` if it had already ended.

        Raises
        ------
        WPSError
            No such job, not yours, no job API, or another refusal.
        """
        if isinstance(job_id, Job):
            job_id = job_id.job_id
        url = f"{self._jobs_url()}/{urllib.parse.quote(job_id)}/cancel"
        code, body = self._json("POST", url, f"cancel job {job_id}", ok=(200, 409), retry=False)
        if code == 409:
            if body.get("status") in _FINAL or str(body.get("error", "")).startswith("job already"):
                return False
            raise WPSError(f"cancel job {job_id}: {body.get('error') or 'refused'}")
        return True


__all__ = ["Client", "Job", "JobStatus", "Result", "WPSError", "WPSJobError", "WPSTimeoutError", "ENV_URL",
           "ENV_TOKEN"]
