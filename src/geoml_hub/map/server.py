"""``geoml-hub map serve``: run the web map service (gunicorn or werkzeug)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Optional

from ..wps.server import KEEPALIVE

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
    from .app import make_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    app = make_app(settings)
    LOGGER.info("geoml-hub map %s on http://%s:%s (WPS %s, data roots %s)", settings.url, host, port,
                settings.wps_url, ", ".join(f"{k}={v}" for k, v in settings.data_roots.items()) or "none")
    if settings.auth == "none":
        LOGGER.warning("standalone mode: map requests are NOT authenticated; the WPS is called without identity")

    def _ready():
        if ready_file:
            Path(ready_file).write_text(f"http://{host}:{port}\n")

    if server == "werkzeug":
        from werkzeug.serving import make_server

        httpd = make_server(host, port, app, threaded=True)

        def _term(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _term)
        _ready()
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            LOGGER.info("stopping")
        finally:
            httpd.server_close()
        return 0
    if server != "gunicorn":
        raise ValueError(f"server must be gunicorn or werkzeug, got {server!r}")
    from gunicorn.app.base import BaseApplication

    class _App(BaseApplication):
        def load_config(self):
            opts = {"bind": f"{host}:{port}", "workers": workers, "threads": threads, "worker_class": "gthread",
                    "timeout": 300, "graceful_timeout": 10, "keepalive": KEEPALIVE, "accesslog": None,
                    "errorlog": "-",
                    "loglevel": "info", "when_ready": lambda _s: _ready(), "proc_name": "geoml-hub-map"}
            for k, v in opts.items():
                self.cfg.set(k, v)

        def load(self):
            return app

    _App().run()
    return 0
