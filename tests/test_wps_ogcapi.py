"""OGC API - Processes 1.0 (``<wps>/ogcapi/``) against a real ``geoml-hub wps serve`` (gunicorn, its
dispatcher and job workers), called as a user would: OWSLib's ``owslib.ogcapi.processes.Processes``
for the landing page, the process list, the descriptions and execution, and ``requests`` where
OWSLib 0.35 has no call (job status, job list, results, dismiss).

All eight processes run end to end on the real data (the Chiapas chain, training kept at one
epoch), asynchronously (``Prefer: respond-async``, polled to the end) and one synchronously; a
running job and a finished one are dismissed. Every response is checked against the standard's
response schemas, twice: as JSON Schema (``tests/ogcapi-processes-1.0-schemas.yaml``, the
pieces of the standard's OpenAPI components the responses use, written out here: no package
ships them) and with the models of ``ogc-api-processes-client`` (pydantic models generated from
the standard's OpenAPI document, API version 1.0.0, by another party). The tests under a real
``geoml-hub up`` with authentication and two users are at the end (marked slow).
"""

from __future__ import annotations

import time
from pathlib import Path

import jsonschema
import ogc_api_processes_client.models as ogc_models
import psutil
import pytest
import requests
import yaml
from owslib.ogcapi import REQUEST_HEADERS
from owslib.ogcapi.processes import Processes

from hubtools import PASSWORDS, admin_token, api, down, login, sign_up, up, user_token
from wps_server import WpsServer, free_port

from geoml_hub.processes import identifiers, load
from geoml_hub.wps.jobs.store import JobStore

SCENE_99 = "data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif"
SCENE_02 = "data/landsat7_chiapas/LE70220492002106EDC00_stack.gtif"
REFERENCE = "data/landsat7_chiapas/training_data.gtif"
SCHEMAS = yaml.safe_load((Path(__file__).with_name("ogcapi-processes-1.0-schemas.yaml")).read_text())
CONF = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
RESULTS_REL = "http://www.opengis.net/def/rel/ogc/1.0/results"


#: The models of ogc-api-processes-client of the schemas (its ``InlineOrRefData``, the results' values,
#: is left out: the generator's oneOf of int and float refuses every integer as ambiguous).
MODELS = {"landingPage": ogc_models.LandingPage, "confClasses": ogc_models.ConfClasses,
          "processList": ogc_models.ProcessList, "process": ogc_models.Process, "exception": ogc_models.Exception,
          "statusInfo": ogc_models.StatusInfo, "jobList": ogc_models.JobList}


def conforms(doc, name: str):
    """``doc`` validated against the standard's schema ``name``: jsonschema and the generated model
    raise otherwise."""
    jsonschema.validate(doc, {"$ref": f"#/$defs/{name}", "$defs": SCHEMAS["$defs"]},
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    if name in MODELS:
        MODELS[name].from_dict(doc)
    return doc


def ogc_client(url: str, token: str = None) -> Processes:
    """OWSLib's client as a user makes it; with a JupyterHub token under the hub.

    OWSLib 0.35 keeps its request headers in one module-level dict (``REQUEST_HEADERS``) that every
    client updates and shares: each client here gets its own copy, and the shared one is reset."""
    headers = {"Authorization": f"token {token}"} if token else None
    try:
        client = Processes(url, headers=headers)
        client.headers = dict(client.headers)
    finally:
        REQUEST_HEADERS.pop("Authorization", None)
    return client


class Session:
    """What OWSLib lacks, with ``requests``: job status, list, results and dismiss."""

    def __init__(self, client: Processes):
        self.root = client.url.rstrip("/")
        self.http = requests.Session()
        self.http.headers.update({k: v for k, v in client.headers.items() if k == "Authorization"})

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.root + path, timeout=60, **kw)

    def delete(self, path: str) -> requests.Response:
        return self.http.delete(self.root + path, timeout=60)

    def status(self, job: str) -> dict:
        r = self.get(f"/jobs/{job}")
        assert r.status_code == 200, r.text
        return conforms(r.json(), "statusInfo")

    def wait(self, job: str, timeout: float = 600.0, until=("successful", "failed", "dismissed")) -> dict:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            info = self.status(job)
            seen.append((info["status"], info["progress"]))
            if info["status"] in until:
                info["seen"] = seen
                return info
            time.sleep(0.5)
        raise AssertionError(f"job {job} still {seen[-1]} after {timeout} s")

    def results(self, job: str) -> dict:
        r = self.get(f"/jobs/{job}/results")
        assert r.status_code == 200, r.text
        return conforms(r.json(), "results")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with WpsServer(tmp_path_factory.mktemp("ogcapi") / "state", parallel=2) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server) -> Processes:
    return ogc_client(server.url + "/ogcapi/")


