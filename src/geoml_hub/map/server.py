"""``geoml-hub map serve``: run the web map service (gunicorn or werkzeug)."""

from __future__ import annotations

import logging
from typing import Optional

from ..web.serving import run_wsgi
from .app import make_app

LOGGER = logging.getLogger("geoml_hub.map")


def serve(settings, host: str = "127.0.0.1", port: int = 5100, server: str = "gunicorn", workers: int = 2,
          threads: int = 8, ready_file: Optional[str] = None) -> int:
    """Serve the map until interrupted.

    Parameters
    ----------
    settings : MapSettings
    host, port : str, int
        Address to bind (loopback by default).
    server : {'gunicorn', 'werkzeug'}
        gunicorn (``workers`` processes of ``threads`` threads) or werkzeug's threaded server.
    ready_file : str, optional
        Written once the server accepts requests (tests, ``geoml-hub up``).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    app = make_app(settings)
    LOGGER.info("geoml-hub map %s on http://%s:%s (WPS %s, data roots %s)", settings.url, host, port,
                settings.wps_url, ", ".join(f"{k}={v}" for k, v in settings.data_roots.items()) or "none")
    if settings.auth == "none":
        LOGGER.warning("standalone mode: map requests are NOT authenticated; the WPS is called without identity")

    return run_wsgi(app, host, port, server, workers, threads, ready_file, "geoml-hub-map")
