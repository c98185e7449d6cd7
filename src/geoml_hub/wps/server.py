"""``geoml-hub wps serve``: run the WPS server (gunicorn or werkzeug) with its dispatcher."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from typing import Optional

LOGGER = logging.getLogger("geoml_hub.wps")

#: Seconds gunicorn keeps an idle connection open: longer than the idle time of the keep-alive
#: sockets of configurable-http-proxy (Node's agent: 5 s), or the proxy reuses a socket gunicorn
#: just closed and answers 503 "socket hang up" (seen with parallel map tile requests).
KEEPALIVE = 75


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _announce(settings, auth, host: str, port: int) -> None:
    LOGGER.info("geoml-hub WPS %s on http://%s:%s (state %s, database %s, %d parallel jobs)", settings.wps_url,
                host, port, settings.state_dir, settings.database.split("@")[-1], settings.parallelprocesses)
    for name, path in settings.data_roots.items():
        LOGGER.info("data root %s = %s", name, path)
    if getattr(auth, "standalone", False):
        LOGGER.warning("%s", auth.description)
        if not _is_loopback(host):
            LOGGER.warning("standalone mode on the non-loopback address %s: anyone who reaches it can run jobs", host)


def serve(settings, host: str = "127.0.0.1", port: int = 5000, server: str = "gunicorn", workers: int = 2,
          threads: int = 8, ready_file: Optional[str] = None) -> int:
    """Serve the WPS endpoint, job API and outputs until interrupted.

    Parameters
    ----------
    settings : Settings
        Server settings (prepared here).
    host, port : str, int
        Address to bind (loopback by default).
    server : {'gunicorn', 'werkzeug'}
        gunicorn (production: ``workers`` processes of ``threads`` threads, the dispatcher in its own
        process) or werkzeug's threaded development server (one process).
    ready_file : str, optional
        Written once the server accepts requests (used by tests and ``geoml-hub up``).
    """
    from .app import make_app
    from .auth import make_authenticator
    from .dispatcher import Dispatcher
    from .service import build_service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    service = build_service(settings)
    auth = make_authenticator(settings)
    app = make_app(settings, service, auth)
    _announce(settings, auth, host, port)

    if server == "werkzeug":
        dispatcher = Dispatcher(settings, service)
        return run_wsgi(app, host, port, "werkzeug", ready_file=ready_file, proc_name="geoml-hub-wps",
                        on_start=dispatcher.start, on_stop=lambda: dispatcher.stop(requeue=True))
    import subprocess
    import sys

    state = {}

    def start_dispatcher():
        # a process, not a thread: gunicorn forks HTTP workers from this master (see dispatcher.main)
        state["dispatcher"] = subprocess.Popen([sys.executable, "-m", "geoml_hub.wps.dispatcher",
                                                str(settings.settings_file)])

    def stop_dispatcher():
        proc = state.get("dispatcher")
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    return run_wsgi(app, host, port, server, workers, threads, ready_file, "geoml-hub-wps",
                    on_start=start_dispatcher, on_stop=stop_dispatcher)


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
            from pathlib import Path

            Path(ready_file).write_text(f"http://{host}:{port}\n")

    if server == "werkzeug":
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
