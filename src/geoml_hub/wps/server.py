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

    def _ready():
        if ready_file:
            from pathlib import Path

            Path(ready_file).write_text(f"http://{host}:{port}\n")

    if server == "werkzeug":
        from werkzeug.serving import make_server

        httpd = make_server(host, port, app, threaded=True)

        def _term(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _term)
        dispatcher = Dispatcher(settings, service)
        dispatcher.start()
        _ready()
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            LOGGER.info("stopping")
        finally:
            httpd.server_close()
            dispatcher.stop(requeue=True)
        return 0

    if server != "gunicorn":
        raise ValueError(f"server must be gunicorn or werkzeug, got {server!r}")
    import subprocess
    import sys

    from gunicorn.app.base import BaseApplication

    state = {}

    class _App(BaseApplication):
        def load_config(self):
            opts = {"bind": f"{host}:{port}", "workers": workers, "threads": threads, "worker_class": "gthread",
                    "timeout": 300, "graceful_timeout": 10, "keepalive": KEEPALIVE, "accesslog": None,
                    "errorlog": "-",
                    "loglevel": "info", "when_ready": self._when_ready, "on_exit": self._on_exit,
                    "proc_name": "geoml-hub-wps"}
            for k, v in opts.items():
                self.cfg.set(k, v)

        @staticmethod
        def _when_ready(_server):
            # a process, not a thread: gunicorn forks HTTP workers from this master (see dispatcher.main)
            state["dispatcher"] = subprocess.Popen([sys.executable, "-m", "geoml_hub.wps.dispatcher",
                                                    str(settings.settings_file)])
            _ready()

        @staticmethod
        def _on_exit(_server):
            proc = state.get("dispatcher")
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()

        def load(self):
            return app

    _App().run()
    return 0
