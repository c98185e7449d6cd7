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

Cross-site requests: an identity records how it was proven (:attr:`Identity.via`). A browser
sends cookies with requests that other sites start, so a request that changes state (an
Execute, a cancel, publishing, a workspace write) authenticated by a cookie alone must also
prove that it comes from the service's own pages (:func:`cross_site_refusal`); a token in the
``Authorization`` header is never sent by a browser on its own and needs no such proof.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import os
import secrets
import urllib.parse
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Iterable, Optional, Tuple

from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from ..errors import ParameterError

#: Owner of every job on a standalone server.
STANDALONE_OWNER = "local"


@dataclass(frozen=True)
class Identity:
    """An authenticated user: ``name`` (the job owner), ``admin`` (sees every job) and groups.

    ``via`` says how the request proved it: ``token`` (the ``Authorization`` header),
    ``cookie`` (the service's login cookie, which a browser also sends with requests that
    other sites start) or ``none`` (standalone mode: nothing was proven).
    """

    name: str
    admin: bool = False
    groups: Tuple[str, ...] = field(default_factory=tuple)
    via: str = "token"


class StandaloneAuth:
    """No authentication: every request is :data:`STANDALONE_OWNER`, an admin."""

    standalone = True
    description = ("standalone mode: requests are NOT authenticated; every request acts as user "
                   f"'{STANDALONE_OWNER}' with admin rights")

    def identify(self, environ) -> Optional[Identity]:
        return Identity(STANDALONE_OWNER, admin=True, via="none")


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
        # imported here: jupyterhub (tornado, its ORM) is loaded only with auth = jupyterhub
        from jupyterhub.services.auth import HubOAuth

        self.hub = HubOAuth(cache_max_age=60)
        if not self.hub.api_token:
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

    def credential_of(self, environ) -> Tuple[Optional[str], str]:
        """``(token, via)``: the hub token of a request and where it came from (``token``: the
        ``Authorization`` header; ``cookie``: this service's signed cookie)."""
        header = environ.get("HTTP_AUTHORIZATION", "")
        kind, _, value = header.partition(" ")
        if kind.lower() in ("token", "bearer") and value.strip():
            return value.strip(), "token"
        cookies = SimpleCookie()
        try:
            cookies.load(environ.get("HTTP_COOKIE", ""))
        except Exception:
            return None, "cookie"
        if self.COOKIE in cookies:
            return self._unsign(cookies[self.COOKIE].value), "cookie"
        return None, "cookie"

    def token_of(self, environ) -> Optional[str]:
        return self.credential_of(environ)[0]

    def identify(self, environ) -> Optional[Identity]:
        token, via = self.credential_of(environ)
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
        return Identity(model["name"], bool(model.get("admin")), tuple(model.get("groups") or ()), via=via)

    # -- browser login ------------------------------------------------------------------------------
    def login_redirect(self, request):
        """A redirect into the hub's OAuth login, remembering where to come back to."""
        state = secrets.token_urlsafe(16)
        next_url = request.full_path if request.query_string else request.path
        resp = redirect(f"{self.hub.login_url}&state={state}")
        resp.set_cookie(self.STATE_COOKIE, self._sign(f"{state} {next_url}"), max_age=600, httponly=True,
                        path=self.cookie_path, samesite="Lax")
        return resp

    def oauth_callback(self, request):
        """Finish the OAuth login: exchange the code for a token, set the signed cookie.

        The token cookie is ``SameSite=Strict``: a browser never sends it with a request that
        another site starts. The callback ends a redirect chain (service -> hub -> callback) that
        may have started on another site (a link to the map); a browser does not send a Strict
        cookie with a redirect of such a chain either, so the next page would find no cookie
        and log in again, in a loop. When the chain may have started elsewhere (``Sec-Fetch-Site``
        other than ``same-origin``, or a browser that does not send it), the callback answers
        a small page of this service that moves on to the page asked for: a navigation that
        this service's page starts is same-site and carries the new cookie. Other clients get
        a plain redirect. The state cookie stays ``Lax``: it must come back with the callback,
        a top-level navigation from the hub's redirect.
        """
        stored = self._unsign(request.cookies.get(self.STATE_COOKIE, "")) or ""
        state, _, next_url = stored.partition(" ")
        if not state or request.args.get("state") != state or not request.args.get("code"):
            return Response("OAuth state mismatch: start again", status=403)
        try:
            token = self.hub.token_for_code(request.args["code"], sync=True)
        except Exception as exc:
            return Response(f"OAuth login failed: {exc}", status=403)
        if not next_url.startswith("/") or next_url.startswith("//"):
            next_url = self.cookie_path
        fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
        browser = request.headers.get("User-Agent", "").startswith("Mozilla/")
        if fetch_site == "same-origin" or not (fetch_site or browser):
            resp = redirect(next_url)
        else:
            target = html.escape(next_url, quote=True)
            resp = Response(f'<!DOCTYPE html><html><head><meta charset="utf-8">'
                            f'<meta http-equiv="refresh" content="0;url={target}"><title>Logged in</title></head>'
                            f'<body><p>Logged in: <a href="{target}">continue</a>.</p></body></html>\n',
                            mimetype="text/html")
            resp.headers["Cache-Control"] = "no-store"
        resp.set_cookie(self.COOKIE, self._sign(token), httponly=True, path=self.cookie_path, samesite="Strict")
        resp.delete_cookie(self.STATE_COOKIE, path=self.cookie_path)
        return resp


