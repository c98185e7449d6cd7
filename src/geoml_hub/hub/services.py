"""The hub's services, roles and idle culler: one builder for both hubs.

:func:`hub_services` returns what ``c.JupyterHub.services`` and ``c.JupyterHub.load_roles``
get, and the activity interval the culler needs, for ``geoml-hub up``
(:mod:`geoml_hub.hub.config`: services started by the hub, with a ``command``) and for the
Helm chart (``helm/geoml-hub/files/jupyterhub_config.py``: services running in their own
Deployments, with an ``api_token``). The hub image has geoml-hub installed, so the chart's
configuration imports it.

- ``wps``: the OGC WPS at ``/services/wps/``, shown on the hub's home page;
- ``map``: the web map at ``/services/map/``; its users' OAuth tokens may call the WPS
  (``access:services!service=wps``);
- ``idle-culler``: jupyterhub-idle-culler, run by the hub, with the role it needs
  (``admin:users`` too when it culls users);
- the ``user`` role: every user may use the geoml-hub services.

Nothing here imports JupyterHub.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

#: the role of every user: own servers and the geoml-hub services
USER_ROLE = {"name": "user", "description": "geoml-hub users: own servers and the geoml-hub services",
             "scopes": ["self", "access:services"]}

WPS_DESCRIPTION = "OGC WPS: balancing, training, classification, PyCM quality control"
MAP_DESCRIPTION = "Web map: scenes and results, training polygons, the WPS processes"
CULLER_SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers")


@dataclass
class Service:
    """A geoml-hub service: where the hub reaches it and how it runs.

    ``command`` (the hub starts it, ``geoml-hub up``) or ``api_token`` (it runs elsewhere,
    Kubernetes); ``environment`` of a started service (empty: left out).
    """

    url: str
    command: Optional[Sequence[str]] = None
    api_token: Optional[str] = None
    environment: Dict[str, str] = field(default_factory=dict)


@dataclass
class Culler:
    """jupyterhub-idle-culler's options (its command-line flags; ``None``: its default)."""

    timeout: int
    every: int = 60
    concurrency: Optional[int] = None
    users: bool = False
    admin_users: bool = True
    remove_named_servers: bool = False
    max_age: int = 0
    python: str = sys.executable


@dataclass
class HubServices:
    """What :func:`hub_services` builds."""

    services: List[Dict[str, Any]]
    """``c.JupyterHub.services``"""
    roles: List[Dict[str, Any]]
    """``c.JupyterHub.load_roles``"""
    activity_interval: Optional[int] = None
    """With the culler: ``c.JupyterHub.last_activity_interval`` and the servers'
    ``JUPYTERHUB_ACTIVITY_INTERVAL`` (activity must reach the hub several times per
    timeout); ``None`` without it."""


def activity_interval(timeout: float) -> int:
    """Seconds between activity reports for a culler ``timeout``: a quarter of it, 5 to 300."""
    return int(max(5, min(300, timeout // 4)))


def _service(name: str, description: str, svc: Service, **extra: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {"name": name, "display": True, "info": {"description": description}, "url": svc.url}
    if svc.command is not None:
        out["command"] = list(svc.command)
    if svc.api_token is not None:
        out["api_token"] = svc.api_token
    out["oauth_no_confirm"] = True
    out.update(extra)
    if svc.command is not None:
        out["environment"] = dict(svc.environment)
    return out


def culler_command(culler: Culler) -> List[str]:
    """The idle culler's command line."""
    cmd = [culler.python, "-m", "jupyterhub_idle_culler", f"--timeout={int(culler.timeout)}",
           f"--cull-every={int(culler.every)}"]
    if culler.concurrency is not None:
        cmd.append(f"--concurrency={int(culler.concurrency)}")
    if culler.users:
        cmd.append("--cull-users")
    if not culler.admin_users:
        cmd.append("--cull-admin-users=false")
    if culler.remove_named_servers:
        cmd.append("--remove-named-servers")
    if culler.max_age:
        cmd.append(f"--max-age={int(culler.max_age)}")
    return cmd


def hub_services(wps: Optional[Service] = None, map: Optional[Service] = None,  # noqa: A002 (the service's name)
                 culler: Optional[Culler] = None) -> HubServices:
    """The services and roles of a geoml-hub hub.

    Parameters
    ----------
    wps, map : Service, optional
        The WPS and the web map (left out: not deployed).
    culler : Culler, optional
        The idle culler (left out, or ``timeout`` 0: none).
    """
    services: List[Dict[str, Any]] = []
    roles = [dict(USER_ROLE, scopes=list(USER_ROLE["scopes"]))]
    if wps is not None:
        services.append(_service("wps", WPS_DESCRIPTION, wps))
    if map is not None:
        # a hub service behind the OAuth login; its users' tokens may call the WPS
        services.append(_service("map", MAP_DESCRIPTION, map,
                                 oauth_client_allowed_scopes=["access:services!service=wps"]))
    interval = None
    if culler is not None and culler.timeout > 0:
        interval = activity_interval(culler.timeout)
        services.append({"name": "idle-culler", "command": culler_command(culler)})
        scopes = list(CULLER_SCOPES) + (["admin:users"] if culler.users else [])
        roles.append({"name": "idle-culler", "description": "cull idle servers", "scopes": scopes,
                      "services": ["idle-culler"]})
    return HubServices(services=services, roles=roles, activity_interval=interval)