@pytest.fixture(scope="module")
def session(client) -> Session:
    return Session(client)


def run_async(client: Processes, session: Session, process: str, inputs: dict, **kw) -> dict:
    """Execute ``process`` with ``Prefer: respond-async`` through OWSLib, poll it to the end and
    return its results (with the final statusInfo under ``_status``)."""
    accepted = conforms(client.execute(process, inputs, async_=True, **kw), "statusInfo")
    assert accepted["status"] in ("accepted", "running") and accepted["processID"] == process
    assert client.response_headers["Location"].endswith(f"/ogcapi/jobs/{accepted['jobID']}")
    assert client.response_headers["Preference-Applied"] == "respond-async"
    info = session.wait(accepted["jobID"])
    assert info["status"] == "successful", info
    assert info["progress"] == 100 and info["finished"] >= info["started"] >= info["created"]
    assert any(link["rel"] == RESULTS_REL for link in info["links"])
    out = session.results(accepted["jobID"])
    out["_status"] = info
    return out


# == landing page, conformance, processes ====================================================================

def test_landing_page_conformance_and_the_eight_processes(client, session):
    conforms(client.response, "landingPage")
    rels = {link["rel"] for link in client.links}
    assert {"service-desc", "http://www.opengis.net/def/rel/ogc/1.0/processes",
            "http://www.opengis.net/def/rel/ogc/1.0/job-list"} <= rels
    conf = conforms(client.conformance(), "confClasses")["conformsTo"]
    assert set(conf) == {CONF + c for c in ("core", "json", "job-list", "dismiss", "ogc-process-description")}
    assert client.api()["openapi"].startswith("3.0")  # OWSLib finds it through the service-desc link
    listed = client.processes()
    assert listed == conforms(session.get("/processes").json(), "processList")["processes"]
    assert [p["id"] for p in listed] == list(identifiers())
    for p in listed:
        assert set(p["jobControlOptions"]) == {"sync-execute", "async-execute"}


@pytest.mark.parametrize("identifier", identifiers())
def test_process_description_is_the_describe_process_declaration(client, identifier):
    desc = conforms(client.process(identifier), "process")
    declared = {p.identifier: p for p in load()}[identifier]
    assert list(desc["inputs"]) == [i.identifier for i in declared.inputs]
    assert list(desc["outputs"]) == [o.identifier for o in declared.outputs]
    for inp in declared.inputs:
        d = desc["inputs"][inp.identifier]
        assert (d["minOccurs"], d["maxOccurs"], d["title"]) == (inp.min_occurs, inp.max_occurs, inp.title)
        jsonschema.Draft202012Validator.check_schema(d["schema"])
        default = inp.json.get("data") if inp.min_occurs == 0 else None
        if default is not None:  # the declared default, a valid value of its schema
            assert str(d["schema"]["default"]).lower() == str(default).lower()
            jsonschema.validate(d["schema"]["default"], d["schema"])
    for out in declared.outputs:
        schema = desc["outputs"][out.identifier]["schema"]
        if hasattr(out, "supported_formats"):
            assert schema["contentMediaType"] == out.supported_formats[0].mime_type
        else:
            assert schema["type"] in ("string", "integer", "number", "boolean")


def test_train_model_schema_carries_the_declared_range_and_choices(client):
    from geoml_hub import params
    from geoml_hub.training import TrainConfig

    inputs = client.process("train_model")["inputs"]
    for p in params.declared(TrainConfig):
        if not p.wps:
            continue
        schema = inputs[p.wps]["schema"]
        if p.minimum is not None:
            assert schema["minimum"] == p.minimum and schema["maximum"] == p.maximum, p.name
        if p.choices:
            assert schema["enum"] == list(p.choices), p.name


