"""The WPS's STAC catalogue: the data roots and the published jobs, kept in the state directory.

:func:`refresh_catalog` (re)builds it with :func:`geoml_hub.catalog.build_catalog` into
``<state>/stac`` (a symbolic link swapped atomically to a new folder, see
:func:`geoml_hub.catalog.save_catalog`), with the cache ``<state>/stac-cache.json`` so that
unchanged rasters are not opened again. It runs when the dispatcher starts (in the background,
logged), after every publish and withdrawal (:mod:`geoml_hub.wps.http.app`) and after the
retention policy removed a published job's outputs (:meth:`Dispatcher.sweep`): the results
collection is the published jobs whose outputs are still kept.

Hrefs are relative, so the same files are right behind any prefix (``/services/wps/`` under the
hub): the catalogue is served at ``<service>/stac/``, a data-root file at
``<service>/data/<root>/<path>`` and a published output at ``<service>/outputs/<job>/<file>``,
each with the WPS's own rules (:mod:`geoml_hub.wps.http.app`).
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Optional

from ...catalog import Cache, Result, build_catalog, save_catalog

LOGGER = logging.getLogger("geoml_hub.wps")


def catalog_dir(settings) -> Path:
    """``<state>/stac``: the served catalogue (``catalog.json`` at its top)."""
    return settings.state_dir / "stac"


def _href_for(kind: str, name: str, rel: str, path: Path) -> str:
    """Hrefs relative to the catalogue's root folder, served at ``<service>/stac/``."""
    quoted = urllib.parse.quote(rel)
    if kind == "data":
        return f"../data/{urllib.parse.quote(name)}/{quoted}"
    return f"../outputs/{name}/{quoted}"


def published_results(settings, store):
    """The published jobs whose outputs are kept, as :class:`geoml_hub.catalog.Result`."""
    out = []
    for job in store.published(limit=5000):
        folder = settings.results_dir / job.owner / job.uuid
        if folder.is_dir():
            out.append(Result(job.uuid, job.identifier, job.owner, folder, job.finished))
    return out


def refresh_catalog(settings, store, progress=None) -> Path:
    """Build the catalogue of ``settings``' data roots and ``store``'s published jobs and put it
    in place (one build at a time: a lock file in the state directory).

    Parameters
    ----------
    settings : Settings
    store : JobStore
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    Path
        The catalogue's folder.
    """
    target = catalog_dir(settings)
    with open(settings.state_dir / "stac.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            cache = Cache(settings.state_dir / "stac-cache.json")
            catalog = build_catalog(settings.data_roots, _href_for, cache, published_results(settings, store),
                                    progress=progress)
            save_catalog(catalog, target, link=True)
            cache.save()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def refresh_logged(settings, store, why: str) -> Optional[Path]:
    """:func:`refresh_catalog`, with a log line; an error is logged, never raised (a publish or the
    dispatcher goes on without a fresh catalogue)."""
    started = time.monotonic()
    try:
        path = refresh_catalog(settings, store)
    except Exception:
        LOGGER.exception("STAC catalogue (%s): not rebuilt", why)
        return None
    LOGGER.info("STAC catalogue (%s): %s in %.1f s", why, path, time.monotonic() - started)
    return path


def refresh_in_background(settings, store, why: str) -> threading.Thread:
    """:func:`refresh_logged` in a daemon thread (the start-up build: the server answers
    meanwhile, ``/stac/`` with 503 until the first catalogue is in place)."""
    thread = threading.Thread(target=refresh_logged, args=(settings, store, why), name="geoml-stac", daemon=True)
    thread.start()
    return thread
