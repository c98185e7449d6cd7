"""A Jupyter server extension: a kernel that is busy counts as activity.

jupyter_server's ``last_activity`` moves when a kernel sends a message, not while it
computes quietly (a long training step), so jupyterhub-idle-culler would stop a server
whose kernel is busy training. Every few seconds this extension looks at the kernels;
while one is busy it sets ``settings["geoml_busy_last_activity"]`` to now, and jupyter_server
counts every setting ending in ``_last_activity``. ``geoml-hub up`` enables it in every
user server (``--ServerApp.jpserver_extensions``).
"""

from __future__ import annotations

import datetime as dt

SETTING = "geoml_busy_last_activity"


def _jupyter_server_extension_points():
    return [{"module": "geoml_hub.hub.busy_activity"}]


def busy_kernels(kernel_manager) -> int:
    n = 0
    for kid in list(kernel_manager.list_kernel_ids()):
        try:
            if getattr(kernel_manager.get_kernel(kid), "execution_state", None) == "busy":
                n += 1
        except KeyError:
            pass
    return n


def _load_jupyter_server_extension(serverapp):
    from tornado.ioloop import PeriodicCallback

    settings = serverapp.web_app.settings

    def check():
        if busy_kernels(serverapp.kernel_manager):
            settings[SETTING] = dt.datetime.now(dt.timezone.utc)

    callback = PeriodicCallback(check, 5000)
    callback.start()
    settings["geoml_busy_activity_callback"] = callback
    serverapp.log.info("geoml-hub: busy kernels count as activity for the idle culler")