# == errors ==================================================================================================

def test_errors_are_problem_details(client, session):
    r = session.get("/processes/no_such_process")
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/problem+json"
    assert conforms(r.json(), "exception")["type"].endswith("/no-such-process")
    with pytest.raises(RuntimeError, match="no-such-process"):
        client.execute("no_such_process", {"x": 1})
    r = session.get("/jobs/00000000-0000-4000-8000-000000000000")
    assert r.status_code == 404 and r.json()["type"].endswith("/no-such-job")
    bad = {"epochs": 0}, {"samples": "data/eurosat_ms", "epoch": 2}, {"samples": "data/eurosat_ms", "epochs": "two"}
    for inputs in bad:
        r = session.http.post(session.root + "/processes/train_model/execution", json={"inputs": inputs}, timeout=60)
        assert r.status_code == 400 and r.headers["Content-Type"] == "application/problem+json", r.text
    texts = []
    for inputs in ({"samples": "data/eurosat_ms", "epochs": 0}, {"samples": "data/eurosat_ms", "epoch": 2},
                   {"samples": "data/no_such_dir"}):
        r = session.http.post(session.root + "/processes/train_model/execution", json={"inputs": inputs}, timeout=60,
                              headers={"Prefer": "respond-async"})
        assert r.status_code == 400, r.text
        texts.append(conforms(r.json(), "exception")["detail"])
    assert "epochs" in texts[0] and "minimum of 1" in texts[0]
    assert "unknown input epoch" in texts[1]
    assert "samples" in texts[2] and "no_such_dir" in texts[2]  # the dataset check of the WPS path
    r = session.http.post(session.root + "/processes/train_model/execution", data="{not json", timeout=60)
    assert r.status_code == 400 and "not JSON" in r.json()["detail"]
    r = session.http.post(session.root + "/processes/train_model/execution", timeout=60,
                          json={"inputs": {"samples": "data/eurosat_ms"}, "response": "inline"})
    assert r.status_code == 400 and "response" in r.json()["detail"]
    assert session.get("/processes/train_model/execution").status_code == 405
    r = session.http.post(session.root + "/processes/train_model/execution", timeout=60,
                          json={"inputs": {"samples": "x" * (4 * 2**20)}})  # over maxrequestsize, 3 MB
    assert r.status_code == 413 and "3 MB" in r.json()["detail"]


# == all eight processes, end to end ===========================================================================

@pytest.fixture(scope="module")
def chain(client, session):
    return run_chain(client, session)


def run_chain(client: Processes, session: Session) -> dict:
    """The Chiapas chain through OGC API - Processes: extract -> balance -> train (1 epoch) ->
    check compatibility -> classify both dates -> evaluate, validate (synchronously) and compare; the outputs of one job
    are given to the next as links (``{"href": <output URL>}``)."""
    out = {}
    out["extract"] = run_async(client, session, "extract_samples", {
        "scene": SCENE_99, "reference": REFERENCE, "test_fraction": 0.3,
        "class_names": "1=forest,2=water,3=herbaceous,4=barren,5=urban"})
    out["balance"] = run_async(client, session, "balance_samples", {"samples": out["extract"]["samples"]})
    out["train"] = run_async(client, session, "train_model", {
        "samples": out["balance"]["manifest"], "family": "cnn", "epochs": 1, "device": "cpu"})
    out["compatibility"] = run_async(client, session, "check_compatibility", {
        "model": {"href": out["train"]["model"]["href"]}, "scene": [SCENE_99], "device": "cpu"})
    for key, scene in (("classify_99", SCENE_99), ("classify_02", SCENE_02)):
        out[key] = run_async(client, session, "classify_scene", {
            "model": {"href": out["train"]["model"]["href"]}, "scene": [scene], "tile_size": 128, "device": "cpu"})
    out["evaluate"] = run_async(client, session, "evaluate_model", {
        "model": out["train"]["model"], "samples": out["extract"]["samples"], "device": "cpu"})
    # synchronously (no Prefer header): the results are the execute response
    out["validate"] = conforms(client.execute("validate_classification", {
        "classification": out["classify_99"]["classification"], "reference": out["extract"]["reference_test"]}),
        "results")
    out["validate_headers"] = dict(client.response_headers)
    out["compare"] = run_async(client, session, "compare_classifications", {
        "classification_a": out["classify_99"]["classification"],
        "classification_b": out["classify_02"]["classification"],
        "reference": {"value": out["extract"]["reference_test"]}, "name_a": "y1999", "name_b": "y2002"},
        outputs={"overall_accuracy_a": {}, "overall_accuracy_b": {}, "better": {}, "comparison": {}})
    return out


