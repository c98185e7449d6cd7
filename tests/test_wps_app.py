"""The WPS WSGI app in-process: owners and identities, settings, dataset names, messages.

Identity comes from the server's authenticator hook; the hub provides the real one (the
hub issue). Here ``HeaderIdentity`` plays that role so owners can be told apart: it is the
hook's contract (``identify(environ) -> Identity | None``), not a stand-in for PyWPS.
"""

from __future__ import annotations

import html
import os
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pywps.app.exceptions import format_message
from werkzeug.test import Client

from conftest import DATA, LABELS as LABELS_PATH
from helpers import XSS_NAME, hostile_labels
from geoml_hub.errors import ParameterError
from geoml_hub.wps.ogc import inputs as ds
from geoml_hub.wps.http.app import make_app
from geoml_hub.web.auth import Identity
from geoml_hub.wps.jobs.store import JobStore, process_start_ticks, worker_alive
from geoml_hub.wps.ogc.process import wps_message
from geoml_hub.processes import build_service
from geoml_hub.wps.settings import Settings, load_settings

LABELS = "data/landsat7_chiapas/training_data.gtif"


class HeaderIdentity:
    """Identity from an ``X-User`` header (``admin`` is an admin); none without it."""

    def identify(self, environ):
        name = environ.get("HTTP_X_USER")
        return Identity(name, admin=(name == "admin")) if name else None


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    settings = Settings(state_dir=tmp_path_factory.mktemp("wpsapp") / "state", data_roots={"data": DATA},
                        auth="jupyterhub")
    app = make_app(settings, build_service(settings), HeaderIdentity())
    return settings, Client(app)


def execute_url(identifier, inputs):
    parts = ";".join(f"{k}={urllib.parse.quote(str(v), safe='/:')}" for k, v in inputs.items())
    return (f"/wps?service=WPS&request=Execute&version=1.0.0&identifier={identifier}&DataInputs={parts}")


def output_href(xml: bytes, identifier: str) -> str:
    ns = {"wps": "http://www.opengis.net/wps/1.0.0", "ows": "http://www.opengis.net/ows/1.1"}
    for out in ET.fromstring(xml).findall(".//wps:Output", ns):
        if out.find("ows:Identifier", ns).text == identifier:
            return out.find("wps:Reference", ns).get("href")
    raise AssertionError(f"no output {identifier}")


def test_no_identity_no_service(app_client):
    settings, c = app_client
    r = c.get("/wps?service=WPS&request=GetCapabilities")
    assert r.status_code == 401 and b"ExceptionReport" in r.data
    assert c.get("/jobs").status_code == 401
    r = c.get(execute_url("validate_classification", {"classification": LABELS, "reference": LABELS}))
    assert r.status_code == 401
    assert JobStore(settings.database).list() == []  # nothing ran


