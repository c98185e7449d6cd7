"""HTTP for the client: one :class:`requests.Session` whose adapter retries, XML documents
and downloads.

Retries come from urllib3's :class:`~urllib3.util.Retry` mounted on the session's
:class:`~requests.adapters.HTTPAdapter`: connection errors, read timeouts and HTTP
408/425/429/500/502/503/504 answers are retried there, with exponential backoff (the first
retry at once, then 0.5 s doubling, at most 8 s; a ``Retry-After`` header is honoured).
GET requests are retried; a POST (an Execute, a cancel) is re-sent only when its connection
could not be opened, i.e. when nothing reached the server.

Some faults an HTTP adapter cannot see: a status document answered with 200 but empty or
half written (PyWPS rewrites it in place), a status document not written yet (HTTP 404 just
after the Execute), a download shorter than its ``Content-Length``. :func:`get_xml` and
:func:`download` retry these with the same :class:`~urllib3.util.Retry` policy, whose
``increment`` counts the attempts and whose ``sleep`` waits the backoff.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Union

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util import Retry

from .converters import exception_message, local, parse_xml
from .errors import WPSError

LOGGER = logging.getLogger("geoml_hub.client")

#: HTTP answers worth a retry (the adapter's ``status_forcelist``).
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Backoff of the retries: ``BACKOFF_FACTOR * 2 ** (n - 1)`` seconds before retry n > 1, at most
#: ``BACKOFF_MAX``.
BACKOFF_FACTOR = 0.25
BACKOFF_MAX = 8.0


def retry_policy(retries: int) -> Retry:
    """The client's retry policy.

    Parameters
    ----------
    retries : int
        How often a request is retried at most (0: never).

    Returns
    -------
    urllib3.util.Retry
        Connection errors, read errors and :data:`TRANSIENT_HTTP` answers of idempotent
        requests, exponential backoff; after the last retry the last answer is returned
        (``raise_on_status=False``) for the caller to report.
    """
    return Retry(total=max(0, int(retries)), status_forcelist=TRANSIENT_HTTP,
                 allowed_methods=Retry.DEFAULT_ALLOWED_METHODS, backoff_factor=BACKOFF_FACTOR,
                 backoff_max=BACKOFF_MAX, raise_on_status=False, respect_retry_after_header=True)


def make_session(headers: Mapping[str, str], verify: Union[bool, str], retry: Retry) -> requests.Session:
    """A :class:`requests.Session` with ``headers`` on every request and ``retry`` mounted on
    its HTTP and HTTPS adapters.

    Parameters
    ----------
    headers : mapping
        Headers of every request (``User-Agent``, ``Authorization``).
    verify : bool or str
        TLS certificate verification (``requests``' ``verify``).
    retry : urllib3.util.Retry
        See :func:`retry_policy`.

    Returns
    -------
    requests.Session
    """
    session = requests.Session()
    session.headers.update(headers)
    session.verify = verify
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def attempts(retry: Retry) -> int:
    """How many times a request is sent at most under ``retry``."""
    return (retry.total or 0) + 1


def request(session: requests.Session, method: str, url: str, timeout: float, what: Optional[str] = None,
            **kwargs) -> requests.Response:
    """One request through ``session`` (its adapter retries); the answer whatever its status.

    Raises
    ------
    WPSError
        The connection failed or timed out on every attempt.
    """
    kwargs.setdefault("timeout", timeout)
    try:
        return session.request(method, url, **kwargs)
    except (requests.ConnectionError, requests.Timeout) as exc:
        retry = session.get_adapter(url).max_retries
        retried = method.upper() in (retry.allowed_methods or ()) or isinstance(exc, requests.ConnectionError)
        n = attempts(retry) if retried else 1
        raise WPSError(f"{what or url}: {type(exc).__name__}: {exc}"
                       + (f" (after {n} attempts)" if n > 1 else "")) from exc


def error_text(r: requests.Response) -> str:
    """The ``error`` of a JSON answer, or the first 200 characters of its text."""
    try:
        body = r.json()
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])
    except ValueError:
        pass
    text = re.sub(r"\s+", " ", r.text or "").strip()
    return text[:200]


def _again(retry: Retry, url: str, what: str, problem: str) -> Retry:
    """Count one more attempt against ``retry`` and wait its backoff; the next state.

    Raises
    ------
    WPSError
        No attempt left.
    """
    try:
        retry = retry.increment(method="GET", url=url)
    except MaxRetryError:
        raise WPSError(f"{what}: {problem} (after {len(retry.history) + 1} attempts)") from None
    LOGGER.info("%s: %s; retrying", what, problem)
    retry.sleep()
    return retry


def get_xml(session: requests.Session, url: str, what: str, expect: str, timeout: float, params=None,
            retry_404: bool = False):
    """GET an XML document whose root element is ``expect``.

    HTTP faults are the adapter's (:func:`retry_policy`). An empty or malformed document
    (a status document caught mid-write), a foreign one (a proxy's page) and, with
    ``retry_404``, HTTP 404 (a status document the server writes after answering the Execute)
    are fetched again under the same policy. An ExceptionReport or another HTTP error is not.

    Returns
    -------
    element
        The document's root element.

    Raises
    ------
    WPSError
    """
    retry = session.get_adapter(url).max_retries
    while True:
        r = request(session, "GET", url, timeout, what=what, params=params)
        root = parse_xml(r.content)
        tag = local(root.tag) if root is not None else None
        if tag == expect and r.status_code < 400:
            return root
        if tag == "ExceptionReport":
            msg, _, _ = exception_message(root)
            raise WPSError(f"{what}: {msg} (HTTP {r.status_code})")
        if r.status_code >= 400 and not (retry_404 and r.status_code == 404):
            after = f" (after {attempts(retry)} attempts)" if r.status_code in TRANSIENT_HTTP and attempts(retry) > 1 \
                else ""
            raise WPSError(f"{what}: HTTP {r.status_code} {error_text(r)}".strip() + after)
        if r.status_code >= 400:
            problem = f"HTTP {r.status_code}"
        elif root is None:
            problem = "an empty document" if not r.content.strip() else "a document that is not valid XML"
        else:
            problem = f"a {tag} document instead of {expect}"
        retry = _again(retry, url, what, problem)


def download(session: requests.Session, url: str, dest: Path, timeout: float) -> Path:
    """Download ``url`` to ``dest`` (kept if it is already there: job outputs never change).

    The file is written under a temporary name and renamed when complete. HTTP faults are the
    adapter's; a body shorter than its ``Content-Length`` or broken off is fetched again under
    the same policy.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    WPSError
    """
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    what = f"download {url}"
    retry = session.get_adapter(url).max_retries
    while True:
        problem = _download_once(session, url, dest, timeout, what, attempts(retry))
        if problem is None:
            return dest
        retry = _again(retry, url, what, problem)


def _download_once(session: requests.Session, url: str, dest: Path, timeout: float, what: str,
                   n: int) -> Optional[str]:
    """One download; ``None`` on success, else what went wrong (worth another attempt)."""
    r = request(session, "GET", url, timeout, what=what, stream=True)
    with r:
        if r.status_code != 200:
            after = f" (after {n} attempts)" if r.status_code in TRANSIENT_HTTP and n > 1 else ""
            raise WPSError(f"{what}: HTTP {r.status_code} {error_text(r)}".strip() + after)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in r.iter_content(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
            expected = r.headers.get("Content-Length", "")
            if expected.isdigit() and int(expected) != size:
                return f"incomplete, {size} of {expected} bytes"
            os.replace(tmp, dest)
            return None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
