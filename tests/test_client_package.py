"""The shape of the geoml_hub.client package, without a server: its public names, its import
graph, and the retry policy on its HTTP session (the client's behaviour against a real
server is tests/test_wps_client.py)."""

from __future__ import annotations

import ast
import importlib
import inspect
import socket
import time
from pathlib import Path

import pytest
import requests
from urllib3.util import Retry

import geoml_hub.client as client_pkg
from geoml_hub.client import Client, WPSError
from geoml_hub.client.session import TRANSIENT_HTTP

PACKAGE = Path(client_pkg.__file__).resolve().parent

# every public name of the single-module geoml_hub.client this package replaced
OLD_PUBLIC = ("Client", "Job", "JobStatus", "Result", "WPSError", "WPSJobError", "WPSTimeoutError", "ENV_URL",
              "ENV_TOKEN", "CONTROL_OPTIONS", "LOGGER")


def test_public_names_of_the_old_module():
    for name in OLD_PUBLIC:
        assert hasattr(client_pkg, name), name
    assert set(client_pkg.__all__) <= set(OLD_PUBLIC)
    assert client_pkg.ENV_URL == "GEOML_WPS_URL" and client_pkg.ENV_TOKEN == "JUPYTERHUB_API_TOKEN"
    assert client_pkg.CONTROL_OPTIONS == ("wait", "progress", "download_dir")
    assert issubclass(client_pkg.WPSTimeoutError, TimeoutError)
    assert set(inspect.signature(Client).parameters) == {"url", "token", "progress", "download_dir", "timeout",
                                                         "retries", "poll_interval", "verify"}


def _imports(path: Path):
    """(module-level sibling imports, function-level imports) of a module of the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top, nested = set(), []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            top |= {node.module} if node.module else {a.name for a in node.names}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nested += [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return top, nested


def test_no_import_cycles_and_imports_at_module_level():
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name, path in modules.items():
        top, nested = _imports(path)
        graph[name] = top & set(modules)
        # one commented exception: pycm (it imports numpy), only for QC results
        assert all(getattr(n, "names", [None])[0].name == "pycm" for n in nested), (name, nested)

    def visit(name, stack):
        assert name not in stack, f"import cycle: {' -> '.join(stack + [name])}"
        for dep in graph[name]:
            visit(dep, stack + [name])

    for name in graph:
        visit(name, [])
    for name in modules:  # each module imports on its own
        importlib.import_module(f"geoml_hub.client.{name}")


def test_session_retries_come_from_urllib3():
    c = Client("http://127.0.0.1:9", retries=3, progress=False)
    for prefix in ("http://", "https://"):
        retry = c.session.get_adapter(prefix + "example.org").max_retries
        assert isinstance(retry, Retry) and retry.total == 3
        assert set(retry.status_forcelist) == set(TRANSIENT_HTTP) and 404 not in retry.status_forcelist
        assert "GET" in retry.allowed_methods and "POST" not in retry.allowed_methods
        assert retry.raise_on_status is False
    assert c.session.headers["User-Agent"].startswith("geoml-hub-client/")


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = Client(f"http://127.0.0.1:{port}", retries=2, progress=False)
    t0 = time.monotonic()
    with pytest.raises(WPSError, match=r"ConnectionError: .* \(after 3 attempts\)") as err:
        c.processes  # noqa: B018
    assert time.monotonic() - t0 < 5
    assert isinstance(err.value.__cause__, requests.ConnectionError)
