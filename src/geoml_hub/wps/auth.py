"""Who sends a request: the identity hook of the WPS server.

The server calls ``authenticator.identify(environ)`` for every request and stores the
:class:`Identity` in ``environ['geoml.identity']``; the job table records its name as
the job's owner, and job lists, status documents and outputs are filtered by it.

- :class:`StandaloneAuth` (``auth = none``): no authentication at all. Every request is
  the one local owner :data:`STANDALONE_OWNER`, with admin rights. The server logs this
  loudly at startup and binds to loopback unless told otherwise.
- JupyterHub service authentication (``auth = jupyterhub``) plugs in here with the hub
  issue: the identity comes from the hub's API token or OAuth cookie.

An authenticator returns ``None`` for a request without a valid identity; the server
answers 401 and runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

#: Owner of every job on a standalone server.
STANDALONE_OWNER = "local"


@dataclass(frozen=True)
class Identity:
    """An authenticated user: ``name`` (the job owner), ``admin`` (sees every job) and groups."""

    name: str
    admin: bool = False
    groups: Tuple[str, ...] = field(default_factory=tuple)


class StandaloneAuth:
    """No authentication: every request is :data:`STANDALONE_OWNER`, an admin."""

    standalone = True
    description = ("standalone mode: requests are NOT authenticated; every request acts as user "
                   f"'{STANDALONE_OWNER}' with admin rights")

    def identify(self, environ) -> Optional[Identity]:
        return Identity(STANDALONE_OWNER, admin=True)


def make_authenticator(settings):
    """The authenticator for ``settings.auth``.

    Raises
    ------
    ParameterError
        For an authentication mode this installation does not provide.
    """
    from ..errors import ParameterError

    if settings.auth == "none":
        return StandaloneAuth()
    raise ParameterError(f"auth = {settings.auth} is not available in this version; use auth = none")
