"""``geoml-hub wps serve``: run the WPS server (gunicorn or werkzeug) with its dispatcher."""

from __future__ import annotations

import ipaddress
import logging
import socket
import subprocess
import sys
from typing import Optional

from ...processes import build_service
from ...web.auth import make_authenticator
from ...web.serving import run_wsgi
from ..jobs.dispatcher import Dispatcher
from .app import make_app

LOGGER = logging.getLogger("geoml_hub.wps")



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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    service = build_service(settings)
    auth = make_authenticator(settings)
    app = make_app(settings, service, auth)
    _announce(settings, auth, host, port)

    if server == "werkzeug":
        dispatcher = Dispatcher(settings, service)
        return run_wsgi(app, host, port, "werkzeug", ready_file=ready_file, proc_name="geoml-hub-wps",
                        on_start=dispatcher.start, on_stop=lambda: dispatcher.stop(requeue=True))
    state = {}

    def start_dispatcher():
        # a process, not a thread: gunicorn forks HTTP workers from this master (see dispatcher.main)
        state["dispatcher"] = subprocess.Popen([sys.executable, "-m", "geoml_hub.wps.jobs.dispatcher",
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