def test_jobs_and_outputs_belong_to_their_owner(app_client):
    settings, c = app_client
    r = c.get(execute_url("validate_classification", {"classification": LABELS, "reference": LABELS}),
              headers={"X-User": "alice"})
    assert r.status_code == 200 and b"ProcessSucceeded" in r.data, r.data[:2000]
    href = output_href(r.data, "summary")
    path = urllib.parse.urlparse(href).path
    job_id = path.split("/")[-2]
    alice = c.get("/jobs", headers={"X-User": "alice"}).json["jobs"]
    assert [j["job_id"] for j in alice] == [job_id] and alice[0]["owner"] == "alice"
    assert alice[0]["status"] == "succeeded" and alice[0]["mode"] == "sync"
    assert c.get(path, headers={"X-User": "alice"}).status_code == 200
    # bob sees none of it
    assert c.get("/jobs", headers={"X-User": "bob"}).json["jobs"] == []
    assert c.get(f"/jobs/{job_id}", headers={"X-User": "bob"}).status_code == 404
    assert c.get(path, headers={"X-User": "bob"}).status_code == 404
    assert c.get("/jobs?owner=alice", headers={"X-User": "bob"}).status_code == 403
    # and cannot use alice's outputs as inputs
    r = c.get(execute_url("validate_classification", {"classification": f"jobs/{job_id}/summary.json",
                                                      "reference": LABELS}), headers={"X-User": "bob"})
    assert r.status_code == 400 and b"no such job of user bob" in r.data
    # an admin sees everyone's jobs
    admin = c.get("/jobs?owner=alice", headers={"X-User": "admin"}).json["jobs"]
    assert [j["job_id"] for j in admin] == [job_id]
    assert c.get(path, headers={"X-User": "admin"}).status_code == 200
    # a published job's outputs are readable by all, and listed in the shared results
    assert c.get("/results", headers={"X-User": "bob"}).json["results"] == []
    JobStore(settings.database).set_published(job_id)
    assert c.get(path, headers={"X-User": "bob"}).status_code == 200
    shared = c.get("/results", headers={"X-User": "bob"}).json["results"]
    assert [(r["job_id"], r["owner"], r["shared_as"]) for r in shared] == [(job_id, "alice", f"results/alice/{job_id}")]


def test_workspace_files_belong_to_their_owner(app_client, tmp_path):
    """The workspace API (what the web map saves polygons with): each user's own folder."""
    from helpers import chiapas_polygons

    settings, c = app_client
    chiapas_polygons(tmp_path / "p.geojson")
    body = (tmp_path / "p.geojson").read_bytes()
    r = c.put("/workspace/chiapas.geojson", data=body, headers={"X-User": "alice"})
    assert r.status_code == 200 and r.json["dataset"] == "workspace/alice/chiapas.geojson", r.data
    assert (settings.workspace_dir / "alice" / "chiapas.geojson").read_bytes() == body
    assert [f["name"] for f in c.get("/workspace", headers={"X-User": "alice"}).json["files"]] == ["chiapas.geojson"]
    assert c.get("/workspace", headers={"X-User": "bob"}).json["files"] == []
    assert c.get("/workspace/chiapas.geojson", headers={"X-User": "bob"}).status_code == 404
    assert c.get("/workspace").status_code == 401
    # refused: bad names, bad content (the file it would replace stays), too large
    for name in ("../x.geojson", "x.tif", ".hidden.geojson"):
        assert c.put(f"/workspace/{name}", data=body, headers={"X-User": "alice"}).status_code in (400, 404)
    r = c.put("/workspace/chiapas.geojson", data=b'{"type": "FeatureCollection", "features": []}',
              headers={"X-User": "alice"})
    assert r.status_code == 400 and "workspace/alice/chiapas.geojson: no polygons" in r.json["error"]
    assert (settings.workspace_dir / "alice" / "chiapas.geojson").read_bytes() == body
    big = b" " * (5 * 1024 * 1024 + 1)
    assert c.put("/workspace/big.geojson", data=big, headers={"X-User": "alice"}).status_code == 413
    # bob's jobs cannot read alice's folder; an admin's can
    with pytest.raises(ds.DatasetError, match="workspace/alice/ belongs to another user"):
        ds.resolve("workspace/alice/chiapas.geojson", settings, ds.Access("bob"))
    assert ds.resolve("workspace/alice/chiapas.geojson", settings, ds.Access("admin", admin=True)).is_file()
    r = c.get(execute_url("extract_samples", {"scene": "data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif",
                                              "reference": "workspace/alice/chiapas.geojson"}),
              headers={"X-User": "bob"})
    assert r.status_code == 400 and b"belongs to another user" in r.data
    assert c.delete("/workspace/chiapas.geojson", headers={"X-User": "alice"}).status_code == 200
    assert c.get("/workspace", headers={"X-User": "alice"}).json["files"] == []