def test_all_eight_processes_run_end_to_end(chain, session, server):
    ex = chain["extract"]
    assert ex["samples"].startswith("jobs/") and ex["sample_count"] > 0
    assert chain["balance"]["samples_after"] > 0 and chain["balance"]["manifest"]["type"] == "text/csv"
    train = chain["train"]
    assert train["epochs_run"] == 1 and 0.0 <= train["val_overall_accuracy"] <= 1.0
    model = requests.get(train["model"]["href"], timeout=60)  # a reference is served to its owner
    assert model.status_code == 200 and len(model.content) > 1000
    for key in ("classify_99", "classify_02"):
        tif = requests.get(chain[key]["classification"]["href"], timeout=60)
        assert tif.status_code == 200 and tif.content[:4] in (b"II*\x00", b"MM\x00*")
    # the model is fit for the scene its samples come from
    assert chain["compatibility"]["compatible"] == "compatible", chain["compatibility"]["reason"]
    assert 0.0 <= chain["evaluate"]["overall_accuracy"] <= 1.0
    val = chain["validate"]
    assert 0.0 <= val["overall_accuracy"] <= 1.0 and val["n"] > 0
    assert chain["validate_headers"]["Preference-Applied"] == "respond-sync"
    monitor = chain["validate_headers"]["Link"].split(";")[0].strip("<>")
    sync_job = monitor.rsplit("/", 1)[1]
    assert session.status(sync_job)["status"] == "successful"
    cmp_ = chain["compare"]
    assert set(cmp_) - {"_status"} == {"overall_accuracy_a", "overall_accuracy_b", "better", "comparison"}
    assert cmp_["overall_accuracy_a"] == pytest.approx(val["overall_accuracy"])
    assert cmp_["better"] in ("y1999", "y2002", "tie")
    jobs = conforms(session.get("/jobs", params={"limit": 50}).json(), "jobList")["jobs"]
    assert {j["processID"] for j in jobs} == set(identifiers())
    assert all(j["status"] == "successful" for j in jobs)
    # one job system: the JSON job API and the WPS status document know the same jobs
    own = requests.get(server.url + "/jobs", timeout=60).json()["jobs"]
    assert {j["job_id"] for j in own} == {j["jobID"] for j in jobs}
    wps_doc = [link for link in chain["train"]["_status"]["links"] if link["type"] == "text/xml"][0]["href"]
    assert b"ProcessSucceeded" in requests.get(wps_doc, timeout=60).content
    assert session.get("/jobs", params={"status": "running,accepted"}).json()["jobs"] == []
    assert len(session.get("/jobs", params={"status": "successful"}).json()["jobs"]) == len(jobs)
    assert session.get("/jobs", params={"status": "done"}).status_code == 400
    filtered = session.get("/jobs", params={"processID": "classify_scene", "limit": 1}).json()["jobs"]
    assert len(filtered) == 1 and filtered[0]["jobID"] == chain["classify_02"]["_status"]["jobID"]


