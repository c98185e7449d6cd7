"""The PyWPS service: :class:`GeomlService` and :func:`build_service`.

:func:`build_service` makes the :class:`pywps.Service` for a :class:`Settings` and the process
instances it is given. The registry of geoml-hub's processes sits above this layer
(:mod:`geoml_hub.processes`, the repository's ``processes/`` directory):
:func:`geoml_hub.processes.build_service` passes it its processes.

Job ids are random (:func:`uuid.uuid4`): PyWPS names a request with :func:`uuid.uuid1`, whose
node and clock sequence are the same for every user of a server and whose time part can be
guessed, so importing this module makes PyWPS's request ids version-4 UUIDs.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import sys
import types
import uuid
from typing import Sequence

from pywps import Service, xml_util
from pywps.exceptions import InvalidParameterValue, MissingParameterValue, NoApplicableCode
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from ...errors import ParameterError
from ..jobs.store import database_unavailable
from ..settings import Settings
from .process import GeomlProcess, wps_message

LOGGER = logging.getLogger("geoml_hub.wps")

# PyWPS's Service.call names every request (the job id) with ``uuid.uuid1()``: give its module
# a ``uuid`` whose uuid1 is random (uuid4) instead
sys.modules[Service.__module__].uuid = types.SimpleNamespace(uuid1=uuid.uuid4, uuid4=uuid.uuid4, UUID=uuid.UUID)


class GeomlService(Service):
    """PyWPS's Service that logs unexpected errors (PyWPS answers them with a bare
    "No applicable error code" and logs nothing) and reports them in one clean line."""

    def execute(self, identifier, wps_request, uuid):
        try:
            return super().execute(identifier, wps_request, uuid)
        except (NoApplicableCode, HTTPException):
            raise
        except SQLAlchemyError as exc:  # never the SQL statement or the driver's text
            raise database_unavailable(exc) from None
        except Exception as exc:
            LOGGER.exception("Execute %s failed", identifier)
            raise NoApplicableCode(wps_message(f"internal error: {type(exc).__name__}: {exc}"), code=500) from None


    def call(self, http_request):
        """PyWPS's request handling, after refusing a POST body whose root element is not a WPS
        request with a clear ExceptionReport (PyWPS 4.8 answers it with a 500 "No applicable
        error code")."""
        problem = foreign_root(http_request)
        if problem is not None:
            return problem
        return super().call(http_request)

    def _parse_and_execute(self, process, wps_request, uuid):
        """Refuse inputs the process does not declare (PyWPS drops them silently, so a misspelt
        ``epoch=2`` would train with the default), inputs given more often than they may be
        (PyWPS keeps the last ``max_occurs`` values silently) and missing required inputs (named,
        also for an empty ``DataInputs``); remove the working directory PyWPS made for a request
        that is refused."""
        try:
            check_input_counts(process, wps_request)
            known = {i.identifier for i in process.inputs}
            unknown = sorted(set(wps_request.inputs) - known)
            if unknown:
                raise InvalidParameterValue(
                    f"unknown input {unknown[0]} for process {process.identifier}; inputs: {', '.join(sorted(known))}",
                    unknown[0])
            return super()._parse_and_execute(process, wps_request, uuid)
        except BaseException:
            workdir = getattr(process, "workdir", None)
            if workdir and os.path.isdir(workdir):
                shutil.rmtree(workdir, ignore_errors=True)
            raise


WPS_NAMESPACES = ("http://www.opengis.net/wps/1.0.0", "http://www.opengis.net/wps/2.0")
WPS_REQUESTS = ("GetCapabilities", "DescribeProcess", "Execute")


def foreign_root(http_request):
    """An ``InvalidParameterValue`` ExceptionReport when a POSTed XML body's root element is not a
    WPS request (``GetCapabilities``, ``DescribeProcess`` or ``Execute`` of WPS 1.0.0 or 2.0),
    else ``None`` (also for bodies that are no XML at all: PyWPS reports those itself)."""
    if http_request.method != "POST" or "json" in (http_request.content_type or ""):
        return None
    try:
        root = xml_util.fromstring(http_request.get_data())
    except Exception:
        return None
    tag = root.tag if isinstance(root.tag, str) else ""
    ns, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    if ns in WPS_NAMESPACES and local in WPS_REQUESTS:
        return None
    shown = f"{local[:60]} in namespace {ns[:100]}" if ns else f"{local[:60]} without a namespace"
    return InvalidParameterValue(f"the request body is not a WPS request: its root element is {shown}; expected "
                                 f"{', '.join(WPS_REQUESTS)} of {WPS_NAMESPACES[0]}", "request")


def check_input_counts(process, wps_request) -> None:
    """Refuse an input given more often than its ``max_occurs`` and a missing required input
    (an empty ``DataInputs=`` counts as no input).

    Raises
    ------
    InvalidParameterValue, MissingParameterValue
        Naming the input, with the input as locator.
    """
    inputs = wps_request.inputs
    if "" in inputs:  # DataInputs= parses to {"": {"identifier": "", "data": ""}}
        values = inputs[""] if isinstance(inputs[""], list) else [inputs[""]]
        if any(isinstance(v, dict) and v.get("data") not in (None, "") for v in values):
            raise InvalidParameterValue("DataInputs: a value without an input name", "DataInputs")
        del inputs[""]
    for inp in process.inputs:
        given = inputs.get(inp.identifier) or []
        n = len(given) if isinstance(given, list) else 1
        if n > inp.max_occurs:
            most = "it takes one value" if inp.max_occurs == 1 else f"at most {inp.max_occurs} values"
            raise InvalidParameterValue(f"input {inp.identifier}: given {n} times; {most}", inp.identifier)
    required = [i.identifier for i in process.inputs if i.min_occurs > 0]
    missing = [name for name in required if not inputs.get(name)]
    if missing:
        raise MissingParameterValue(f"missing input {missing[0]}: {process.identifier} needs "
                                    f"{', '.join(required)}", missing[0])


def check_kubernetes_processes(settings: Settings, processes: Sequence[GeomlProcess]) -> None:
    """Refuse a ``kubernetes_processes`` setting that names a process which may not run as a
    Kubernetes Job (its class attribute ``kubernetes`` is false) or is not served.

    Raises
    ------
    ParameterError
        Naming the processes and those allowed.
    """
    capable = [p.identifier for p in processes if getattr(p, "kubernetes", False)]
    bad = sorted(set(settings.kubernetes_processes) - set(capable))
    if bad:
        raise ParameterError(f"kubernetes_processes: {', '.join(bad)} cannot run as Kubernetes Jobs; "
                             f"allowed: {', '.join(capable)}")


def build_service(settings: Settings, processes: Sequence[GeomlProcess]) -> Service:
    """The :class:`pywps.Service` for ``settings`` (the settings are prepared and activated first).

    Parameters
    ----------
    settings : Settings
        Server settings; ``settings.prepare()`` writes ``pywps.cfg`` under the state directory.
    processes : list of GeomlProcess
        Process instances (:func:`geoml_hub.processes.load` gives the registry's).

    Raises
    ------
    ParameterError
        If ``kubernetes_processes`` names a process that may not run as a Kubernetes Job.
    """
    check_kubernetes_processes(settings, processes)
    settings.prepare()
    return GeomlService(processes=list(processes), cfgfiles=[str(settings.pywps_cfg)])


def process_copy(service: Service, identifier: str) -> GeomlProcess:
    """A fresh copy of a service's process without creating a working directory."""
    return copy.deepcopy(service.processes[identifier])


def build_service_light(settings: Settings, processes: Sequence[GeomlProcess]) -> Service:
    """Like :func:`build_service` for already prepared settings (job workers: nothing is written)."""
    settings.activate()
    return GeomlService(processes=list(processes), cfgfiles=[str(settings.pywps_cfg)])
