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

from test_wps_server import NS, execute, status_of
from wps_server import DATA, WpsServer

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
