"""The job system of the WPS: the job table (:mod:`.store`), the dispatcher that starts, watches
and cancels jobs (:mod:`.dispatcher`), the worker that runs one job (:mod:`.worker`), and the
backends it runs them on: local worker processes (the dispatcher's own) and Kubernetes Jobs
(:mod:`.kubernetes`).

Before issue 13 this was the module ``geoml_hub.wps.jobs`` (now :mod:`.store`): its names are
still found here, with a :class:`DeprecationWarning`.
"""

import importlib
import warnings


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    store = importlib.import_module(".store", __name__)
    try:
        value = getattr(store, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    warnings.warn(f"geoml_hub.wps.jobs.{name} moved to geoml_hub.wps.jobs.store.{name}", DeprecationWarning,
                  stacklevel=2)
    return value
