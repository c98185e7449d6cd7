"""Hardening of the WPS server (issue 12, items 8-11), on a real ``geoml-hub wps serve``.

- the SQLite databases wait for a lock longer than SQLite's default 5 s, and database
  errors never reach clients as SQL or driver text (SQLite and PostgreSQL);
- the queue limit (``--max-queued``) holds under a concurrent burst (SQLite and PostgreSQL);
- literal inputs are parsed strictly; malformed requests and rasters PyCM rejects get a clear
  ExceptionReport;
- a job whose worker is killed is retried once (``job_retries``), then fails with the reason.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import requests

from helpers import write_raster
from wps_server import (CHIAPAS_LABELS, EUROSAT, NS, WpsServer, alive, db_job, execute, job, status_of,  # noqa: F401
                        wait_final, wait_for)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with WpsServer(tmp_path_factory.mktemp("wps-robust") / "state", parallel=1) as s:
        yield s


def exception_of(r):
    """(exceptionCode, locator, text) of an ExceptionReport answer."""
    root = ET.fromstring(r.content)
    assert root.tag.endswith("ExceptionReport"), r.text[:2000]
    exc = root.find("ows:Exception", NS)
    return exc.get("exceptionCode"), exc.get("locator"), exc.find("ows:ExceptionText", NS).text or ""


def sql_text_in(body: bytes) -> bool:
    low = body.lower()
    return any(w in low for w in (b"insert into", b"update pywps", b"[sql:", b"sqlite3", b"psycopg", b"operationalerror",
                                  b"pywps_requests", b"percent_done"))


# -- item 8: the databases under load ------------------------------------------------------------
def test_sqlite_lock_longer_than_five_seconds_is_waited_for(tmp_path):
    """A writer holding the SQLite lock for 6.5 s (a long checkpoint, a slow disk) delays
    GetCapabilities and DescribeProcess; it does not fail them (PyWPS's engine gave up after 5 s)."""
    with WpsServer(tmp_path / "state", parallel=1) as server:
        params = [{"service": "WPS", "request": "GetCapabilities"},
                  {"service": "WPS", "request": "DescribeProcess", "version": "1.0.0", "identifier": "train_model"}]
        assert all(requests.get(server.wps_url, params=p, timeout=30).status_code == 200 for p in params)
        con = sqlite3.connect(server.state_dir / "log.sqlite", isolation_level=None)
        con.execute("BEGIN IMMEDIATE")  # the write lock
        answers = [None] * len(params)

        def ask(k):
            answers[k] = requests.get(server.wps_url, params=params[k], timeout=120)

        threads = [threading.Thread(target=ask, args=(k,)) for k in range(len(params))]
        for t in threads:
            t.start()
        time.sleep(6.5)
        con.execute("COMMIT")
        con.close()
        for t in threads:
            t.join(120)
        for r, expected in zip(answers, (b"Capabilities", b"ProcessDescriptions")):
            assert r.status_code == 200 and expected in r.content, (r.status_code, r.text[:1000])
        with sqlite3.connect(server.state_dir / "log.sqlite") as c:
            assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


BREAKAGES = {
    # every insert into the request log fails (PyWPS 4.8: a 500 "No applicable error code")
    "insert": {"sqlite": ["ALTER TABLE pywps_requests DROP COLUMN percent_done"],
               "postgresql": ["ALTER TABLE pywps_requests DROP COLUMN percent_done"]},
    # the last status update, while the response document is built, fails (PyWPS 4.8: a 400 whose
    # text holds the SQL statement)
    "update": {"sqlite": ["CREATE TRIGGER geoml_test_boom BEFORE UPDATE ON pywps_requests "
                          "WHEN NEW.message = 'Response generated' "
                          "BEGIN SELECT RAISE(ABORT, 'percent_done boom'); END"],
               "postgresql": ["CREATE FUNCTION geoml_test_boom() RETURNS trigger AS $$ BEGIN "
                              "IF NEW.message = 'Response generated' THEN RAISE EXCEPTION 'percent_done boom'; "
                              "END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
                              "CREATE TRIGGER geoml_test_boom BEFORE UPDATE ON pywps_requests "
                              "FOR EACH ROW EXECUTE FUNCTION geoml_test_boom()"]},
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_database_errors_are_not_shown_to_clients(tmp_path, database, breakage):
    """A database error inside PyWPS's request log (a column removed, or a trigger refusing the
    status update, under the running server) gives a generic one-line ExceptionReport; the SQL
    statement and the driver's text go to the server log."""
    import sqlalchemy as sa

    with WpsServer(tmp_path / "state", parallel=1, database=database) as server:
        url = database or f"sqlite:///{server.state_dir.resolve() / 'log.sqlite'}"
        assert requests.get(server.wps_url, params={"service": "WPS", "request": "GetCapabilities"},
                            timeout=30).status_code == 200
        eng = sa.create_engine(url)
        with eng.begin() as c:
            for statement in BREAKAGES[breakage][eng.dialect.name]:
                c.exec_driver_sql(statement)
        eng.dispose()
        answers = [requests.get(server.wps_url, params={"service": "WPS", "request": "GetCapabilities"}, timeout=60),
                   requests.get(server.wps_url, params={"service": "WPS", "request": "DescribeProcess",
                                                        "version": "1.0.0", "identifier": "train_model"}, timeout=60),
                   execute(server, "validate_classification",
                           {"classification": CHIAPAS_LABELS, "reference": CHIAPAS_LABELS}, async_=False,
                           expect_ok=False)[2]]
        assert answers[0].status_code >= 500, (answers[0].status_code, answers[0].text[:1000])  # it broke
        for r in answers:
            assert not sql_text_in(r.content), r.text[:2000]
            if r.status_code == 200 and b"ExecuteResponse" in r.content:
                continue  # (the Execute of "update" never writes the message the trigger refuses)
            assert r.status_code >= 500, (r.status_code, r.text[:1000])
            code, _, text = exception_of(r)
            assert "database" in text and len(text) < 200, text
        assert "percent_done" in server.log_text()  # the detail is in the server log


# -- item 9: the queue limit under a burst ------------------------------------------------------
def test_queue_limit_holds_under_a_concurrent_burst(tmp_path, database):
    """45 Executes at once against --max-queued 30 while the only slot is busy: exactly 30 are
    queued, the other 15 get ServerBusy."""
    with WpsServer(tmp_path / "state", parallel=1, database=database, extra=["--max-queued", "30"]) as server:
        long_id, _, _ = execute(server, "train_model", {"samples": EUROSAT, "family": "cnn", "epochs": 500, "patience": 500})
        wait_for(lambda: (lambda j: j if j and j.pid else None)(db_job(server.state_dir, database, long_id)),
                 what="the training job's worker")
        answers = [None] * 45
        go = threading.Barrier(45)

        def submit(k):
            go.wait()
            answers[k] = execute(server, "validate_classification",
                                 {"classification": CHIAPAS_LABELS, "reference": CHIAPAS_LABELS},
                                 expect_ok=False)[2]

        threads = [threading.Thread(target=submit, args=(k,)) for k in range(45)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        accepted = [r for r in answers if r.status_code == 200 and b"ProcessAccepted" in r.content]
        busy = [r for r in answers if b"ServerBusy" in r.content]
        queued = requests.get(server.url + "/jobs", params={"status": "queued"}, timeout=30).json()["jobs"]
        assert (len(accepted), len(busy), len(queued)) == (30, 15, 30), [(r.status_code, r.text[:300])
                                                                         for r in answers if r not in accepted][:3]
        requests.post(f"{server.url}/jobs/{long_id}/cancel", timeout=60)


# -- item 10: strict literal inputs, clear reports --------------------------------------------------
BAD_LITERALS = [
    ("validate_classification", {"ignore_crs_name": "maybe"}, "ignore_crs_name"),
    ("validate_classification", {"ignore_crs_name": "x"}, "ignore_crs_name"),
    ("validate_classification", {"ignore_crs_name": "2"}, "ignore_crs_name"),
    ("validate_classification", {"reference_nodata": "nan"}, "reference_nodata"),
    ("validate_classification", {"reference_nodata": "1e400"}, "reference_nodata"),
    ("validate_classification", {"reference_nodata": "-inf"}, "reference_nodata"),
    ("validate_classification", {"reference_nodata": ["0", "1"]}, "reference_nodata"),
    ("validate_classification", {"reference": [CHIAPAS_LABELS, CHIAPAS_LABELS]}, "reference"),
    ("train_model", {"samples": EUROSAT, "epochs": "1.5"}, "epochs"),
    ("train_model", {"samples": EUROSAT, "epochs": "2", "augment": "yes please"}, "augment"),
    ("extract_samples", {"scene": ["data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif"] * 21,
                         "reference": CHIAPAS_LABELS}, "scene"),
]


@pytest.mark.parametrize("identifier,inputs,locator", BAD_LITERALS,
                         ids=[f"{i}-{loc}-{n}" for n, (i, _, loc) in enumerate(BAD_LITERALS)])
def test_literal_inputs_are_parsed_strictly(server, identifier, inputs, locator):
    if identifier == "validate_classification":
        inputs = dict({"classification": CHIAPAS_LABELS, "reference": CHIAPAS_LABELS}, **inputs)
    before = len(requests.get(server.url + "/jobs", timeout=30).json()["jobs"])
    _, _, r = execute(server, identifier, inputs, async_=True, expect_ok=False)
    assert r.status_code == 400, (r.status_code, r.text[:1000])
    code, loc, text = exception_of(r)
    assert (code, loc) == ("InvalidParameterValue", locator), text
    assert locator in text, text
    assert len(requests.get(server.url + "/jobs", timeout=30).json()["jobs"]) == before  # nothing was queued


def test_strict_literals_still_accept_good_values(server):
    _, _, r = execute(server, "validate_classification",
                      {"classification": CHIAPAS_LABELS, "reference": CHIAPAS_LABELS, "ignore_crs_name": "TRUE",
                       "reference_nodata": "0.0"}, async_=False)
    assert status_of(r.content)[0] == "ProcessSucceeded", r.text[:1000]


def test_malformed_requests_get_clear_reports(server):
    # a foreign XML root
    r = requests.post(server.wps_url, data=b"<foo xmlns='http://example.org/x'><bar/></foo>",
                      headers={"Content-Type": "text/xml"}, timeout=30)
    assert r.status_code == 400, (r.status_code, r.text[:1000])
    code, _, text = exception_of(r)
    assert "foo" in text and "Execute" in text, text
    # an empty DataInputs: the missing input is named
    r = requests.get(server.wps_url + "?service=WPS&request=Execute&version=1.0.0"
                     "&identifier=validate_classification&DataInputs=", timeout=30)
    assert r.status_code == 400, (r.status_code, r.text[:1000])
    code, loc, text = exception_of(r)
    assert (code, loc) == ("MissingParameterValue", "classification") and "classification" in text, text
    assert "unknown input" not in text


def test_raster_pycm_rejects_gets_a_clear_report(server):
    """A classification and reference with one class only: PyCM refuses the matrix; the client gets
    the reason, not an internal error."""
    write_raster(server.state_dir / "workspace" / "one_class.tif", np.ones((12, 12), np.uint8))
    name = "workspace/one_class.tif"
    _, _, r = execute(server, "validate_classification", {"classification": name, "reference": name},
                      async_=False, expect_ok=False)
    assert r.status_code < 500, (r.status_code, r.text[:1000])
    if ET.fromstring(r.content).tag.endswith("ExceptionReport"):
        text = exception_of(r)[2]
    else:
        name_, _, text = status_of(r.content)
        assert name_ == "ProcessFailed"
    assert "internal error" not in text and "class" in text and "2" in text, text


# -- item 11: a killed worker is retried once ---------------------------------------------------------
def test_killed_worker_is_retried_once_then_fails(tmp_path):
    state = tmp_path / "state"
    with WpsServer(state, parallel=1) as server:
        job_id, loc, _ = execute(server, "train_model", {"samples": EUROSAT, "family": "cnn", "epochs": 400, "patience": 400})
        first = wait_for(lambda: (lambda j: j if j and j.pid else None)(db_job(state, None, job_id)),
                         what="the worker")
        os.kill(first.pid, signal.SIGKILL)  # the OOM killer, say
        second = wait_for(lambda: (lambda j: j if j and j.pid and j.pid != first.pid else None)(
            db_job(state, None, job_id)), timeout=60, what="the retried worker")
        rec = job(server, job_id)
        assert rec["status"] == "running" and rec["attempts"] == 2, rec
        wait_for(lambda: alive(second.pid) and job(server, job_id)["percent"] > 0, timeout=120,
                 what="the second attempt's progress")
        os.kill(second.pid, signal.SIGKILL)
        final = wait_final(server, [job_id], timeout=60)[job_id]
        assert final["status"] == "failed" and final["attempts"] == 2, final
        assert "killed by SIGKILL" in final["message"] and "attempt 2 of 2" in final["message"], final
        name, _, text = status_of(requests.get(loc, timeout=30).content)
        assert name == "ProcessFailed" and "SIGKILL" in text and "attempt 2 of 2" in text, text
        assert "re-queued: the worker process was killed by SIGKILL; attempt 2 of 2" in server.log_text()
        assert not (state / "outputs" / job_id).exists()
