"""The web map service: a Leaflet page, scene and result tiles, and the WPS on behalf of the user.

Routes, under the path of the configured map URL (``/services/map`` behind the hub, ``/``
standalone):

``GET /``
    The map page (``static/index.html``); Leaflet and Leaflet.draw are served by this service
    from the npm packages (``/vendor/leaflet/``, ``/vendor/leaflet-draw/``): no CDN, no
    external request.
``GET /api/config``
    The user, the WPS's public URL and the optional base map.
``GET /api/layers``, ``GET /api/layer-info?dataset=D``
    The rasters of the data roots (scenes and label rasters) with bounds and band presets: the
    list comes from the WPS's STAC catalogue (``<wps_url>/stac/``, read as the user).
``GET /api/tiles/<z>/<x>/<y>.png?dataset=D[&bands=3,2,1&stretch=2,98]``, ``GET /api/preview.png?...``
    Web Mercator tiles (and a whole-raster preview) of a scene (band combination, percentile
    stretch) or a label raster (colour table). ``D`` is a data-root dataset (``data/...``) or an
    output of the user's jobs (``jobs/<job id>/<file>``, fetched from the WPS as the user, kept in
    a cache per user and checked with the WPS, as the user, before every answer: another user's
    job answers 404, as an unknown one).
``GET /api/legend?dataset=D``
    Classes of a label raster: code, name, colour.
``GET|POST|PUT|DELETE /api/wps/<path>``
    The WPS (``<wps_url>/<path>``: ``wps``, ``jobs``, ``outputs``, ``workspace``) called with the
    user's hub token, so the WPS sees the map user and only their jobs.

With ``auth = jupyterhub`` every route except ``/health`` and the static files needs the hub
login (:class:`geoml_hub.web.auth.JupyterHubAuth`: a browser is sent through the hub's OAuth
login, and the resulting token is kept in a signed cookie).

Every answer is sent with ``X-Content-Type-Options: nosniff``, and every ``/api/`` answer (job
outputs through the WPS proxy, tiles, JSON) also with ``Content-Security-Policy: sandbox``: an
HTML file a user's job wrote is shown with an opaque origin and no scripts, never as a page of
the hub's origin. Only the map's own page and its static files run as pages.

The proxy sends the WPS the user's
token, so it checks cross-site requests itself, by the WPS's rules
(:func:`geoml_hub.web.auth.cross_site_refusal`): a state change through ``/api/wps/`` with the
login cookie must come from the map's own pages, and an Execute by GET with the cookie is
refused (403).
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import requests
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from ..errors import DataError, ParameterError
from ..fileio import atomic_path
from .. import __version__
from ..web.auth import JupyterHubAuth, StandaloneAuth, changes_state, cross_site_refusal
from ..web.headers import SECURITY_HEADERS, with_headers
from ..web.routing import Rule, match, url_map
from ..web.vendor import find_vendor
from . import tiles

LOGGER = logging.getLogger("geoml_hub.map")

STATIC = Path(__file__).resolve().parent / "static"
_JOB_FILE = re.compile(r"^jobs/([0-9a-fA-F-]{8,64})/([A-Za-z0-9][A-Za-z0-9_.-]*\.(?:tif|tiff|gtif))$")
_RESULT_FILE = re.compile(r"^results/([^/]+)/([0-9a-fA-F-]{8,64})/([A-Za-z0-9][A-Za-z0-9_.-]*\.(?:tif|tiff|gtif))$")
#: Request headers passed on to the WPS.
_FORWARD = ("Content-Type", "Accept")
#: Headers of the map's own page and static files (which must run their scripts).
_PAGE_HEADERS = (("X-Content-Type-Options", "nosniff"),)


@dataclass
class MapSettings:
    """Settings of the map service.

    Attributes
    ----------
    data_roots : dict of str to Path
        Read-only data roots by name, as in the WPS (so dataset names match).
    wps_url : str
        Base URL where this service reaches the WPS (e.g. ``http://127.0.0.1:5000``).
    wps_public_url : str
        The WPS's public base URL (status locations and output links start with it); default
        ``wps_url``.
    url : str
        Public base URL of the map (its path is stripped from requests).
    auth : str
        ``none`` (standalone, loopback) or ``jupyterhub``.
    cache_dir : Path
        Where job outputs fetched from the WPS are kept for tiling, one folder per user.
    revalidate_seconds : float
        No effect any more (kept so that existing settings and command lines work): every use of
        a cached job output is checked with the WPS first.
    basemap_url, basemap_attribution : str
        An optional XYZ base map (none by default: the page works offline).
    vendor : Path, optional
        ``node_modules`` with leaflet and leaflet-draw (default: :func:`find_vendor`).
    """

    data_roots: Dict[str, Path] = field(default_factory=dict)
    wps_url: str = "http://127.0.0.1:5000"
    wps_public_url: str = ""
    url: str = "http://127.0.0.1:5100"
    auth: str = "none"
    cache_dir: Path = Path("map-cache")
    revalidate_seconds: float = 60.0
    basemap_url: str = ""
    basemap_attribution: str = ""
    vendor: Optional[Path] = None

    def __post_init__(self):
        self.data_roots = {str(k): Path(v).expanduser().resolve() for k, v in self.data_roots.items()}
        self.wps_url = self.wps_url.rstrip("/")
        self.wps_public_url = (self.wps_public_url or self.wps_url).rstrip("/")
        self.url = self.url.rstrip("/")
        self.cache_dir = Path(self.cache_dir).expanduser().resolve()
        if self.auth not in ("none", "jupyterhub"):
            raise ParameterError(f"auth must be none or jupyterhub, got {self.auth!r}")
        self.vendor = Path(self.vendor) if self.vendor else find_vendor()


def _json(data, status: int = 200) -> Response:
    return Response(json.dumps(data) + "\n", status=status, mimetype="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _file(path: Path, cache: str = "public, max-age=3600") -> Response:
    if not path.is_file():
        return _error(404, "not found")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    resp = Response(path.read_bytes(), mimetype=mime)
    resp.headers["Cache-Control"] = cache
    return resp


def _inside(root: Path, rel: str) -> Optional[Path]:
    """``root/rel`` if it stays inside ``root`` (no ``..``, no symlink out), else ``None``."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in ("..", ".") for p in parts) or "\x00" in rel:
        return None
    path = Path(os.path.realpath(root.joinpath(*parts)))
    try:
        path.relative_to(os.path.realpath(root))
    except ValueError:
        return None
    return path


class MapApp:
    """The WSGI app of the map (see the module docstring).

    Parameters
    ----------
    settings : MapSettings
    authenticator : object, optional
        ``identify(environ) -> Identity | None`` (default: from ``settings.auth``).
    """

    def __init__(self, settings: MapSettings, authenticator=None):
        self.settings = settings
        if authenticator is None:
            authenticator = JupyterHubAuth() if settings.auth == "jupyterhub" else StandaloneAuth()
        self.auth = authenticator
        self.base = urllib.parse.urlparse(settings.url).path.rstrip("/")
        self.http = requests.Session()
        self._layers = (0.0, None)

    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            response = self.dispatch(request, environ)
        except HTTPException as exc:
            response = exc
        except (DataError, ParameterError) as exc:
            response = _error(400, str(exc))
        headers = SECURITY_HEADERS if self._inner_path(request.path).startswith("/api/") else _PAGE_HEADERS
        return response(environ, with_headers(start_response, headers))

    def _inner_path(self, path: str) -> str:
        """``path`` relative to the map's base URL, with a leading ``/``."""
        if self.base and (path == self.base or path.startswith(self.base + "/")):
            path = path[len(self.base):]
        return "/" + path.lstrip("/")

    # -- routing --------------------------------------------------------------------------------
    #: The routes, by endpoint; those before the login (static files, vendor files, health, OAuth)
    #: answer without authentication.
    URLS = url_map([
        Rule("/health", endpoint="health"),
        Rule("/static/<rest:rel>", endpoint="static"),
        Rule("/vendor/leaflet-draw/<rest:rel>", endpoint="vendor", defaults={"dist": "leaflet-draw/dist"}),
        Rule("/vendor/leaflet/<rest:rel>", endpoint="vendor", defaults={"dist": "leaflet/dist"}),
        Rule("/oauth_callback", endpoint="oauth_callback"),
        Rule("/", endpoint="index"),
        Rule("/index.html", endpoint="index"),
        Rule("/api/config", endpoint="config"),
        Rule("/api/layers", endpoint="layers"),
        Rule("/api/wps", endpoint="wps", defaults={"rest": ""}),
        Rule("/api/wps/<rest:rest>", endpoint="wps_rest"),
        Rule("/api/layer-info", endpoint="raster", defaults={"kind": "layer-info"}),
        Rule("/api/legend", endpoint="raster", defaults={"kind": "legend"}),
        Rule("/api/preview.png", endpoint="raster", defaults={"kind": "preview"}),
        Rule("/api/tiles/<int:z>/<int:x>/<int:y>.png", endpoint="raster", defaults={"kind": "tile"}),
        Rule("/api/tiles/<rest:other>", endpoint="raster", defaults={"kind": "bad-tile"}),
    ])

    def dispatch(self, request: Request, environ):
        if request.path == self.base and self.base:
            return Response(status=302, headers={"Location": self.base + "/"})
        path = self._inner_path(request.path)
        endpoint, args = match(self.URLS, path)
        if endpoint == "health":
            return _json({"status": "ok"})
        if endpoint == "static":
            found = _inside(STATIC, args["rel"])
            return _file(found, "no-cache") if found else _error(404, "not found")
        if endpoint == "vendor":
            found = _inside(self.settings.vendor / args["dist"], args["rel"])
            return _file(found) if found else _error(404, "not found")
        if endpoint == "oauth_callback" and hasattr(self.auth, "oauth_callback"):
            return self.auth.oauth_callback(request)
        identity = self.auth.identify(environ)
        environ["geoml.identity"] = identity  # the output cache is per identity (resolve)
        if identity is None:
            forbidden = environ.get("geoml.forbidden")
            if (not forbidden and hasattr(self.auth, "login_redirect") and request.method == "GET"
                    and not path.startswith("/api/")):
                return self.auth.login_redirect(request)  # a browser: log in through the hub
            return _error(403 if forbidden else 401, forbidden or "authentication required")
        if endpoint == "index":
            return _file(STATIC / "index.html", "no-cache")
        if endpoint == "config":
            return _json({"user": identity.name, "admin": identity.admin, "wps_url": self.settings.wps_public_url,
                          "basemap": ({"url": self.settings.basemap_url,
                                       "attribution": self.settings.basemap_attribution}
                                      if self.settings.basemap_url else None),
                          "version": _version()})
        if endpoint == "layers":
            return _json({"layers": self.layers(environ)})
        if endpoint in ("wps", "wps_rest"):
            rest = "/" + args["rest"] if endpoint == "wps_rest" else ""
            wps_endpoint = rest.strip("/") == "wps"
            if changes_state(request.method, environ.get("QUERY_STRING", ""), wps_endpoint):
                refusal = cross_site_refusal(environ, identity, [self.settings.url], wps_endpoint)
                if refusal:
                    LOGGER.warning("refused a possibly cross-site %s %s of %s: %s", request.method, path,
                                   identity.name, refusal)
                    return _error(403, refusal)
            return self.proxy(rest, request, environ)
        if endpoint == "raster":
            return self.raster(args, request, environ)
        return _error(404, f"no such resource: {path}")

    def raster(self, args, request: Request, environ) -> Response:
        """``/api/layer-info``, ``/api/legend``, ``/api/preview.png`` and ``/api/tiles/Z/X/Y.png`` of
        the raster named by the ``dataset`` argument."""
        dataset = request.args.get("dataset", "")
        kind = args["kind"]
        raster = self.resolve(dataset, request, environ)
        if isinstance(raster, Response):
            return raster
        info = tiles.layer_info(raster, dataset)
        if kind == "layer-info":
            return _json(info)
        if kind == "legend":
            if info["kind"] != "labels":
                return _error(400, f"{dataset} is a {info['kind']} raster, not a label raster: it has no class legend")
            return _json({"classes": tiles.legend(raster)})
        bands = (1, 1, 1)
        stretch = tiles.parse_stretch(request.args.get("stretch"))
        if info["kind"] == "scene":
            default = next(iter(info["presets"].values()))
            bands = tiles.parse_bands(request.args.get("bands") or ",".join(map(str, default)), info["bands"])
        if kind == "preview":
            png = tiles.render_preview(raster, info["kind"], bands, stretch)
            return Response(png, mimetype="image/png")
        if kind != "tile":
            return _error(404, "tiles are /api/tiles/Z/X/Y.png")
        png = tiles.render_tile(raster, args["z"], args["x"], args["y"], info["kind"], bands, stretch)
        if png is None:
            return Response(status=204)
        resp = Response(png, mimetype="image/png")
        resp.headers["Cache-Control"] = "private, max-age=300"
        return resp

    # -- datasets ---------------------------------------------------------------------------------
    def layers(self, environ, max_age: float = 60.0):
        """The rasters of the data roots, from the WPS's STAC catalogue (:meth:`stac_layers`, read
        as the user), read again at most once a minute. While the WPS has no catalogue yet (it
        builds it at start-up) or cannot be reached, the data roots are walked instead
        (:func:`tiles.list_rasters`, which opens every raster), and not kept."""
        stamp, listed = self._layers
        if listed is None or time.monotonic() - stamp > max_age:
            try:
                listed = self.stac_layers(environ)
            except (requests.RequestException, ValueError, KeyError) as exc:
                LOGGER.warning("the WPS's STAC catalogue cannot be read (%s): walking the data roots", exc)
                return tiles.list_rasters(self.settings.data_roots)
            self._layers = (time.monotonic(), listed)
        return listed

    def stac_layers(self, environ, limit: int = 500):
        """The map layers (:func:`tiles.layer_from_stac`) of the items of the data roots'
        collections in ``<wps_url>/stac/catalog.json`` (the results collection is left out: the
        map lists results from the job API), in dataset order.

        Raises
        ------
        requests.RequestException, ValueError
            If the catalogue cannot be read (``ValueError`` also for a 503 while it is built).
        """
        headers = self._auth_headers(environ)
        out, todo, seen = [], [self.settings.wps_url + "/stac/catalog.json"], set()
        while todo and len(seen) < 10000:
            url = todo.pop()
            if url in seen:
                continue
            seen.add(url)
            r = self.http.get(url, headers=headers, timeout=60)
            if r.status_code != 200:
                raise ValueError(f"{url}: the WPS answered {r.status_code}")
            doc = r.json()
            if doc.get("type") == "Feature":
                layer = tiles.layer_from_stac(doc)
                if layer is not None:
                    out.append(layer)
                continue
            if doc.get("id") == "results" and doc.get("type") == "Collection":
                continue
            todo += [urllib.parse.urljoin(url, link["href"]) for link in doc.get("links", [])
                     if link.get("rel") in ("child", "item")]
        return sorted(out, key=lambda layer: layer["dataset"])[:limit]


    def resolve(self, dataset: str, request: Request, environ):
        """The local raster of ``dataset``, or an error response.

        ``ROOT/PATH`` is read from a data root; ``jobs/<id>/<file>`` and
        ``results/<owner>/<id>/<file>`` are fetched from the WPS's outputs with the user's
        identity (the WPS answers 404 for another user's unpublished job) and cached per user
        (:meth:`fetch_output`).
        """
        if not dataset:
            return _error(400, "dataset is missing")
        m = _JOB_FILE.match(dataset) or _RESULT_FILE.match(dataset)
        if m:
            job, name = m.groups()[-2:]
            return self.fetch_output(job, name, request, environ, environ["geoml.identity"].name)
        root_name, _, rel = dataset.partition("/")
        root = self.settings.data_roots.get(root_name)
        if root is None:
            roots = ", ".join(sorted(self.settings.data_roots)) or "none"
            return _error(400, f"dataset {dataset}: unknown root {root_name!r} (data roots: {roots}; or jobs/ID/FILE)")
        path = _inside(root, rel)
        if path is None or not path.is_file():
            return _error(404, f"no such dataset: {dataset}")
        if path.suffix.lower() not in tiles.RASTER_SUFFIXES:
            return _error(400, f"dataset {dataset} is not a GeoTIFF")
        return path

    def fetch_output(self, job: str, name: str, request: Request, environ, user: str):
        """A job's output file from the WPS, as the user, kept in the user's own cache folder.

        Before a cached copy is used the WPS is asked again, as the user (``HEAD``): a job that is
        not the user's (nor published), or whose outputs were removed (retention) or unpublished,
        is never answered from the cache. Another user's job and an unknown one both answer 404.
        """
        target = self.user_cache(user) / job / name
        url = f"{self.settings.wps_url}/outputs/{job}/{name}"
        if target.is_file():
            head = self.http.head(url, headers=self._auth_headers(environ), timeout=60)
            if head.status_code == 200:
                return target
            if head.status_code in (403, 404, 410):
                target.unlink(missing_ok=True)
            return _wps_refused(head.status_code, job, name)
        resp = self.http.get(url, headers=self._auth_headers(environ), timeout=120, stream=True)
        if resp.status_code != 200:
            return _wps_refused(resp.status_code, job, name)
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                for chunk in resp.iter_content(1 << 20):
                    f.write(chunk)
        return target

    def user_cache(self, user: str) -> Path:
        """The cache folder of ``user``: ``cache_dir/u-<name, percent-encoded>`` (one per identity;
        the prefix keeps names such as ``..`` harmless)."""
        return self.settings.cache_dir / ("u-" + urllib.parse.quote(user, safe=""))

    # -- the WPS as the user ----------------------------------------------------------------------
    def _auth_headers(self, environ) -> Dict[str, str]:
        token = self.auth.token_of(environ) if hasattr(self.auth, "token_of") else None
        return {"Authorization": f"token {token}"} if token else {}

    def proxy(self, rest: str, request: Request, environ) -> Response:
        """Pass a request on to the WPS with the user's token; stream the answer back."""
        if request.method not in ("GET", "POST", "PUT", "DELETE"):
            return _error(405, "method not allowed")
        url = self.settings.wps_url + "/" + rest.lstrip("/")
        if request.query_string:
            url += "?" + request.query_string.decode("latin-1")
        headers = {h: request.headers[h] for h in _FORWARD if h in request.headers}
        headers.update(self._auth_headers(environ))
        data = request.get_data(cache=False) if request.method in ("POST", "PUT") else None
        try:
            resp = self.http.request(request.method, url, headers=headers, data=data, timeout=300, stream=True,
                                     allow_redirects=False)
        except Exception as exc:  # the WPS is down
            return _error(502, f"the WPS at {self.settings.wps_url} cannot be reached: {exc}")
        out = Response(resp.iter_content(1 << 16), status=resp.status_code,
                       content_type=resp.headers.get("Content-Type", "application/octet-stream"))
        out.headers["Cache-Control"] = "no-store"
        return out


def _wps_refused(status: int, job: str, name: str) -> Response:
    """The answer when the WPS refuses a job output: 404 for another user's job as for an
    unknown one, 410 for removed outputs, 502 for anything else."""
    if status in (403, 404):
        return _error(404, f"no such job output: jobs/{job}/{name}")
    if status == 410:
        return _error(410, f"jobs/{job}/{name}: the outputs of this job were removed")
    return _error(502, f"jobs/{job}/{name}: the WPS answered {status}")


def _version() -> str:
    return __version__


def make_app(settings: MapSettings, authenticator=None) -> MapApp:
    """The WSGI app of ``settings``."""
    return MapApp(settings, authenticator)
