"""Limits of the real ``geoml-hub wps serve`` against hostile inputs (issue 12): URL inputs fetched
only from public addresses (a blind SSRF otherwise), output and storage quotas, a pixel-count
limit on input rasters. Real servers: the WPS on loopback, and plain ``http.server`` threads on
127.0.0.1 as the hosts URL inputs name.
"""

from __future__ import annotations

import http.server
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests

from wps_server import DATA, NS, WpsServer, execute, status_of

pytestmark = pytest.mark.slow

LABELS = "data/landsat7_chiapas/training_data.gtif"


class FileHost:
    """An HTTP server on 127.0.0.1 serving ``files`` (name -> path); ``/to/<url>`` redirects to the
    URL (quoted); it records the paths asked for."""

    def __init__(self, files, address="127.0.0.1"):
        self.asked = []
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host.asked.append(self.path)
                if self.path.startswith("/to/"):
                    self.send_response(302)
                    self.send_header("Location", urllib.parse.unquote(self.path[len("/to/"):]))
                    self.end_headers()
                    return
                path = files.get(self.path.lstrip("/"))
                if path is None:
                    self.send_error(404)
                    return
                data = Path(path).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.url = f"http://{address}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def config(tmp_path, name, **geoml) -> str:
    path = tmp_path / f"{name}.ini"
    path.write_text("[geoml]\n" + "".join(f"{k} = {v}\n" for k, v in geoml.items()))
    return str(path)


def sync_failure(server, identifier, inputs):
    """The failure message of a synchronous Execute (ProcessFailed or an ExceptionReport), or None
    when it succeeded."""
    _, _, r = execute(server, identifier, inputs, async_=False, expect_ok=False)
    root = ET.fromstring(r.content)
    if root.tag.endswith("ExceptionReport"):
        return root.find(".//ows:ExceptionText", NS).text
    name, _, text = status_of(r.content)
    return None if name == "ProcessSucceeded" else text


@pytest.fixture(scope="module")
def file_host():
    host = FileHost({"labels.tif": DATA / "landsat7_chiapas" / "training_data.gtif"})
    yield host
    host.close()


def test_url_inputs_from_internal_addresses_are_refused(tmp_path, file_host):
    url = f"{file_host.url}/labels.tif"
    with WpsServer(tmp_path / "default", parallel=1) as server:
        message = sync_failure(server, "validate_classification", {"classification": url, "reference": LABELS})
        assert message and "input classification" in message and "127.0.0.1 is a loopback address" in message, message
        assert "url_allow" in message
        assert "/labels.tif" not in file_host.asked, "the loopback URL was fetched"


def test_url_allow_admits_a_host_but_not_its_redirects_elsewhere(tmp_path, file_host):
    url = f"{file_host.url}/labels.tif"
    ini = config(tmp_path, "allow", url_allow="127.0.0.1, data.example.org")
    with WpsServer(tmp_path / "allowed", parallel=1, extra=["--config", ini]) as server:
        assert sync_failure(server, "validate_classification", {"classification": url, "reference": LABELS}) is None
        assert "/labels.tif" in file_host.asked
        # the allowed host redirects to another loopback address (127.0.0.2, not listed): refused
        inner = FileHost({"labels.tif": DATA / "landsat7_chiapas" / "training_data.gtif"}, address="127.0.0.2")
        try:
            hop = urllib.parse.quote(f"{inner.url}/labels.tif", safe="")
            message = sync_failure(server, "validate_classification",
                                   {"classification": f"{file_host.url}/to/{hop}", "reference": LABELS})
        finally:
            inner.close()
        assert any(p.startswith("/to/") for p in file_host.asked)
        assert message and "input classification" in message and "127.0.0.2 is a loopback address" in message, \
            message
        assert inner.asked == [], "the redirect to an internal address was followed"


# -- output quota, storage quota, pixel limit ------------------------------------------------------------------
def sparse_tiff(path: Path, width: int, height: int, value=None, dtype="uint8", block=512):
    """A GeoTIFF of ``width`` x ``height`` pixels that takes a few kilobytes on disk: tiled and
    compressed, with no tile written (GDAL's SPARSE_OK: every pixel reads as 0) or, with ``value``,
    every tile holding that constant."""
    import numpy as np
    import rasterio
    from affine import Affine

    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype=dtype, crs="EPSG:32615",
                   transform=Affine(30, 0, 500000, 0, -30, 2000000), tiled=True, blockxsize=block, blockysize=block,
                   compress="deflate", sparse_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        if value is not None:
            dst.write(np.full((1, height, width), value, dtype=dtype))
    return path


