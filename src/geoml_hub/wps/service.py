"""The PyWPS service with geoml-hub's processes.

:func:`load_processes` imports every module of ``geoml_hub.processes`` (the repository's
``processes/`` directory) and instantiates its :class:`~geoml_hub.wps.process.GeomlProcess`
subclass; :func:`build_service` makes the :class:`pywps.Service` for a :class:`Settings`.

Job ids are random (:func:`uuid.uuid4`): PyWPS names a request with :func:`uuid.uuid1`, whose
node and clock sequence are the same for every user of a server and whose time part can be
guessed, so importing this module makes PyWPS's request ids version-4 UUIDs.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import importlib
import inspect
import pkgutil
import sys
import types
import uuid
from typing import List, Optional

from pywps import Service

from .process import GeomlProcess
from .settings import Settings

LOGGER = logging.getLogger("geoml_hub.wps")

# PyWPS's Service.call names every request (the job id) with ``uuid.uuid1()``: give its module
# a ``uuid`` whose uuid1 is random (uuid4) instead
sys.modules[Service.__module__].uuid = types.SimpleNamespace(uuid1=uuid.uuid4, uuid4=uuid.uuid4, UUID=uuid.UUID)

#: The processes, in the order GetCapabilities lists them.
PROCESS_IDENTIFIERS = ("extract_samples", "balance_samples", "train_model", "evaluate_model", "classify_scene",
                       "validate_classification", "compare_classifications")


def process_classes() -> List[type]:
    """The process classes defined in ``geoml_hub.processes``, in :data:`PROCESS_IDENTIFIERS` order
    (other processes after them, by module name)."""
    import geoml_hub.processes as pkg

    classes = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, GeomlProcess) and obj is not GeomlProcess and obj.__module__ == module.__name__:
                classes.append(obj)
    order = {ident: i for i, ident in enumerate(PROCESS_IDENTIFIERS)}
    instances = [(cls, cls()) for cls in classes]
    instances.sort(key=lambda ci: (order.get(ci[1].identifier, len(order)), ci[1].identifier))
    return [cls for cls, _ in instances]


def load_processes() -> List[GeomlProcess]:
    """One instance of every process (PyWPS deep-copies it per request)."""
    return [cls() for cls in process_classes()]


class GeomlService(Service):
    """PyWPS's Service that logs unexpected errors (PyWPS answers them with a bare
    "No applicable error code" and logs nothing) and reports them in one clean line."""

    def execute(self, identifier, wps_request, uuid):
        from pywps.exceptions import NoApplicableCode
        from werkzeug.exceptions import HTTPException

        from .process import wps_message

        try:
            return super().execute(identifier, wps_request, uuid)
        except (NoApplicableCode, HTTPException):
            raise
        except Exception as exc:
            LOGGER.exception("Execute %s failed", identifier)
            raise NoApplicableCode(wps_message(f"internal error: {type(exc).__name__}: {exc}"), code=500) from None


    def _parse_and_execute(self, process, wps_request, uuid):
        """Refuse inputs the process does not declare (PyWPS drops them silently, so a misspelt
        ``epoch=2`` would train with the default), and remove the working directory PyWPS made
        for a request that is refused."""
        from pywps.exceptions import InvalidParameterValue

        try:
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


def build_service(settings: Settings, processes: Optional[List] = None) -> Service:
    """The :class:`pywps.Service` for ``settings`` (the settings are prepared and activated first).

    Parameters
    ----------
    settings : Settings
        Server settings; ``settings.prepare()`` writes ``pywps.cfg`` under the state directory.
    processes : list, optional
        Process instances (default: :func:`load_processes`).
    """
    settings.prepare()
    return GeomlService(processes=processes if processes is not None else load_processes(),
                   cfgfiles=[str(settings.pywps_cfg)])


def process_copy(service: Service, identifier: str) -> GeomlProcess:
    """A fresh copy of a service's process without creating a working directory."""
    return copy.deepcopy(service.processes[identifier])


def build_service_light(settings: Settings, processes: Optional[List] = None) -> Service:
    """Like :func:`build_service` for already prepared settings (job workers: nothing is written)."""
    settings.activate()
    return GeomlService(processes=processes if processes is not None else load_processes(),
                   cfgfiles=[str(settings.pywps_cfg)])