def test_cancel_is_for_async_jobs_of_the_owner(app_client):
    settings, c = app_client
    r = c.get(execute_url("validate_classification", {"classification": LABELS, "reference": LABELS}),
              headers={"X-User": "carol"})
    job_id = urllib.parse.urlparse(output_href(r.data, "summary")).path.split("/")[-2]
    assert c.post(f"/jobs/{job_id}/cancel", headers={"X-User": "dave"}).status_code == 404
    r = c.post(f"/jobs/{job_id}/cancel", headers={"X-User": "carol"})
    assert r.status_code == 409 and "already succeeded" in r.json["error"]


def test_job_ids_are_random_and_other_users_jobs_look_unknown(app_client):
    """Job ids are random (uuid4: uuid1's node and clock sequence are the same for every user),
    and another user's job answers exactly as an unknown id does (404, same body): its record,
    cancel, publish, status document and outputs."""
    settings, c = app_client
    erin, frank = {"X-User": "erin"}, {"X-User": "frank"}
    inputs = {"classification": LABELS, "reference": LABELS}
    r = c.get(execute_url("validate_classification", inputs) + "&storeExecuteResponse=true&status=true",
              headers=erin)  # async: queued (no dispatcher here), with a status document
    queued = urllib.parse.urlparse(ET.fromstring(r.data).get("statusLocation")).path.split("/")[-1][:-4]
    r = c.get(execute_url("validate_classification", inputs), headers=erin)
    done = urllib.parse.urlparse(output_href(r.data, "summary")).path.split("/")[-2]
    assert [uuid.UUID(j).version for j in (queued, done)] == [4, 4]
    assert uuid.UUID(queued).node != uuid.UUID(done).node
    unknown = str(uuid.uuid4())
    assert c.get(f"/outputs/{queued}.xml", headers=erin).status_code == 200
    for job in (queued, done):
        assert c.get(f"/jobs/{job}", headers=erin).status_code == 200
        calls = [("GET", f"/jobs/{job}"), ("POST", f"/jobs/{job}/cancel"), ("DELETE", f"/jobs/{job}"),
                    ("POST", f"/jobs/{job}/publish"), ("DELETE", f"/jobs/{job}/publish"),
                    ("GET", f"/outputs/{job}.xml"), ("GET", f"/outputs/{job}/summary.json")]
        for method, path in calls:
            foreign = c.open(path, method=method, headers=frank)
            missing = c.open(path.replace(job, unknown), method=method, headers=frank)
            assert (foreign.status_code, foreign.data) == (404, missing.data), (method, path, foreign.data)
    assert c.get(f"/outputs/{done}/summary.json", headers=erin).status_code == 200
    assert c.get(f"/jobs/{queued}", headers=erin).json["status"] == "queued"  # frank cancelled nothing


def test_user_html_is_served_sandboxed_with_class_names_escaped(app_client):
    """A raster whose CLASS_NAMES tag holds markup: PyCM's report.html shows it escaped, and every
    output (and every other answer) comes with ``Content-Security-Policy: sandbox`` and
    ``nosniff``, also to the other users who read it once it is published."""
    settings, c = app_client
    owner, other = {"X-User": "gina"}, {"X-User": "hank"}
    hostile_labels(LABELS_PATH, settings.workspace_dir / "gina" / "xss.tif")  # as gina's notebook writes it
    r = c.get(execute_url("validate_classification", {"classification": "workspace/gina/xss.tif",
                                                      "reference": LABELS}), headers=owner)
    assert r.status_code == 200 and b"ProcessSucceeded" in r.data, r.data[-2000:]
    report = urllib.parse.urlparse(output_href(r.data, "report")).path
    summary = urllib.parse.urlparse(output_href(r.data, "summary")).path
    job_id = report.split("/")[-2]
    assert c.post(f"/jobs/{job_id}/publish", headers=owner).status_code == 200
    got = c.get(report, headers=other)
    assert got.status_code == 200 and got.headers["Content-Type"].startswith("text/html")
    assert got.headers.get("Content-Security-Policy") == "sandbox"
    assert got.headers.get("X-Content-Type-Options") == "nosniff"
    assert XSS_NAME.encode() not in got.data and b"<img" not in got.data
    assert html.escape(XSS_NAME).encode() in got.data
    assert XSS_NAME in c.get(summary, headers=other).json["classes"]  # data stays data (JSON)
    for path in (summary, f"/outputs/{job_id}/report.csv", f"/jobs/{job_id}", "/jobs", "/results", "/workspace",
                 "/wps?service=WPS&request=GetCapabilities", f"/outputs/{uuid.uuid4()}/x.html", "/health"):
        r = c.get(path, headers=other)
        assert (r.headers.get("Content-Security-Policy"), r.headers.get("X-Content-Type-Options")) == (
            "sandbox", "nosniff"), (path, r.status_code)


