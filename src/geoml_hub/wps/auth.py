"""Who sends a request: the identity hook of the WPS server.

The server calls ``authenticator.identify(environ)`` for every request and stores the
:class:`Identity` in ``environ['geoml.identity']``; the job table records its name as
the job's owner, and job lists, status documents and outputs are filtered by it.

- :class:`StandaloneAuth` (``auth = none``): no authentication at all. Every request is
  the one local owner :data:`STANDALONE_OWNER`, with admin rights. The server logs this
  loudly at startup and binds to loopback unless told otherwise.
- :class:`JupyterHubAuth` (``auth = jupyterhub``): the server runs as a JupyterHub service
  (``geoml-hub up``, the Helm chart). The identity comes from a hub API token in the
  ``Authorization`` header (notebooks: ``JUPYTERHUB_API_TOKEN``) or, for browsers, from the
  cookie this service sets after an OAuth login with the hub (the map). The token must
  carry the ``access:services!service=<name>`` scope.

An authenticator returns ``None`` for a request without a valid identity; the server
answers 401 and runs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
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


class JupyterHubAuth:
    """Identity from JupyterHub (service authentication), for a server run as a hub service.

    The hub's environment for a managed service (``JUPYTERHUB_API_TOKEN``,
    ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_CLIENT_ID``,
    ``JUPYTERHUB_OAUTH_CALLBACK_URL``, ...) configures :class:`jupyterhub.services.auth.HubOAuth`.

    - ``Authorization: token <t>`` (or ``Bearer <t>``): the hub resolves the token (cached for
      a few minutes);
    - a browser without a token is sent through the hub's OAuth login (``/oauth_login``,
      ``/oauth_callback``); the resulting token is kept in an HMAC-signed, HTTP-only cookie.

    A token without the ``access:services!service=<name>`` scope is refused (403).
    """

    standalone = False
    description = "requests are authenticated with JupyterHub"

    def __init__(self):
        from jupyterhub.services.auth import HubOAuth

        self.hub = HubOAuth(cache_max_age=60)
        if not self.hub.api_token:
            from ..errors import ParameterError

            raise ParameterError("auth = jupyterhub needs the hub's service environment (JUPYTERHUB_API_TOKEN, ...): "
                                 "run the server as a JupyterHub service")
        # one cookie per service (the WPS, the map), signed with a key only that service knows
        service = os.environ.get("JUPYTERHUB_SERVICE_NAME") or "wps"
        self.COOKIE = f"geoml-{service}-token"
        self.STATE_COOKIE = f"geoml-{service}-oauth-state"
        self._key = hashlib.sha256(f"geoml-{service}-cookie:".encode() + self.hub.api_token.encode()).digest()
        self.cookie_path = self.hub.base_url or "/"

    # -- tokens -------------------------------------------------------------------------------------
    def _sign(self, value: str) -> str:
        raw = value.encode()
        mac = hmac.new(self._key, raw, hashlib.sha256).hexdigest()
        return base64.urlsafe_b64encode(raw).decode() + "." + mac

    def _unsign(self, signed: str):
        try:
            data, mac = signed.rsplit(".", 1)
            raw = base64.urlsafe_b64decode(data.encode())
        except (ValueError, TypeError):
            return None
        good = hmac.new(self._key, raw, hashlib.sha256).hexdigest()
        return raw.decode() if hmac.compare_digest(good, mac) else None

    def token_of(self, environ) -> Optional[str]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        kind, _, value = header.partition(" ")
        if kind.lower() in ("token", "bearer") and value.strip():
            return value.strip()
        cookies = SimpleCookie()
        try:
            cookies.load(environ.get("HTTP_COOKIE", ""))
        except Exception:
            return None
        if self.COOKIE in cookies:
            return self._unsign(cookies[self.COOKIE].value)
        return None

    def identify(self, environ) -> Optional[Identity]:
        token = self.token_of(environ)
        if not token:
            return None
        try:
            model = self.hub.user_for_token(token, sync=True)
        except Exception:  # the hub is unreachable or refused: no identity
            return None
        if not model or model.get("kind", "user") != "user":
            return None
        if self.hub.access_scopes and not self.hub.check_scopes(self.hub.access_scopes, model):
            environ["geoml.forbidden"] = f"the token of {model['name']} has no access to this service"
            return None
        return Identity(model["name"], bool(model.get("admin")), tuple(model.get("groups") or ()))

    # -- browser login ------------------------------------------------------------------------------
    def login_redirect(self, request):
        """A redirect into the hub's OAuth login, remembering where to come back to."""
        from werkzeug.utils import redirect

        state = secrets.token_urlsafe(16)
        next_url = request.full_path if request.query_string else request.path
        resp = redirect(f"{self.hub.login_url}&state={state}")
        resp.set_cookie(self.STATE_COOKIE, self._sign(f"{state} {next_url}"), max_age=600, httponly=True,
                        path=self.cookie_path, samesite="Lax")
        return resp

    def oauth_callback(self, request):
        """Finish the OAuth login: exchange the code for a token, set the signed cookie."""
        from werkzeug.utils import redirect
        from werkzeug.wrappers import Response

        stored = self._unsign(request.cookies.get(self.STATE_COOKIE, "")) or ""
        state, _, next_url = stored.partition(" ")
        if not state or request.args.get("state") != state or not request.args.get("code"):
            return Response("OAuth state mismatch: start again", status=403)
        try:
            token = self.hub.token_for_code(request.args["code"], sync=True)
        except Exception as exc:
            return Response(f"OAuth login failed: {exc}", status=403)
        if not next_url.startswith("/"):
            next_url = self.cookie_path
        resp = redirect(next_url)
        resp.set_cookie(self.COOKIE, self._sign(token), httponly=True, path=self.cookie_path, samesite="Lax")
        resp.delete_cookie(self.STATE_COOKIE, path=self.cookie_path)
        return resp


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
    if settings.auth == "jupyterhub":
        return JupyterHubAuth()
    raise ParameterError(f"unknown auth = {settings.auth}")
