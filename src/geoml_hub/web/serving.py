"""Running a WSGI application with gunicorn or werkzeug (the WPS and the web map): :func:`run_wsgi`."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Optional

LOGGER = logging.getLogger("geoml_hub.web")

#: Seconds gunicorn keeps an idle connection open: longer than the idle time of the keep-alive
#: sockets of configurable-http-proxy (Node's agent: 5 s), or the proxy reuses a socket gunicorn
#: just closed and answers 503 "socket hang up" (seen with parallel map tile requests).
KEEPALIVE = 75


def run_wsgi(app, host: str, port: int, server: str = "gunicorn", workers: int = 2, threads: int = 8,
             ready_file: Optional[str] = None, proc_name: str = "geoml-hub", on_start=None, on_stop=None) -> int:
    """Serve a WSGI app until SIGTERM or Ctrl-C (the WPS and the map).

    Parameters
    ----------
    app : callable
        The WSGI application.
    host, port : str, int
        Address to bind.
    server : {'gunicorn', 'werkzeug'}
        gunicorn (``workers`` processes of ``threads`` threads, ``gthread``) or werkzeug's threaded
        development server (one process).
    ready_file : str, optional
        Written (``http://HOST:PORT``) once the server accepts requests.
    proc_name : str
        gunicorn's process title.
    on_start, on_stop : callable, optional
        Called once the server listens (in gunicorn's master, before its workers serve) and when it
        stops.

    Raises
    ------
    ValueError
        For an unknown ``server``.
    """
    def ready():
        if on_start is not None:
            on_start()
        if ready_file:
            Path(ready_file).write_text(f"http://{host}:{port}\n")

    if server == "werkzeug":
        # imported here: the hub image, which runs no WSGI app, has no werkzeug
        from werkzeug.serving import make_server

        httpd = make_server(host, port, app, threaded=True)

        def _term(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _term)
        ready()
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            LOGGER.info("stopping")
        finally:
            httpd.server_close()
            if on_stop is not None:
                on_stop()
        return 0
    if server != "gunicorn":
        raise ValueError(f"server must be gunicorn or werkzeug, got {server!r}")
    # imported here: gunicorn is not needed for werkzeug's server (tests, development)
    from gunicorn.app.base import BaseApplication

    class _App(BaseApplication):
        def load_config(self):
            opts = {"bind": f"{host}:{port}", "workers": workers, "threads": threads, "worker_class": "gthread",
                    "timeout": 300, "graceful_timeout": 10, "keepalive": KEEPALIVE, "accesslog": None,
                    "errorlog": "-", "loglevel": "info", "proc_name": proc_name,
                    "when_ready": lambda _server: ready(),
                    "on_exit": lambda _server: on_stop() if on_stop is not None else None}
            for k, v in opts.items():
                self.cfg.set(k, v)

        def load(self):
            return app

    _App().run()
    return 0