# -- settings -------------------------------------------------------------------------------
def test_settings_from_ini(tmp_path):
    cfg = tmp_path / "wps.cfg"
    cfg.write_text(f"[geoml]\nstate_dir = {tmp_path / 's'}\ndata_roots = data={DATA}, extra={tmp_path}\n"
                   "parallelprocesses = 3\nretention_hours = 2.5\n\n[server]\nmaxsingleinputsize = 2mb\n")
    s = load_settings(cfg, maxprocesses=7)
    assert s.parallelprocesses == 3 and s.maxprocesses == 7 and s.retention_hours == 2.5
    assert s.data_roots == {"data": DATA.resolve(), "extra": tmp_path.resolve()}
    assert s.database == f"sqlite:///{tmp_path.resolve() / 's' / 'log.sqlite'}"
    text = s.render_pywps_cfg()
    assert "maxsingleinputsize = 2mb" in text and "parallelprocesses = 3" in text
    assert ":memory:" not in text


@pytest.mark.parametrize("bad, message", [
    ({"database": "sqlite:///:memory:"}, "in-memory"),
    ({"parallelprocesses": 0}, "parallelprocesses"),
    ({"data_roots": {"jobs": "/tmp"}}, "reserved"),
    ({"auth": "ldap"}, "auth"),
])
def test_bad_settings(tmp_path, bad, message):
    with pytest.raises(ParameterError, match=message):
        Settings(state_dir=tmp_path, **bad)


def test_unknown_setting_and_missing_file(tmp_path):
    cfg = tmp_path / "wps.cfg"
    cfg.write_text("[geoml]\nparalel = 2\n")
    with pytest.raises(ParameterError, match="unknown"):
        load_settings(cfg)
    with pytest.raises(ParameterError, match="no such file"):
        load_settings(tmp_path / "missing.cfg")


