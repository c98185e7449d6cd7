"""The client: :class:`Client`, a WPS 1.0.0 client whose processes are methods.

It builds and reads the protocol's documents with OWSLib and sends every request through one
:class:`requests.Session` (:mod:`geoml_hub.client.session`); process methods come from
:mod:`geoml_hub.client.methods`, results from :mod:`geoml_hub.client.outputs`, jobs and the
JSON job API from :mod:`geoml_hub.client.jobs`.
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import pystac
import requests
from owslib.etree import etree
from owslib.wps import ASYNC, ComplexDataInput, WebProcessingService, WPSExecution
from pystac.stac_io import DefaultStacIO

from .. import __version__
import geoml_hub.client.session as session
from .converters import InputInfo, exception_message, input_infos, literal, local, parse_xml, pyname, status_state
from .errors import WPSError, WPSJobError
from .jobs import Job, JobsAPI
from .methods import build_method
from .outputs import Result

LOGGER = session.LOGGER

#: Environment variable with the service URL (base URL or ``/wps`` endpoint).
ENV_URL = "GEOML_WPS_URL"
#: Environment variable with the JupyterHub API token (set in every single-user server).
ENV_TOKEN = "JUPYTERHUB_API_TOKEN"


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "geoml-hub" / "jobs"


class Client(JobsAPI):
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
        How often a request is retried at most, by urllib3's ``Retry`` on the session's
        adapter: GET requests after a connection error, a timeout or an HTTP 408/425/429/5xx,
        with exponential backoff (the first retry at once, then 0.5 s doubling, at most 8 s);
        an Execute or cancel POST only when its connection could not be opened. Status
        documents are fetched again, under the same policy, when they come back empty, not
        well-formed or HTTP 404 (not written yet), downloads when they come back short.
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
        self.headers = {"User-Agent": f"geoml-hub-client/{__version__}"}
        if token:
            self.headers["Authorization"] = f"token {token.strip()}"
        self.session = session.make_session(self.headers, verify, session.retry_policy(self.retries))
        self._resolved = False
        self._wps_url: Optional[str] = None
        self._base: Optional[str] = None
        self._advertised: Optional[str] = None
        self._owslib: Optional[WebProcessingService] = None
        self._process_titles: Optional[Dict[str, str]] = None
        self._py_to_id: Dict[str, str] = {}
        self._descriptions: Dict[str, Tuple[Any, List[InputInfo]]] = {}
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
            r = self._request("GET", self.url)
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

    def catalog(self):
        """The service's STAC catalogue of the data roots and the published results
        (``<service>/stac/catalog.json``, docs/catalog.md), read through this client's session (its
        token, retries and timeout): walk it with pystac, e.g. ``{i.properties["geoml:dataset"]: i
        for i in client.catalog().get_items(recursive=True)}`` gives every dataset name an input
        takes, with its footprint and bands.

        Returns
        -------
        pystac.Catalog

        Raises
        ------
        WPSError
            If the service has no catalogue (not a geoml-hub WPS) or it cannot be read.
        """
        self._resolve()
        if not self._base:
            raise WPSError(f"{self.url}: not a geoml-hub service (no base URL), so no STAC catalogue")
        client = self

        class SessionStacIO(DefaultStacIO):
            def read_text_from_href(self, href: str) -> str:
                if not re.match(r"^https?://", href, re.I):
                    return super().read_text_from_href(href)
                r = client._request("GET", client._local_url(href), what="the STAC catalogue")
                if r.status_code != 200:
                    raise WPSError(f"{href}: {r.status_code} {client._error_text(r)}")
                return r.text

        return pystac.Catalog.from_file(self._base + "/stac/catalog.json", stac_io=SessionStacIO())

    @property
    def wps_url(self) -> str:
        """The WPS endpoint (found at first use, see the class notes)."""
        self._resolve()
        return self._wps_url

    @property
    def wps(self) -> WebProcessingService:
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

    # -- HTTP (geoml_hub.client.session) ------------------------------------------------------------
    def _request(self, method: str, url: str, what: Optional[str] = None, **kwargs) -> requests.Response:
        """One request through the session (whose adapter retries); the answer whatever its status.

        Raises
        ------
        WPSError
            Connection errors or timeouts on every attempt.
        """
        return session.request(self.session, method, url, self.timeout, what=what, **kwargs)

    def _get_xml(self, url: str, what: str, expect: str, params=None, retry_404: bool = False):
        """GET an XML document whose root is ``expect`` (:func:`geoml_hub.client.session.get_xml`)."""
        return session.get_xml(self.session, url, what, expect, self.timeout, params=params, retry_404=retry_404)

    @staticmethod
    def _error_text(r: requests.Response) -> str:
        return session.error_text(r)

    def _download(self, url: str, dest: Path) -> Path:
        """Download ``url`` to ``dest`` (:func:`geoml_hub.client.session.download`)."""
        return session.download(self.session, url, dest, self.timeout)

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
            root = self._get_xml(self.wps_url, "GetCapabilities", "Capabilities",
                                 params={"service": "WPS", "request": "GetCapabilities", "version": "1.0.0"})
            wps = WebProcessingService(self.wps_url, version="1.0.0", skip_caps=True, headers=dict(self.headers),
                                       timeout=self.timeout)
            wps.getcapabilities(xml=etree.tostring(root))
            self._owslib = wps
            self._process_titles = {p.identifier: (p.title or p.identifier) for p in wps.processes}
            self._py_to_id = {pyname(i): i for i in self._process_titles}
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

    def _describe(self, identifier: str) -> Tuple[Any, List[InputInfo]]:
        if identifier not in self._descriptions:
            root = self._get_xml(self.wps_url, f"DescribeProcess {identifier}", "ProcessDescriptions",
                                 params={"service": "WPS", "request": "DescribeProcess", "version": "1.0.0",
                                         "identifier": identifier})
            process = self.wps.describeprocess(identifier, xml=etree.tostring(root))
            self._descriptions[identifier] = (process, input_infos(process, root))
        return self._descriptions[identifier]

    def _method(self, identifier: str) -> Callable:
        if identifier not in self._methods:
            process, infos = self._describe(identifier)
            self._methods[identifier] = build_method(self._call, identifier, pyname(identifier), process, infos,
                                                     self.url)
        return self._methods[identifier]

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
            names |= {pyname(i) for i in self._capabilities()}
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
        process, infos = self._describe(identifier)
        method = pyname(identifier)
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
                text = literal(v, info, method)
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
        root = parse_xml(r.content)
        if root is None:
            raise WPSError(f"Execute {identifier}: HTTP {r.status_code}, not a WPS response: {self._error_text(r)}")
        if local(root.tag) == "ExceptionReport":
            msg, code, locator = exception_message(root)
            if r.status_code in (401, 403):
                raise WPSError(f"Execute {identifier}: {msg} (HTTP {r.status_code})")
            raise WPSJobError(msg, process=identifier, code=code, locator=locator)
        if local(root.tag) != "ExecuteResponse":
            raise WPSError(f"Execute {identifier}: unexpected {local(root.tag)} document (HTTP {r.status_code})")
        execution.parseResponse(root)
        location = self._local_url(root.get("statusLocation") or execution.statusLocation)
        dl = Path(download_dir).expanduser() if download_dir is not None else None
        if not location:  # a server that ran it synchronously
            status = status_state(root)
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