def wait_job(server, job_id, timeout=180.0):
    deadline = time.monotonic() + timeout
    while True:
        job = requests.get(f"{server.url}/jobs/{job_id}", timeout=30).json()
        if job["status"] in ("succeeded", "failed", "dismissed"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} not finished: {job}\n{server.log_text()[-3000:]}"
        time.sleep(0.3)


def test_huge_sparse_raster_is_refused_before_it_is_read(tmp_path):
    with WpsServer(tmp_path / "pixels", parallel=1) as server:
        big = sparse_tiff(server.state_dir / "workspace" / "big.tif", 100_000, 100_000, block=4096)
        assert big.stat().st_size < 30_000  # 10 gigapixels in a few kilobytes
        _, _, r = execute(server, "extract_samples", {"scene": "workspace/big.tif", "reference": "workspace/big.tif"},
                          expect_ok=False)
        root = ET.fromstring(r.content)
        assert root.tag.endswith("ExceptionReport"), r.text[:1000]
        text = root.find(".//ows:ExceptionText", NS).text
        assert "input scene" in text and "10000000000 pixels" in text and "max_input_pixels" in text, text
        assert requests.get(f"{server.url}/jobs", timeout=30).json()["jobs"] == []  # nothing was queued


def test_job_over_its_output_limit_fails_and_its_outputs_are_removed(tmp_path):
    ini = config(tmp_path, "limit", max_job_output_mb=1)
    with WpsServer(tmp_path / "limit", parallel=1, extra=["--config", ini]) as server:
        # 4 million labelled pixels in two files of a few kilobytes: the samples take ~16 MB
        ws = server.state_dir / "workspace"
        sparse_tiff(ws / "scene.tif", 2000, 2000, value=7)
        sparse_tiff(ws / "labels.tif", 2000, 2000, value=1)
        assert (ws / "scene.tif").stat().st_size + (ws / "labels.tif").stat().st_size < 100_000
        job_id, _, _ = execute(server, "extract_samples", {"scene": "workspace/scene.tif",
                                                           "reference": "workspace/labels.tif"})
        job = wait_job(server, job_id)
        assert job["status"] == "failed", job
        assert "more than the output limit of a job, 1 MB, max_job_output_mb" in job["message"], job["message"]
        assert "partial outputs were removed" in job["message"]
        assert not (server.state_dir / "outputs" / job_id).exists()
        assert not any((server.state_dir / "work" / job_id).glob("*"))
        status = requests.get(f"{server.url}/outputs/{job_id}.xml", timeout=30)
        assert status_of(status.content)[0] == "ProcessFailed"


def test_user_over_the_storage_quota_is_refused_up_front(tmp_path):
    ini = config(tmp_path, "quota", user_quota_mb=3, max_job_output_mb=0)
    with WpsServer(tmp_path / "quota", parallel=1, extra=["--config", ini]) as server:
        ws = server.state_dir / "workspace"
        sparse_tiff(ws / "scene.tif", 2000, 2000, value=7)
        sparse_tiff(ws / "labels.tif", 2000, 2000, value=1)
        mine = ws / "local"  # the standalone user's workspace folder counts against the quota
        mine.mkdir(parents=True)
        (mine / "old.geojson").write_bytes(b" " * (2 * 2**20))
        # 2 MB used of 3: the job may start, but its ~16 MB of samples go over what is left
        job_id, _, _ = execute(server, "extract_samples", {"scene": "workspace/scene.tif",
                                                           "reference": "workspace/labels.tif"})
        job = wait_job(server, job_id)
        assert job["status"] == "failed", job
        assert "storage quota of local" in job["message"] and "user_quota_mb" in job["message"], job["message"]
        assert not (server.state_dir / "outputs" / job_id).exists()
        # 4 MB used of 3: the next Execute is refused before anything is queued
        (mine / "older.geojson").write_bytes(b" " * (2 * 2**20))
        _, _, r = execute(server, "validate_classification", {"classification": LABELS, "reference": LABELS},
                          expect_ok=False)
        assert r.status_code == 403, r.text[:1000]
        text = ET.fromstring(r.content).find(".//ows:ExceptionText", NS).text
        assert "local uses 4.0 MB of the storage quota of 3 MB" in text and "user_quota_mb" in text, text
        assert [j["job_id"] for j in requests.get(f"{server.url}/jobs", timeout=30).json()["jobs"]] == [job_id]