#: Methods that never change state (besides an Execute by GET, see :func:`changes_state`).
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def changes_state(method: str, query: str = "", wps_endpoint: bool = False) -> bool:
    """Whether a request may change state: any method but GET/HEAD/OPTIONS, and a GET
    ``request=Execute`` on the WPS endpoint (key-value Execute)."""
    if method.upper() not in SAFE_METHODS:
        return True
    return wps_endpoint and is_get_execute(query)


def is_get_execute(query: str) -> bool:
    """Whether a query string asks for a WPS Execute (``request=Execute``, any case)."""
    for key, value in urllib.parse.parse_qsl(query or "", keep_blank_values=True):
        if key.lower() == "request" and value.strip().lower() == "execute":
            return True
    return False


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url or "")
    if not parts.scheme or not parts.netloc:
        return ""
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port and port != default else "")


def own_origins(environ, public_urls: Iterable[str]) -> set:
    """The origins a same-origin request of this service may carry: those of its public URLs
    and the one the request itself was sent to (scheme and ``Host`` header)."""
    found = {_origin(u) for u in public_urls if u}
    host = environ.get("HTTP_HOST")
    if host:
        found.add(_origin(f"{environ.get('wsgi.url_scheme', 'http')}://{host}"))
    return {o for o in found if o}


def cross_site_refusal(environ, identity: Identity, public_urls: Iterable[str], wps_endpoint: bool = False
                       ) -> Optional[str]:
    """Why a state-changing request must be refused as possibly forged by another site, or ``None``.

    Rules:

    - a request authenticated by a token in the ``Authorization`` header passes (a browser does
      not add one to requests that other sites start);
    - a key-value Execute (``GET ...request=Execute``) authenticated by a cookie is refused:
      a link or an image on any site can send it; use POST (XML) or a token;
    - any other request authenticated by a cookie must show that it comes from this service's
      pages: ``Origin`` (or, without it, ``Referer``) equal to the service's origin, or
      ``Sec-Fetch-Site: same-origin``;
    - in standalone mode (nothing proven), a request that a browser marks as sent by another
      site (a foreign ``Origin``, ``Sec-Fetch-Site: cross-site`` or ``same-site``) is refused;
      clients that are not browsers send none of these and pass.

    Call it only for requests that change state (:func:`changes_state`).
    """
    if identity.via == "token":
        return None
    method = environ.get("REQUEST_METHOD", "GET").upper()
    if identity.via == "cookie" and wps_endpoint and method == "GET" and is_get_execute(environ.get("QUERY_STRING")):
        return ("Execute by GET with a login cookie is refused (another site could send it): "
                "send the Execute as POST XML from this service's pages, or a token in the Authorization header")
    mine = own_origins(environ, public_urls)
    fetch_site = environ.get("HTTP_SEC_FETCH_SITE", "").strip().lower()
    origin = environ.get("HTTP_ORIGIN", "").strip()
    referer = environ.get("HTTP_REFERER", "").strip()
    refusal = (f"{method} refused: the request comes from another site ({{}}); state changes need this "
               "service's own pages or a token in the Authorization header")
    if fetch_site in ("cross-site", "same-site"):
        return refusal.format(f"Sec-Fetch-Site: {fetch_site}")
    if origin and origin.lower() != "null" and _origin(origin) not in mine:
        return refusal.format(f"Origin {origin[:100]}")
    if origin.lower() == "null":
        return refusal.format("Origin null")
    if identity.via != "cookie":
        return None
    if origin or fetch_site == "same-origin":
        return None
    if referer and _origin(referer) in mine:
        return None
    if referer:
        return refusal.format(f"Referer {_origin(referer)[:100]}")
    return (f"{method} refused: a request authenticated by a login cookie must come from this service's pages "
            "(Origin, Referer or Sec-Fetch-Site: same-origin), or send a token in the Authorization header")


def make_authenticator(settings):
    """The authenticator for ``settings.auth``.

    Raises
    ------
    ParameterError
        For an authentication mode this installation does not provide.
    """
    if settings.auth == "none":
        return StandaloneAuth()
    if settings.auth == "jupyterhub":
        return JupyterHubAuth()
    raise ParameterError(f"unknown auth = {settings.auth}")