def test_sync_execution_and_raw_response(client, session, chain):
    r = session.http.post(session.root + "/processes/validate_classification/execution", timeout=300, json={
        "inputs": {"classification": chain["classify_99"]["classification"], "reference": REFERENCE},
        "outputs": {"overall_accuracy": {"transmissionMode": "value"}}, "response": "raw"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert 0.0 <= float(r.text) <= 1.0
    r = session.http.post(session.root + "/processes/validate_classification/execution", timeout=60, json={
        "inputs": {"classification": REFERENCE, "reference": REFERENCE},
        "outputs": {"overall_accuracy": {"transmissionMode": "reference"}}})
    assert r.status_code == 400 and "by value only" in r.json()["detail"]
    # raw, one file output: no body, the output's URL in the Link header
    r = session.http.post(session.root + "/processes/validate_classification/execution", timeout=300, json={
        "inputs": {"classification": REFERENCE, "reference": REFERENCE}, "outputs": {"summary": {}},
        "response": "raw"})
    assert r.status_code == 204 and RESULTS_REL in r.headers["Link"], r.text
    href = r.headers["Link"].split(";")[0].strip("<>")
    assert href.endswith("/summary.json") and requests.get(href, timeout=60).json()["overall_accuracy"] == 1.0


def test_dismiss_a_running_job_stops_its_worker(client, session, server, chain):
    accepted = client.execute("train_model", {"samples": chain["balance"]["manifest"], "family": "cnn",
                                              "epochs": 500, "patience": 500, "device": "cpu"}, async_=True)
    job = accepted["jobID"]
    deadline = time.monotonic() + 300
    while (info := session.status(job))["status"] in ("accepted", "running") and info["progress"] == 0 \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    # progress as the worker reports it (the same status as the WPS 1.0 path): one step per epoch
    assert info["status"] == "running" and 0 < info["progress"] < 100 and "epoch" in info["message"], info
    assert info["updated"] >= info["started"]
    r = session.get(f"/jobs/{job}/results")
    assert r.status_code == 404 and r.json()["type"].endswith("/result-not-ready")
    store = JobStore(f"sqlite:///{server.state_dir / 'log.sqlite'}")
    deadline = time.monotonic() + 120
    while store.get(job).pid is None and time.monotonic() < deadline:
        time.sleep(0.2)
    pid = store.get(job).pid
    assert pid and psutil.pid_exists(pid)
    r = session.delete(f"/jobs/{job}")
    assert r.status_code == 200, r.text
    assert conforms(r.json(), "statusInfo")["status"] == "dismissed"
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    time.sleep(2)
    assert session.status(job)["status"] == "dismissed"
    assert requests.get(f"{server.url}/jobs/{job}", timeout=60).json()["status"] == "dismissed"
    assert session.get(f"/jobs/{job}/results").status_code == 410
    assert session.delete(f"/jobs/{job}").status_code == 409  # once


def test_a_failed_job_reports_its_message(client, session, chain):
    """A job that fails while it runs (a 6-band model on the 13-band EuroSAT patches): failed with
    the process's message, asynchronously (the results are that problem) and synchronously."""
    inputs = {"model": chain["train"]["model"], "samples": "data/eurosat_ms", "device": "cpu"}
    job = client.execute("evaluate_model", inputs, async_=True)["jobID"]
    info = session.wait(job, timeout=300)
    assert info["status"] == "failed" and "band" in info["message"], info
    assert not any(link["rel"] == RESULTS_REL for link in info["links"])
    r = session.get(f"/jobs/{job}/results")
    assert r.status_code == 500 and conforms(r.json(), "exception")["detail"] == info["message"]
    r = session.http.post(session.root + "/processes/evaluate_model/execution", json={"inputs": inputs},
                          timeout=300)
    assert r.status_code == 500 and conforms(r.json(), "exception")["detail"] == info["message"]
    assert session.status(r.json()["jobID"])["status"] == "failed"


def test_dismiss_a_finished_job_removes_its_outputs(session, server, chain):
    job = chain["compare"]["_status"]["jobID"]
    href = chain["compare"]["comparison"]["href"]
    assert requests.get(href, timeout=60).status_code == 200
    r = session.delete(f"/jobs/{job}")
    assert r.status_code == 200 and conforms(r.json(), "statusInfo")["status"] == "dismissed"
    assert requests.get(href, timeout=60).status_code in (404, 410)
    assert not (server.state_dir / "outputs" / job).exists()
    assert session.get(f"/jobs/{job}/results").status_code == 410
    assert requests.get(f"{server.url}/jobs/{job}", timeout=60).json()["outputs_removed"]


# == under geoml-hub up: authentication and two users ==========================================================

@pytest.mark.slow
def test_under_the_hub_users_see_only_their_own_jobs_and_run_every_process(shared_base):
    """Under ``geoml-hub up``: a JupyterHub token authenticates OWSLib; bob cannot see, read or
    dismiss alice's job (404, as for an unknown one); no identity: 401; alice's login cookie alone
    cannot execute or dismiss from another site (403); and the whole chain of every process runs
    end to end as alice through the hub."""
    state = shared_base / "ogcapi-hub"
    port = free_port()
    res = up(state, port, shared_base / "ogcapi-hub-shared")
    assert res.returncode == 0, res.stdout + res.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        hub = {"url": url, "state": state}
        assert sign_up(url, "alice", PASSWORDS["alice"]).status_code == 200
        admin = login(url, "admin", (state / "admin_password").read_text().strip())
        assert admin.get(f"{url}/hub/authorize/alice", timeout=30).status_code == 200
        browser = login(url, "alice", PASSWORDS["alice"])  # her first login makes her a hub user
        assert browser.login_status == 302
        assert api(url, admin_token(hub), "POST", "/users/bob").status_code == 201
        root = url + "/services/wps/ogcapi/"
        r = requests.get(root + "processes", timeout=60)
        assert r.status_code == 401 and r.headers["Content-Type"] == "application/problem+json"
        alice, bob = ogc_client(root, user_token(hub, "alice")), ogc_client(root, user_token(hub, "bob"))
        assert [p["id"] for p in alice.processes()] == list(identifiers())
        as_alice, as_bob = Session(alice), Session(bob)
        accepted = alice.execute("validate_classification", {"classification": REFERENCE, "reference": REFERENCE},
                                 async_=True)
        job = accepted["jobID"]
        assert as_alice.wait(job, timeout=300)["status"] == "successful"
        results = as_alice.results(job)
        assert results["overall_accuracy"] == 1.0 and results["n"] == 718
        assert requests.get(results["summary"]["href"], headers=as_alice.http.headers, timeout=60).status_code == 200
        # bob: the job is unknown to him, whatever he tries; anonymous: refused
        for r in (as_bob.get(f"/jobs/{job}"), as_bob.get(f"/jobs/{job}/results"), as_bob.delete(f"/jobs/{job}")):
            assert r.status_code == 404 and r.json()["type"].endswith("/no-such-job")
        assert requests.get(results["summary"]["href"], headers=as_bob.http.headers, timeout=60).status_code == 404
        assert as_bob.get("/jobs").json()["jobs"] == []
        assert requests.get(f"{root}jobs/{job}", timeout=60).status_code == 401
        assert requests.delete(f"{root}jobs/{job}", timeout=60).status_code == 401
        # alice's browser: her login cookie reads, but from another site changes nothing
        assert browser.get(url + "/services/wps/jobs", headers={"Accept": "text/html"}, timeout=60).status_code == 200
        assert browser.get(f"{root}jobs/{job}", timeout=60).json()["status"] == "successful"
        evil = {"Origin": "http://evil.example"}
        r = browser.post(f"{root}processes/validate_classification/execution", headers=evil, timeout=60,
                         json={"inputs": {"classification": REFERENCE, "reference": REFERENCE}})
        assert r.status_code == 403 and r.headers["Content-Type"] == "application/problem+json", r.text
        assert browser.delete(f"{root}jobs/{job}", headers=evil, timeout=60).status_code == 403
        assert [j["jobID"] for j in as_alice.get("/jobs").json()["jobs"]] == [job]
        assert as_alice.delete(f"/jobs/{job}").status_code == 200
        assert as_alice.status(job)["status"] == "dismissed"
        # every process, end to end, as alice through the hub; bob still sees none of it
        chain = run_chain(alice, as_alice)
        assert chain["compatibility"]["compatible"] == "compatible"
        assert chain["compare"]["overall_accuracy_a"] == pytest.approx(chain["validate"]["overall_accuracy"])
        done = [j for j in as_alice.get("/jobs", params={"limit": 50}).json()["jobs"] if j["status"] == "successful"]
        assert {j["processID"] for j in done} == set(identifiers())
        assert as_bob.get("/jobs").json()["jobs"] == []
        assert as_bob.get(f"/jobs/{chain['train']['_status']['jobID']}").status_code == 404
    finally:
        down(state)
