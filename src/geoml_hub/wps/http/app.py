"""The WSGI application of the WPS server.

Routes, under the path of the configured service URL (e.g. ``/services/wps`` behind the
hub, ``/`` standalone):

``GET|POST /wps``
    The OGC WPS 1.0.0 endpoint (PyWPS): GetCapabilities, DescribeProcess, Execute.
``GET /outputs/<job>.xml``, ``GET /outputs/<job>/<file>``
    Status documents and outputs, only for the job's owner, admins, or published jobs.
``GET /jobs``
    The caller's jobs as JSON (admins: everyone's; ``?owner=NAME`` to filter).
``GET /jobs/<job>``
    One job's record.
``POST /jobs/<job>/cancel`` (or ``DELETE /jobs/<job>``)
    Cancel a queued or running job.
``/ogcapi/...``
    The same processes and jobs as OGC API - Processes 1.0 (:mod:`geoml_hub.wps.http.ogcapi`).
``GET /results``
    The shared results: published jobs of every user (``results/<owner>/<job>/``).
``GET /stac/catalog.json``, ``GET /stac/<collection>/...``
    The STAC catalogue (:mod:`geoml_hub.wps.jobs.catalog`) of the data roots and the published
    results, read-only, for every authenticated user (both are readable by every user; a job
    that is not published is not in it). 503 until the start-up build has put it in place.
``GET /data/<root>/<path>``
    A file of a data root (the catalogue's asset hrefs), for every authenticated user.
``GET /workspace``, ``GET|PUT|DELETE /workspace/<name>.geojson``
    The caller's own files in the workspace (``workspace/<user>/<name>``): training polygons
    as the web map saves them (GeoJSON, checked with :func:`geoml_hub.polygons.parse_polygons`,
    at most 5 MB, written atomically).

Every request is first identified by the authenticator (:mod:`geoml_hub.web.auth`); a
request without an identity gets 401 and nothing runs. Another user's job answers 404 exactly
as an unknown one does (job ids are random, see :mod:`geoml_hub.wps.ogc.service`), so a job id
reveals nothing about other users' work. A request that changes state (an Execute, a
cancel, publishing, a workspace write) authenticated only by the login cookie must come from
this service's own pages, and an Execute by GET with the cookie is refused
(:func:`geoml_hub.web.auth.cross_site_refusal`): 403. Every answer carries
:data:`geoml_hub.web.headers.SECURITY_HEADERS`: what a user's job wrote (PyCM's
``report.html``, say) is shown sandboxed, with an opaque origin and no scripts, never as a
page of the hub's origin.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import mimetypes
import os
import re
import urllib.parse
from pathlib import Path

from pywps.exceptions import NoApplicableCode
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

# imported here, not in the request handlers: a module's first import from several gunicorn
# threads at once can fail in CPython 3.11's import locks (KeyError in _ModuleLock.acquire)
from ...errors import DataError
from ...fileio import write_bytes
from ...polygons import class_codes, parse_polygons
from ...processes import build_service
from ...web.auth import changes_state, cross_site_refusal, make_authenticator
from ...web.headers import with_headers
from ...web.routing import Rule, match, url_map
from ..jobs.catalog import catalog_dir, refresh_logged
from ..jobs.dispatcher import cancel_job
from ..jobs.kubernetes import backend_for
from ..jobs.store import DATABASE_UNAVAILABLE, database_unavailable, store_for
from ..ogc.inputs import remove_tree, share_outputs
from .ogcapi import OgcApi, problem

LOGGER = logging.getLogger("geoml_hub.wps")

_JOB = re.compile(r"^[0-9a-fA-F-]{8,64}$")
#: Names of workspace files the API writes: GeoJSON only, no path components.
WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}\.geojson$")
WORKSPACE_MAX_BYTES = 5 * 1024 * 1024


def _json(data, status: int = 200) -> Response:
    return Response(json.dumps(data, indent=1) + "\n", status=status, mimetype="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


class WpsApp:
    """The WSGI app (see the module docstring).

    Parameters
    ----------
    settings : Settings
        Prepared server settings.
    service : pywps.Service
        The PyWPS service with the processes.
    authenticator : object, optional
        Has ``identify(environ) -> Identity | None`` (default: from ``settings.auth``).
    """

    def __init__(self, settings, service, authenticator=None):
        self.settings = settings
        self.service = service
        self.auth = authenticator or make_authenticator(settings)
        store_for(settings.database)  # create the tables now
        if settings.backend == "kubernetes":  # load the client and its configuration now (cancel needs it)
            backend_for(settings)
        self.base = urllib.parse.urlparse(settings.url).path.rstrip("/")
        self.ogcapi = OgcApi(settings, service)

    @property
    def store(self):
        """The job store of this process (gunicorn forks the app into its HTTP workers)."""
        return store_for(self.settings.database)

    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            response = self.dispatch(request, environ)
        except HTTPException as exc:
            response = exc
        except SQLAlchemyError as exc:  # the detail goes to the server log, never to the client
            database_unavailable(exc)
            response = _error(503, DATABASE_UNAVAILABLE)
        return response(environ, with_headers(start_response))

    #: The routes, by endpoint; ``public`` ones answer without authentication.
    URLS = url_map([
        Rule("/", endpoint="index"),
        Rule("/health", endpoint="health"),
        Rule("/oauth_callback", endpoint="oauth_callback"),
        Rule("/wps", endpoint="wps"),
        Rule("/outputs/<rest:rel>", endpoint="output"),
        Rule("/jobs", endpoint="jobs"),
        Rule("/results", endpoint="results"),
        Rule("/workspace", endpoint="workspace", defaults={"name": ""}),
        Rule("/workspace/<rest:name>", endpoint="workspace"),
        Rule("/stac", endpoint="stac", defaults={"rel": ""}),
        Rule("/stac/<rest:rel>", endpoint="stac"),
        Rule("/data/<rest:rel>", endpoint="data"),
        Rule("/jobs/<job>/publish", endpoint="publish"),
        Rule("/jobs/<job>/publish/", endpoint="publish"),
        Rule("/jobs/<job>", endpoint="job", defaults={"cancel": False}),
        Rule("/jobs/<job>/", endpoint="job", defaults={"cancel": False}),
        Rule("/jobs/<job>/cancel", endpoint="job", defaults={"cancel": True}),
        Rule("/jobs/<job>/cancel/", endpoint="job", defaults={"cancel": True}),
        Rule("/ogcapi", endpoint="ogcapi", defaults={"rel": ""}),
        Rule("/ogcapi/<rest:rel>", endpoint="ogcapi"),
    ])

    def dispatch(self, request: Request, environ):
        path = request.path
        if self.base and (path == self.base or path.startswith(self.base + "/")):
            path = path[len(self.base):]
        path = "/" + path.lstrip("/")
        endpoint, args = match(self.URLS, path)
        if endpoint == "index":
            return _json({"service": "geoml-hub WPS", "wps": self.settings.wps_url,
                          "jobs": self.settings.url + "/jobs", "outputs": self.settings.outputs_url,
                          "stac": self.settings.url + "/stac/catalog.json"})
        if endpoint == "health":
            return _json({"status": "ok"})
        if endpoint == "oauth_callback" and hasattr(self.auth, "oauth_callback"):
            return self.auth.oauth_callback(request)
        wps = endpoint == "wps"
        identity = self.auth.identify(environ)
        if identity is None:
            forbidden = environ.get("geoml.forbidden")
            status = 403 if forbidden else 401
            if wps:
                return NoApplicableCode(forbidden or "authentication required: send a JupyterHub token", code=status)
            if (not forbidden and hasattr(self.auth, "login_redirect") and request.method == "GET"
                    and "text/html" in request.headers.get("Accept", "")):
                return self.auth.login_redirect(request)  # a browser: log in through the hub
            if endpoint == "ogcapi":
                return problem(status, "unauthorized" if status == 401 else "forbidden",
                               forbidden or "authentication required: send a JupyterHub token")
            return _error(status, forbidden or "authentication required")
        environ["geoml.identity"] = identity
        if changes_state(request.method, environ.get("QUERY_STRING", ""), wps_endpoint=wps):
            refusal = cross_site_refusal(environ, identity, [self.settings.url], wps_endpoint=wps)
            if refusal:
                LOGGER.warning("refused a possibly cross-site %s %s of %s: %s", request.method, path, identity.name,
                               refusal)
                if wps:
                    return NoApplicableCode(refusal, code=403)
                if endpoint == "ogcapi":
                    return problem(403, "forbidden", refusal)
                return _error(403, refusal)
        if wps:
            # PyWPS reads meaning into the URL path (/processes/..., /jobs/...): give it the path
            # relative to the service base
            inner = dict(environ, PATH_INFO="/wps", SCRIPT_NAME=environ.get("SCRIPT_NAME", "") + self.base)
            return self.service.call(Request(inner))
        if endpoint == "ogcapi":
            return self.ogcapi(args["rel"], identity, request)
        if endpoint == "output":
            return self.serve_output(args["rel"], identity, request)
        if endpoint == "jobs":
            return self.list_jobs(identity, request)
        if endpoint == "results":
            jobs = self.store.published()
            return _json({"results": [dict(j.as_dict(self._status_url(j)), shared_as=f"results/{j.owner}/{j.uuid}")
                                      for j in jobs]})
        if endpoint in ("stac", "data"):
            return self.serve_catalog(endpoint, args["rel"], request)
        if endpoint == "workspace":
            return self.workspace(args["name"].strip("/"), identity, request)
        if endpoint == "publish":
            return self.publish(args["job"], identity, request)
        if endpoint == "job":
            return self.job(args["job"], args["cancel"], identity, request)
        return _error(404, f"no such resource: {path}")

    # -- jobs -----------------------------------------------------------------------------------
    def _visible(self, job, identity) -> bool:
        return identity.admin or job.owner == identity.name

    def _status_url(self, job) -> str:
        return f"{self.settings.outputs_url}/{job.uuid}.xml" if job.mode == "async" else None

    def list_jobs(self, identity, request: Request) -> Response:
        owner = request.args.get("owner")
        if not identity.admin:
            if owner not in (None, identity.name):
                return _error(403, "you may list only your own jobs")
            owner = identity.name
        states = [s for s in request.args.get("status", "").split(",") if s] or None
        try:
            limit = int(request.args.get("limit", "200"))
        except ValueError:
            return _error(400, "limit must be an integer")
        jobs = self.store.list(owner=owner, states=states, limit=max(1, min(limit, 5000)))
        return _json({"jobs": [j.as_dict(self._status_url(j)) for j in jobs]})

    def job(self, uuid: str, cancel: bool, identity, request: Request) -> Response:
        if not _JOB.match(uuid):
            return _error(404, "no such job")
        job = self.store.get(uuid)
        if job is None or not self._visible(job, identity):
            return _error(404, "no such job")  # another user's job looks like an unknown one
        if cancel or request.method == "DELETE":
            if request.method not in ("POST", "DELETE"):
                return _error(405, "use POST to cancel")
            ok, message = cancel_job(self.settings, self.service, self.store, uuid, identity.name)
            job = self.store.get(uuid)
            body = job.as_dict(self._status_url(job))
            if not ok:
                body["error"] = message
            return _json(body, 200 if ok else 409)
        if request.method != "GET":
            return _error(405, "method not allowed")
        return _json(job.as_dict(self._status_url(job)))

    def publish(self, uuid: str, identity, request: Request) -> Response:
        """``POST /jobs/<id>/publish``: share a succeeded job's outputs with every user.

        The outputs are hard-linked (copied across file systems) into the shared results
        area, ``results/<owner>/<job id>/``, and the job's outputs become readable by all.
        ``DELETE`` (or ``POST .../publish?unpublish=1``) withdraws it.
        """
        if not _JOB.match(uuid):
            return _error(404, "no such job")
        job = self.store.get(uuid)
        if job is None or not self._visible(job, identity):  # only the owner (or an admin) publishes
            return _error(404, "no such job")
        if request.method not in ("POST", "DELETE"):
            return _error(405, "use POST to publish, DELETE to withdraw")
        target = self.settings.results_dir / job.owner / uuid
        if request.method == "DELETE" or request.args.get("unpublish"):
            remove_tree(target)
            self.store.set_published(uuid, False)
            refresh_logged(self.settings, self.store, f"job {uuid} withdrawn")
            job = self.store.get(uuid)
            return _json(job.as_dict(self._status_url(job)))
        if job.state != "succeeded" or job.outputs_removed is not None:
            return _error(409, f"only a succeeded job with its outputs can be published (job is {job.state})")
        share_outputs(self.settings.job_outputs(uuid), target, {"job_id": uuid, "process": job.identifier,
                                                               "owner": job.owner})
        self.store.set_published(uuid, True)
        refresh_logged(self.settings, self.store, f"job {uuid} published")
        job = self.store.get(uuid)
        body = job.as_dict(self._status_url(job))
        body["shared_as"] = f"results/{job.owner}/{uuid}"
        return _json(body)

    # -- the workspace ------------------------------------------------------------------------------
    def workspace(self, name: str, identity, request: Request) -> Response:
        """The caller's workspace files (see the module docstring)."""
        home = self.settings.workspace_dir / identity.name
        if not name:
            if request.method != "GET":
                return _error(405, "method not allowed")
            files = []
            for p in sorted(home.glob("*.geojson")) if home.is_dir() else []:
                st = p.stat()
                files.append({"name": p.name, "dataset": f"workspace/{identity.name}/{p.name}", "size": st.st_size,
                              "modified": dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)
                              .strftime("%Y-%m-%dT%H:%M:%SZ")})
            return _json({"files": files})
        if not WORKSPACE_NAME.match(name):
            return _error(400, f"workspace file name {name!r}: use letters, digits, _ . - and end in .geojson")
        path = home / name
        dataset = f"workspace/{identity.name}/{name}"
        if request.method == "GET":
            if not path.is_file():
                return _error(404, f"no such workspace file: {dataset}")
            return Response(path.read_bytes(), mimetype="application/geo+json")
        if request.method == "DELETE":
            if not path.is_file():
                return _error(404, f"no such workspace file: {dataset}")
            path.unlink()
            return _json({"deleted": dataset})
        if request.method != "PUT":
            return _error(405, "use GET, PUT or DELETE")
        if (request.content_length or 0) > WORKSPACE_MAX_BYTES:
            return _error(413, f"{dataset}: larger than {WORKSPACE_MAX_BYTES // 2**20} MB")
        body = request.get_data(cache=False)
        if len(body) > WORKSPACE_MAX_BYTES:
            return _error(413, f"{dataset}: larger than {WORKSPACE_MAX_BYTES // 2**20} MB")
        try:  # checked before it replaces anything
            features, _ = parse_polygons(body, dataset)
            codes = class_codes(features)
        except DataError as exc:
            return _error(400, str(exc))
        write_bytes(path, body)
        return _json({"name": name, "dataset": dataset, "features": len(features), "classes": codes})

    # -- the STAC catalogue and the data roots' files ----------------------------------------------
    def serve_catalog(self, endpoint: str, rel: str, request: Request) -> Response:
        """``/stac/...`` (the catalogue's JSON files) and ``/data/<root>/<path>`` (its data assets):
        read-only, the same for every authenticated user."""
        if request.method not in ("GET", "HEAD"):
            return _error(405, "the catalogue is read-only")
        rel = urllib.parse.unquote(rel)
        parts = [p for p in rel.split("/") if p]
        if any(p in ("..", ".") or p.startswith(".") for p in parts) or "\x00" in rel:
            return _error(404, "no such file")
        if endpoint == "stac":
            root = catalog_dir(self.settings)
            if not (root / "catalog.json").is_file():
                return _error(503, "the STAC catalogue is being built: try again in a moment")
            parts = parts or ["catalog.json"]
        else:
            if len(parts) < 2 or parts[0] not in self.settings.data_roots:
                return _error(404, "no such file")
            root, parts = self.settings.data_roots[parts[0]], parts[1:]
        real_root = Path(os.path.realpath(root))
        path = Path(os.path.realpath(real_root.joinpath(*parts)))
        try:
            path.relative_to(real_root)
        except ValueError:
            return _error(404, "no such file")
        if not path.is_file():
            return _error(404, "no such file")
        if endpoint == "stac":
            mime = "application/json" if path.name in ("catalog.json", "collection.json") else "application/geo+json"
        else:
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if path.suffix.lower() in (".tif", ".tiff", ".gtif"):
                mime = "image/tiff; application=geotiff"
        f = open(path, "rb")
        size = os.fstat(f.fileno()).st_size
        resp = Response(wrap_file(request.environ, f), mimetype=mime, direct_passthrough=True)
        if mime.startswith("image/tiff"):
            resp.headers["Content-Type"] = mime
        resp.content_length = size
        resp.headers["Cache-Control"] = "no-cache" if endpoint == "stac" else "private, max-age=60"
        return resp

    # -- outputs ----------------------------------------------------------------------------------
    def serve_output(self, rel: str, identity, request: Request) -> Response:
        rel = urllib.parse.unquote(rel)
        parts = [p for p in rel.split("/") if p]
        if not parts or any(p in ("..", ".") for p in parts) or "\x00" in rel:
            return _error(404, "no such output")
        uuid = parts[0][:-4] if len(parts) == 1 and parts[0].endswith(".xml") else parts[0]
        if not _JOB.match(uuid):
            return _error(404, "no such output")
        job = self.store.get(uuid)
        if job is None or not (self._visible(job, identity) or job.published):
            return _error(404, "no such output")  # another user's job looks like an unknown one
        root = Path(os.path.realpath(self.settings.outputs_dir))
        path = Path(os.path.realpath(root.joinpath(*parts)))
        try:
            path.relative_to(root)
        except ValueError:
            return _error(404, "no such output")
        if not path.is_file():
            if job.outputs_removed is not None and len(parts) > 1:
                return _error(410, f"outputs of job {uuid} were removed by the retention policy")
            return _error(404, "no such output")
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".xml":
            mime = "text/xml"
        f = open(path, "rb")
        size = os.fstat(f.fileno()).st_size
        resp = Response(wrap_file(request.environ, f), mimetype=mime, direct_passthrough=True)
        resp.content_length = size
        resp.headers["Cache-Control"] = "no-store" if path.suffix == ".xml" else "private, max-age=60"
        return resp


def make_app(settings, service=None, authenticator=None) -> WpsApp:
    """The WSGI app for prepared ``settings`` (builds the service if not given)."""
    if service is None:
        service = build_service(settings)
    return WpsApp(settings, service, authenticator)
