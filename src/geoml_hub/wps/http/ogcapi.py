"""OGC API - Processes - Part 1: Core (1.0) over the WPS's job system: one job system, two protocols.

Served by the WPS app (:mod:`geoml_hub.wps.http.app`) under ``<url>/ogcapi/`` (e.g.
``/services/wps/ogcapi/`` behind the hub):

``GET /``, ``GET /conformance``, ``GET /api``
    The landing page, the conformance classes (:data:`CONFORMANCE`) and a short OpenAPI 3.0
    document of these paths.
``GET /processes``, ``GET /processes/{id}``
    The processes and their descriptions, generated from the same PyWPS process objects as
    GetCapabilities and DescribeProcess (:func:`process_description`): each input's JSON schema
    from its data type, allowed values, range and default; each output's from its data type or
    formats.
``POST /processes/{id}/execution``
    An execute request (:data:`EXECUTE_SCHEMA`, checked with jsonschema; each input value against
    its input's schema). It becomes a PyWPS request run by the process's own Execute
    (:meth:`geoml_hub.wps.ogc.process.GeomlProcess.execute`): the same checks of datasets, quota
    and queue, the same job row, owner and worker as a WPS 1.0 Execute. With
    ``Prefer: respond-async`` the job is queued (201, ``Location: jobs/{id}``, a statusInfo);
    otherwise it runs during the request (200 and the results; ``response: raw`` with one
    output: that output alone).
``GET /jobs``, ``GET /jobs/{id}``, ``GET /jobs/{id}/results``, ``DELETE /jobs/{id}``
    The caller's jobs (admins: everyone's; ``limit``, ``processID``, ``status`` filter), one job's
    statusInfo, its results (read from the job's WPS status document) and dismissal
    (:func:`geoml_hub.wps.jobs.dispatcher.dismiss_job`: a queued or running job is cancelled, an
    ended one loses its outputs).

Job states map to OGC's ``statusCode``: queued -> accepted, running -> running, succeeded ->
successful, failed -> failed, dismissed -> dismissed. Errors are RFC 7807 problem details
(``application/problem+json``) with OGC's exception types (:data:`EXCEPTIONS`). Another user's job
answers 404 no-such-job, exactly as an unknown one; authentication and the refusal of cross-site
requests are the WPS app's, before anything here runs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid as uuidlib
from typing import Dict, List, Optional

import jsonschema
from lxml import etree
from pywps import configuration
from pywps.app.WPSRequest import WPSRequest
from pywps.dblog import log_request, store_status
from pywps.inout.literaltypes import AllowedValue
from pywps.inout.outputs import ComplexOutput
from pywps.response.status import WPS_STATUS
from pywps.validator.allowed_value import ALLOWEDVALUETYPE, RANGECLOSURETYPE
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from ... import __version__
from ...web.routing import Rule, match, url_map
from ..jobs.dispatcher import dismiss_job
from ..jobs.store import DISMISSED, FAILED, QUEUED, RUNNING, SUCCEEDED, store_for

LOGGER = logging.getLogger("geoml_hub.wps")

SPEC = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
#: The conformance classes implemented (no HTML, no callbacks, no OpenAPI 3.0 class: /api is a
#: short description of the paths, not a full API definition).
CONFORMANCE = [SPEC + c for c in ("core", "json", "job-list", "dismiss", "ogc-process-description")]
#: OGC's exception types (OGC API - Processes 1.0, section 7.x "Exceptions").
EXC = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
EXCEPTIONS = {"no-such-process": EXC + "no-such-process", "no-such-job": EXC + "no-such-job",
              "result-not-ready": EXC + "result-not-ready"}
#: OGC's link relation of a job's results and of a process's execution endpoint.
REL_RESULTS = "http://www.opengis.net/def/rel/ogc/1.0/results"
REL_EXECUTE = "http://www.opengis.net/def/rel/ogc/1.0/execute"
REL_JOBLIST = "http://www.opengis.net/def/rel/ogc/1.0/job-list"
REL_PROCESSES = "http://www.opengis.net/def/rel/ogc/1.0/processes"
REL_CONFORMANCE = "http://www.opengis.net/def/rel/ogc/1.0/conformance"
JSON, PROBLEM = "application/json", "application/problem+json"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"

#: Job states (:mod:`geoml_hub.wps.jobs.store`) as OGC's ``statusCode``.
STATUS = {QUEUED: "accepted", RUNNING: "running", SUCCEEDED: "successful", FAILED: "failed", DISMISSED: "dismissed"}
#: PyWPS literal data types as JSON-schema types.
JSON_TYPES = {"string": "string", "integer": "integer", "nonNegativeInteger": "integer",
              "positiveInteger": "integer", "float": "number", "double": "number", "boolean": "boolean"}

#: An execute request (OGC API - Processes 1.0, ``execute.yaml``): inputs by identifier, each a
#: value, a qualified value ``{"value": ...}``, a link ``{"href": ...}`` or a list of those;
#: outputs by identifier with a format and transmission mode; the response form.
EXECUTE_SCHEMA = {
    "type": "object",
    "properties": {
        "inputs": {"type": "object", "additionalProperties": {
            "anyOf": [{"$ref": "#/$defs/input"}, {"type": "array", "items": {"$ref": "#/$defs/input"}}]}},
        "outputs": {"type": "object", "additionalProperties": {
            "type": "object",
            "properties": {"format": {"type": "object", "properties": {
                "mediaType": {"type": "string"}, "encoding": {"type": "string"}, "schema": {}}},
                "transmissionMode": {"enum": ["value", "reference"]}}}},
        "response": {"enum": ["raw", "document"]},
        "subscriber": {"type": "object"},
    },
    "$defs": {"input": {"oneOf": [
        {"type": ["string", "number", "integer", "boolean", "array"]},
        {"type": "object", "required": ["href"], "properties": {"href": {"type": "string", "minLength": 1},
                                                                 "type": {"type": "string"},
                                                                 "rel": {"type": "string"}}},
        {"type": "object", "required": ["value"], "not": {"required": ["href"]},
         "properties": {"mediaType": {"type": "string"}, "encoding": {"type": "string"}}},
    ]}},
}


def problem(status: int, kind: str, detail: str, **extra) -> Response:
    """An RFC 7807 problem details answer (``application/problem+json``); ``kind`` is a key of
    :data:`EXCEPTIONS` or an HTTP title such as ``"bad request"``."""
    body = {"type": EXCEPTIONS.get(kind, "about:blank"), "title": kind, "status": status, "detail": detail}
    body.update(extra)
    return Response(json.dumps(body, indent=1) + "\n", status=status, mimetype=PROBLEM)


def _json(data, status: int = 200, headers=None) -> Response:
    return Response(json.dumps(data, indent=1) + "\n", status=status, mimetype=JSON, headers=headers)


def _iso(t: Optional[dt.datetime]) -> Optional[str]:
    return t.isoformat(timespec="seconds") + "Z" if t else None


# -- process descriptions ---------------------------------------------------------------------------
def _typed(data_type: str, value):
    kind = JSON_TYPES.get(data_type, "string")
    if value is None:
        return None
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
        if kind == "boolean":
            return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1")
    except (TypeError, ValueError):
        return value
    return value if kind != "string" else str(value)


def input_schema(inp) -> dict:
    """The JSON schema of one value of a PyWPS literal input: its type, allowed values (``enum``)
    or range (``minimum``/``maximum``, exclusive for open ends) and default. A range's spacing
    (odd window sizes) has no JSON-schema form; the server still refuses other values."""
    data_type = getattr(inp, "data_type", None) or "string"
    schema = {"type": JSON_TYPES.get(data_type, "string")}
    allowed = [v for v in (getattr(inp, "allowed_values", None) or []) if isinstance(v, AllowedValue)]
    values = [_typed(data_type, v.value) for v in allowed if v.allowed_type == ALLOWEDVALUETYPE.VALUE]
    ranges = [v for v in allowed if v.allowed_type == ALLOWEDVALUETYPE.RANGE]
    if values:
        schema["enum"] = values
    elif len(ranges) == 1:
        r = ranges[0]
        low_open = r.range_closure in (RANGECLOSURETYPE.OPEN, RANGECLOSURETYPE.OPENCLOSED)
        high_open = r.range_closure in (RANGECLOSURETYPE.OPEN, RANGECLOSURETYPE.CLOSEDOPEN)
        if r.minval is not None:
            schema["exclusiveMinimum" if low_open else "minimum"] = _typed(data_type, r.minval)
        if r.maxval is not None:
            schema["exclusiveMaximum" if high_open else "maximum"] = _typed(data_type, r.maxval)
    default = inp.json.get("data") if inp.min_occurs == 0 else None  # as DescribeProcess shows it
    if default is not None:
        schema["default"] = _typed(data_type, default)
    return schema


def output_schema(out) -> dict:
    """The JSON schema of a PyWPS output: a literal's type, or a file's media types (by reference)."""
    if isinstance(out, ComplexOutput):
        formats = [{"type": "string", "contentMediaType": f.mime_type} for f in out.supported_formats]
        return formats[0] if len(formats) == 1 else {"oneOf": formats}
    return {"type": JSON_TYPES.get(getattr(out, "data_type", None) or "string", "string")}


class OgcApi:
    """The OGC API - Processes resources of one WPS app (see the module docstring).

    Parameters
    ----------
    settings : Settings
        The server settings (``url`` is the WPS service's public base URL).
    service : pywps.Service
        The service whose processes are offered and run.
    """

    URLS = url_map([
        Rule("/", endpoint="landing"),
        Rule("/conformance", endpoint="conformance"),
        Rule("/api", endpoint="api"),
        Rule("/processes", endpoint="processes"),
        Rule("/processes/<pid>", endpoint="process"),
        Rule("/processes/<pid>/execution", endpoint="execution"),
        Rule("/jobs", endpoint="jobs"),
        Rule("/jobs/<job>", endpoint="job"),
        Rule("/jobs/<job>/results", endpoint="results"),
    ])
    #: Methods of each endpoint.
    METHODS = {"execution": ("POST",), "job": ("GET", "DELETE")}

    def __init__(self, settings, service):
        self.settings = settings
        self.service = service
        self.root = settings.url + "/ogcapi"

    @property
    def store(self):
        return store_for(self.settings.database)

    def __call__(self, rel: str, identity, request: Request) -> Response:
        """Answer ``request`` for the path ``rel`` below ``/ogcapi/`` of an authenticated ``identity``."""
        path = "/" + rel.lstrip("/")
        endpoint, args = match(self.URLS, path)
        if endpoint is None:
            return problem(404, "not found", f"no such resource: /ogcapi{path}")
        allowed = self.METHODS.get(endpoint, ("GET", "HEAD"))
        if request.method not in allowed + (("HEAD",) if "GET" in allowed else ()):
            return problem(405, "method not allowed", f"/ogcapi{path} takes {', '.join(allowed)}")
        if endpoint == "landing":
            return _json(self.landing())
        if endpoint == "conformance":
            return _json({"conformsTo": CONFORMANCE})
        if endpoint == "api":
            return Response(json.dumps(self.openapi(), indent=1), mimetype=OPENAPI)
        if endpoint == "processes":
            return _json({"processes": [self.summary(p) for p in self.service.processes.values()],
                          "links": [self._link("/processes", "self")]})
        if endpoint in ("process", "execution"):
            process = self.service.processes.get(args["pid"])
            if process is None:
                return problem(404, "no-such-process", f"no such process: {args['pid']}; processes: "
                               + ", ".join(self.service.processes))
            if endpoint == "process":
                return _json(process_description(process, self))
            return self.execute(process, identity, request)
        if endpoint == "jobs":
            return self.list_jobs(identity, request)
        job = self.store.get(args["job"]) if len(args["job"]) <= 64 else None
        if job is None or not (identity.admin or job.owner == identity.name):
            return problem(404, "no-such-job", f"no such job: {args['job'][:64]}")
        if endpoint == "results":
            return self.results(job)
        if request.method == "DELETE":
            ok, message = dismiss_job(self.settings, self.service, self.store, job.uuid, identity.name)
            job = self.store.get(job.uuid)
            if not ok:
                return problem(409, "conflict", f"job {job.uuid} cannot be dismissed: {message}")
            return _json(self.status_info(job))
        return _json(self.status_info(job))

    # -- links and the landing page ---------------------------------------------------------------
    def _link(self, path: str, rel: str, mime: str = JSON, title: Optional[str] = None) -> dict:
        link = {"href": self.root + path, "rel": rel, "type": mime}
        if title:
            link["title"] = title
        return link

    def landing(self) -> dict:
        return {"title": "geoml-hub processes", "description": "The geoml-hub WPS processes as OGC API - Processes "
                "1.0 (the same processes and jobs as the WPS 1.0 endpoint).",
                "links": [self._link("/", "self", title="this document"),
                          self._link("/api", "service-desc", OPENAPI, "the API definition"),
                          self._link("/conformance", REL_CONFORMANCE, title="conformance classes"),
                          self._link("/conformance", "conformance", title="conformance classes"),
                          self._link("/processes", REL_PROCESSES, title="processes"),
                          self._link("/jobs", REL_JOBLIST, title="jobs"),
                          {"href": self.settings.wps_url + "?service=WPS&request=GetCapabilities&version=1.0.0",
                           "rel": "alternate", "type": "text/xml", "title": "the WPS 1.0 endpoint"}]}

    def openapi(self) -> dict:
        """A short OpenAPI 3.0 document of the paths (no component schemas)."""
        def op(summary, codes):
            return {"summary": summary, "responses": {str(c): {"description": d} for c, d in codes.items()}}

        job = {"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}}
        pid = {"name": "processId", "in": "path", "required": True,
               "schema": {"type": "string", "enum": list(self.service.processes)}}
        return {"openapi": "3.0.3", "info": {"title": "geoml-hub OGC API - Processes", "version": __version__},
                "servers": [{"url": self.root}],
                "paths": {"/": {"get": op("landing page", {200: "links"})},
                          "/conformance": {"get": op("conformance classes", {200: "conformsTo"})},
                          "/processes": {"get": op("process list", {200: "process summaries"})},
                          "/processes/{processId}": {"parameters": [pid], "get": op(
                              "process description", {200: "description", 404: "no-such-process"})},
                          "/processes/{processId}/execution": {"parameters": [pid], "post": op(
                              "execute (Prefer: respond-async for a job)",
                              {200: "results", 201: "statusInfo of the job", 400: "bad request"})},
                          "/jobs": {"get": op("the caller's jobs", {200: "jobList"})},
                          "/jobs/{jobId}": {"parameters": [job], "get": op("statusInfo", {200: "statusInfo",
                                                                                          404: "no-such-job"}),
                                            "delete": op("dismiss", {200: "statusInfo", 404: "no-such-job"})},
                          "/jobs/{jobId}/results": {"parameters": [job], "get": op(
                              "results", {200: "results", 404: "no-such-job or result-not-ready"})}}}

    # -- processes -----------------------------------------------------------------------------------
    def summary(self, process) -> dict:
        """A processSummary of a PyWPS process."""
        ident = process.identifier
        options = ["sync-execute"] + (["async-execute"] if process.status_supported == "true" else [])
        return {"id": ident, "title": process.title, "description": " ".join((process.abstract or "").split()),
                "version": process.version, "jobControlOptions": options,
                "outputTransmission": ["value", "reference"],
                "metadata": [{"title": m.title, "role": m.role} for m in process.metadata],
                "links": [self._link(f"/processes/{ident}", "self", title="process description"),
                          self._link(f"/processes/{ident}/execution", REL_EXECUTE, title="execute"),
                          {"href": f"{self.settings.wps_url}?service=WPS&request=DescribeProcess&version=1.0.0"
                                   f"&identifier={ident}", "rel": "alternate", "type": "text/xml",
                           "title": "WPS 1.0 DescribeProcess"}]}

    # -- execution -----------------------------------------------------------------------------------
    def execute(self, process, identity, request: Request) -> Response:
        """``POST /processes/{id}/execution`` (see the module docstring)."""
        limit = configuration.get_size_mb(configuration.get_config_value("server", "maxrequestsize")) * 2**20
        if (request.content_length or 0) > limit:  # PyWPS's limit of a WPS request body
            return problem(413, "payload too large", f"the execute request is larger than {limit / 2**20:g} MB")
        try:
            body = json.loads(request.get_data(cache=False) or b"{}")
        except ValueError as exc:
            return problem(400, "bad request", f"the execute request is not JSON: {exc}")
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(EXECUTE_SCHEMA).iter_errors(body))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "the request"
            return problem(400, "bad request", f"execute request: {where}: {error.message[:300]}")
        try:
            inputs = wps_inputs(process, body.get("inputs") or {})
            outputs = wps_outputs(process, body.get("outputs") or {})
        except ValueError as exc:
            return problem(400, "bad request", str(exc))
        response_form = body.get("response", "document")
        prefer = request.headers.get("Prefer", "").replace(" ", "").lower()
        async_ = "respond-async" in prefer.split(",") and process.status_supported == "true"
        if response_form == "raw" and (async_ or len(outputs or process.outputs) != 1):
            return problem(400, "bad request", "response raw: ask for exactly one output and run synchronously "
                           "(without Prefer: respond-async); otherwise use response document")
        wps_request = WPSRequest()  # built here, not parsed from the body
        wps_request.http_request = request  # the identity (geoml.identity) is in its environ
        wps_request.operation, wps_request.identifier = "execute", process.identifier
        wps_request.set_version("1.0.0")
        wps_request.check_and_set_language(None)
        wps_request.inputs, wps_request.outputs, wps_request.raw = inputs, outputs, False
        wps_request.lineage = "false"
        wps_request.store_execute = "true" if async_ else "false"
        wps_request.status = "true" if async_ else "false"
        job_id = uuidlib.uuid4()
        log_request(job_id, wps_request)
        try:
            response = self.service.execute(process.identifier, wps_request, job_id)
        except HTTPException as exc:  # PyWPS's refusals: InvalidParameterValue, ServerBusy, ...
            store_status(job_id, WPS_STATUS.FAILED, "Request rejected due to exception", 100)
            return problem(exc.code or 500, "bad request" if exc.code == 400 else "refused", exc.description,
                           locator=getattr(exc, "locator", None))
        job = self.store.get(str(job_id))
        headers = {"Preference-Applied": "respond-async" if async_ else "respond-sync"}
        if async_:
            headers["Location"] = f"{self.root}/jobs/{job_id}"
            return _json(self.status_info(job), 201, headers)
        if job is None or job.state != SUCCEEDED:
            return problem(500, "job failed", job.message if job else "the process ended without a status",
                           jobID=str(job_id))
        headers["Link"] = f'<{self.root}/jobs/{job_id}>; rel="monitor"'
        results = select(results_from_document(response.doc), outputs)
        if response_form == "raw":
            (value,) = results.values()
            if isinstance(value, dict) and "href" in value:
                headers["Link"] = f'<{value["href"]}>; rel="{REL_RESULTS}"'
                return Response(status=204, headers=headers)
            return Response(str(value), mimetype="text/plain", headers=headers)
        return _json(results, 200, headers)

    # -- jobs ----------------------------------------------------------------------------------------
    def status_info(self, job) -> dict:
        """The statusInfo of a job row (``updated``: when its status document last changed)."""
        links = [self._link(f"/jobs/{job.uuid}", "self", title="job status"),
                 self._link(f"/jobs/{job.uuid}", "status", title="job status")]
        if job.state == SUCCEEDED and job.outputs_removed is None and job.mode == "async":
            links.append(self._link(f"/jobs/{job.uuid}/results", REL_RESULTS, title="job results"))
        if job.mode == "async":
            links.append({"href": f"{self.settings.outputs_url}/{job.uuid}.xml", "rel": "alternate",
                          "type": "text/xml", "title": "WPS 1.0 status document"})
        updated = max(t for t in (job.created, job.started, job.finished) if t)
        try:
            mtime = os.stat(self.settings.status_file(job.uuid)).st_mtime
            updated = max(updated, dt.datetime.fromtimestamp(mtime, dt.timezone.utc).replace(tzinfo=None))
        except OSError:
            pass
        info = {"processID": job.identifier, "type": "process", "jobID": job.uuid, "status": STATUS[job.state],
                "message": job.message or "", "created": _iso(job.created), "started": _iso(job.started),
                "finished": _iso(job.finished), "updated": _iso(updated),
                "progress": int(round(job.percent or 0)), "links": links}
        return {k: v for k, v in info.items() if v is not None}

    def list_jobs(self, identity, request: Request) -> Response:
        """``GET /jobs``: the caller's jobs, newest first (admins: everyone's); ``limit`` (default
        100, at most 1000), ``processID`` and ``status`` (OGC's codes, comma-separated) filter."""
        try:
            limit = max(1, min(int(request.args.get("limit", "100")), 1000))
        except ValueError:
            return problem(400, "bad request", "limit must be an integer")
        wanted = [s for s in ",".join(request.args.getlist("status")).split(",") if s]
        states = [k for k, v in STATUS.items() if v in wanted]
        if wanted and len(states) != len(set(wanted)):
            return problem(400, "bad request", f"status: use {', '.join(STATUS.values())}")
        pids = [p for p in ",".join(request.args.getlist("processID")).split(",") if p]
        owner = None if identity.admin else identity.name
        jobs = self.store.list(owner=owner, states=states or None, limit=limit, identifiers=pids or None)
        return _json({"jobs": [self.status_info(j) for j in jobs], "links": [self._link("/jobs", "self")]})

    def results(self, job) -> Response:
        """``GET /jobs/{id}/results``: the outputs of a successful job (those the execute request
        selected), read from its WPS status document."""
        if job.state in (QUEUED, RUNNING):
            return problem(404, "result-not-ready", f"job {job.uuid} is {STATUS[job.state]}, "
                           f"{int(job.percent or 0)} percent done")
        if job.state == FAILED:
            return problem(500, "job failed", job.message or "the job failed", jobID=job.uuid)
        if job.state == DISMISSED or job.outputs_removed is not None:
            return problem(410, "gone", f"the outputs of job {job.uuid} were removed ({job.message})"
                           if job.state == DISMISSED else f"the outputs of job {job.uuid} were removed by the "
                           "retention policy")
        try:
            doc = self.settings.status_file(job.uuid).read_bytes()
        except OSError:
            return problem(404, "not found", f"job {job.uuid} ran synchronously: its results were the "
                           "execute response")
        outputs = json.loads(job.request).get("outputs") if job.request else None
        return _json(select(results_from_document(doc), outputs or {}))


def process_description(process, api: OgcApi) -> dict:
    """The OGC process description (``ogc-process-description``) of a PyWPS process: its summary,
    and its inputs and outputs with titles, descriptions, occurrences and JSON schemas."""
    out = api.summary(process)
    out["inputs"] = {}
    for inp in process.inputs:
        schema = input_schema(inp)
        out["inputs"][inp.identifier] = {
            "title": inp.title, "description": " ".join((inp.abstract or "").split()),
            "minOccurs": inp.min_occurs, "maxOccurs": inp.max_occurs, "schema": schema}
        if inp.identifier in getattr(process, "datasets", {}):
            out["inputs"][inp.identifier]["keywords"] = ["dataset"]
    out["outputs"] = {o.identifier: {"title": o.title, "description": " ".join((o.abstract or "").split()),
                                     "schema": output_schema(o)} for o in process.outputs}
    return out


def wps_inputs(process, given: Dict) -> Dict[str, List[dict]]:
    """The PyWPS request inputs of an execute request's ``inputs`` (already checked against
    :data:`EXECUTE_SCHEMA`): each value checked against its input's schema; a link
    (``{"href": URL}``) only for inputs that name datasets (the URL becomes the dataset name).

    Raises
    ------
    ValueError
        Naming the input: unknown, a reference where a value is needed, or a value its schema refuses.
    """
    declared = {i.identifier: i for i in process.inputs}
    out = {}
    for ident, value in given.items():
        inp = declared.get(ident)
        if inp is None:
            raise ValueError(f"unknown input {ident} for process {process.identifier}; inputs: "
                             f"{', '.join(declared)}")
        values = value if isinstance(value, list) else [value]
        schema = input_schema(inp)
        out[ident] = []
        for v in values:
            if isinstance(v, dict) and "href" in v:
                if ident not in getattr(process, "datasets", {}):
                    raise ValueError(f"input {ident}: takes a value, not a reference (href)")
                data = v["href"]
            else:
                data = v["value"] if isinstance(v, dict) else v
                error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
                if error is not None:
                    raise ValueError(f"input {ident}: {error.message[:200]}")
            out[ident].append({"identifier": ident, "data": data})
    return out


def wps_outputs(process, wanted: Dict) -> Dict[str, dict]:
    """The PyWPS request outputs (``{id: {asReference, mimetype}}``) of an execute request's
    ``outputs``: files go by reference, literals by value.

    Raises
    ------
    ValueError
        For an unknown output or a transmission mode the output does not offer.
    """
    declared = {o.identifier: o for o in process.outputs}
    out = {}
    for ident, spec in wanted.items():
        o = declared.get(ident)
        if o is None:
            raise ValueError(f"unknown output {ident} of process {process.identifier}; outputs: "
                             f"{', '.join(declared)}")
        by_ref = isinstance(o, ComplexOutput)
        mode = spec.get("transmissionMode")
        if mode and mode != ("reference" if by_ref else "value"):
            raise ValueError(f"output {ident}: transmitted by {'reference' if by_ref else 'value'} only")
        out[ident] = {"asReference": "true" if by_ref else "false",
                      "mimetype": (spec.get("format") or {}).get("mediaType", "") if by_ref else ""}
    return out


_WPS = "http://www.opengis.net/wps/1.0.0"
_OWS = "http://www.opengis.net/ows/1.1"


def results_from_document(doc) -> Dict:
    """The outputs of a WPS 1.0 ExecuteResponse document as OGC results: literal outputs by value
    (typed by their ``dataType``), references as links ``{"href", "type"}``."""
    root = etree.fromstring(doc if isinstance(doc, bytes) else str(doc).encode("utf-8"))
    results = {}
    for out in root.iterfind(f"{{{_WPS}}}ProcessOutputs/{{{_WPS}}}Output"):
        ident = out.findtext(f"{{{_OWS}}}Identifier")
        ref = out.find(f"{{{_WPS}}}Reference")
        literal = out.find(f"{{{_WPS}}}Data/{{{_WPS}}}LiteralData")
        if ref is not None:
            link = {"href": ref.get("href") or ref.get("{http://www.w3.org/1999/xlink}href")}
            if ref.get("mimeType"):
                link["type"] = ref.get("mimeType")
            results[ident] = link
        elif literal is not None:
            data_type = (literal.get("dataType") or "string").rsplit(":", 1)[-1].rsplit("#", 1)[-1]
            results[ident] = _typed(data_type, literal.text)
    return results


def select(results: Dict, outputs: Optional[Dict]) -> Dict:
    """The ``results`` the execute request asked for (all without an ``outputs`` member)."""
    return {k: v for k, v in results.items() if not outputs or k in outputs}


__all__ = ["OgcApi", "CONFORMANCE", "EXECUTE_SCHEMA", "problem", "process_description", "input_schema",
           "results_from_document"]