# -- dataset names --------------------------------------------------------------------------------
@pytest.fixture()
def roots(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.tif").write_bytes(b"x")
    s = Settings(state_dir=tmp_path / "state", data_roots={"data": DATA})
    s.workspace_dir.mkdir(parents=True)
    os.symlink(outside, s.workspace_dir / "link")
    os.symlink(DATA / "landsat7_chiapas", s.workspace_dir / "chiapas")
    return s


@pytest.mark.parametrize("name, message", [
    ("", "empty"), ("/etc/passwd", "not a server path"), ("~/x", "not a server path"),
    ("data/../etc", "traversal"), ("data/./x", "traversal"), ("data\\x", "invalid character"),
    ("nope/x", "unknown data root"), ("workspace/link/secret.tif", "outside its data root"),
    ("data/missing.tif", "does not exist"), ("jobs/abc", "expected jobs/JOB_ID/FILE"),
    ("jobs/0123456789abcdef/x", "no such job"),
])
def test_dataset_names_rejected(roots, name, message):
    with pytest.raises(ds.DatasetError, match=message):
        ds.resolve(name, roots, ds.Access("alice"))


def test_dataset_names_resolved(roots):
    a = ds.Access("alice")
    assert ds.resolve("data/eurosat_ms", roots, a, kind="dir") == (DATA / "eurosat_ms").resolve()
    # a symlink that stays inside the allowed data is followed
    p = ds.resolve("workspace/chiapas/training_data.gtif", roots, a, kind="file")
    assert p == (DATA / "landsat7_chiapas" / "training_data.gtif").resolve()
    with pytest.raises(ds.DatasetError, match="not a directory"):
        ds.resolve(LABELS, roots, a, kind="dir")
    assert ds.own_output_path(roots.outputs_url + "/abc-def/model.pt", roots) == "jobs/abc-def/model.pt"
    assert ds.own_output_path("http://elsewhere/outputs/x", roots) is None


def test_check_paths_blocks_files_outside(roots, tmp_path):
    allowed = [DATA.resolve()]
    ds.check_paths([DATA / "eurosat_ms"], allowed, "manifest")
    with pytest.raises(ds.DatasetError, match="outside the allowed data roots"):
        ds.check_paths([tmp_path / "outside" / "secret.tif"], allowed, "manifest.csv")


# -- messages and workers ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "dataset 'data/x.tif' does not exist",
    "bands (13) != model bands [4]; use band_map={2,3,4} -> 100% <= 5",
    "x" * 500,
    "ü €",
])
def test_wps_message_survives_pywps_sanitising(text):
    msg = wps_message(text)
    assert format_message(msg) == msg and 3 <= len(msg) <= 300


@pytest.mark.parametrize("through_symlink", [False, True], ids=["direct", "symlink"])
def test_wps_message_hides_server_paths(tmp_path, through_symlink):
    """Messages show dataset names, never server paths: neither the path a data root or the state
    directory was given as nor the real path it resolves to (they differ through a symlink)."""
    data, state = DATA.resolve(), tmp_path / "state"
    if through_symlink:
        os.symlink(data, tmp_path / "shared-link")
        (tmp_path / "state-real").mkdir()
        os.symlink(tmp_path / "state-real", state)
        data = tmp_path / "shared-link"
    s = Settings(state_dir=state, data_roots={"data": data})
    for root in (data, data.resolve()):
        msg = wps_message(f"{root}/eurosat_ms/Forest/x.tif: not a GeoTIFF", s)
        assert str(root) not in msg and msg.startswith("data/eurosat_ms/Forest/x.tif"), msg
    for outputs in (state / "outputs", state.resolve() / "outputs"):
        msg = wps_message(f"cannot write {outputs}/abc/model.pt", s)
        assert msg == "cannot write jobs/abc/model.pt", msg


def test_worker_identity_survives_pid_reuse():
    ticks = process_start_ticks(os.getpid())
    assert ticks and worker_alive(os.getpid(), ticks)
    assert not worker_alive(os.getpid(), ticks + 1)  # same pid, another start time: another process
    assert not worker_alive(None, None)
    assert process_start_ticks(2 ** 22 + 12345) is None


def test_docs_process_reference_is_current():
    """docs/wps.md holds the output of ``geoml-hub wps describe`` (regenerate it after changing a process)."""
    from geoml_hub.processes import load
    from geoml_hub.wps.ogc.describe import docs_section, render_markdown

    text = (Path(__file__).resolve().parents[1] / "docs" / "wps.md").read_text(encoding="utf-8")
    assert docs_section(text) == render_markdown(load())


def test_core_never_imports_pywps():
    """Dependencies point one way: processes/ -> geoml_hub.wps -> the core."""
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "geoml_hub"
    core = [p for p in src.glob("*.py") if p.name not in ("client.py",)]
    assert len(core) >= 12
    for path in core:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
                if node.level and (node.module or "").startswith("wps") and path.name != "cli.py":
                    names = ["geoml_hub.wps"]
            for name in names:
                assert not name.split(".")[0] in ("pywps", "owslib"), f"{path.name} imports {name}"
                assert name != "geoml_hub.wps", f"{path.name} imports the WPS layer"
