"""Jobs: a submitted job's handle (:class:`Job`), one look at its status (:class:`JobStatus`),
and the server's JSON job API (``/jobs``: list, look up, cancel), which :class:`JobsAPI` adds
to the client.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from owslib.wps import WPSExecution

from .converters import FINAL, exception_message, exception_texts, safe_name, status_state
from .display import Reporter
from .errors import WPSError, WPSJobError, WPSTimeoutError
from .outputs import Result


@dataclass(frozen=True)
class JobStatus:
    """One look at a job's status document.

    Attributes
    ----------
    job_id : str
    state : str
        ``'accepted'`` (queued), ``'running'``, ``'paused'``, ``'succeeded'``, ``'failed'``
        or ``'dismissed'`` (cancelled; the status document says failed with a message that
        starts with ``dismissed``).
    percent : int
        0 to 100.
    message : str
        The status message (for a failed job: the error).
    """

    job_id: str
    state: str
    percent: int
    message: str

    @property
    def done(self) -> bool:
        """Whether the job has ended (succeeded, failed or dismissed)."""
        return self.state in FINAL

    @property
    def succeeded(self) -> bool:
        """Whether the job has succeeded."""
        return self.state == "succeeded"


class Job:
    """A submitted job: poll it, wait for its :class:`Result`, or cancel it.

    Attributes
    ----------
    job_id : str
        The job's id (the status document's base name, as in ``jobs/<job_id>/...``).
    process : str
        The process identifier.
    status_location : str
        URL of the WPS status document.
    """

    def __init__(self, client, process: str, status_location: str, execution=None,
                 download_dir: Optional[Path] = None, progress=None):
        self._client = client
        self.process = process
        self.status_location = status_location
        self.job_id = safe_name(urllib.parse.unquote(
            urllib.parse.urlparse(status_location).path.rsplit("/", 1)[-1]).removesuffix(".xml"), "job")
        self._execution = execution or WPSExecution(version="1.0.0", url=client.wps_url)
        self._download_dir = download_dir
        self._progress = progress
        self._last: Optional[JobStatus] = None
        self._result: Optional[Result] = None

    def __repr__(self) -> str:
        st = self._last
        what = f"{st.state} {st.percent}%" if st else "submitted"
        return f"<Job {self.process} {self.job_id} {what}>"

    def status(self) -> JobStatus:
        """Fetch the status document once (retrying empty or broken documents and transient
        HTTP errors) and return the job's :class:`JobStatus`.

        Raises
        ------
        WPSError
            The status document could not be read after the retries.
        """
        ex = self._execution
        root = self._client._get_xml(self.status_location, what=f"status document of job {self.job_id}",
                                     expect="ExecuteResponse", retry_404=True)
        ex.errors = []
        ex.statusLocation = self.status_location
        ex.parseResponse(root)
        if self.process == "unknown" and getattr(ex.process, "identifier", None):
            self.process = ex.process.identifier
        state = status_state(root)
        if state == "unknown":
            raise WPSError(f"status document of job {self.job_id} has no wps:Status ({self.status_location})")
        message = (ex.statusMessage or "").strip()
        if state == "failed":
            message = exception_message(root)[0] if exception_texts(root) else (message or "job failed")
            message = re.sub(r"^Process error:\s*", "", message)  # PyWPS's prefix
            if message.lower().startswith("dismissed"):
                state = "dismissed"
        percent = 100 if state == "succeeded" else int(ex.percentCompleted or 0)
        self._last = JobStatus(self.job_id, state, max(0, min(100, percent)), message)
        return self._last

    @property
    def done(self) -> bool:
        """Whether the job has ended (fetches the status document unless it already ended)."""
        if self._last is not None and self._last.done:
            return True
        return self.status().done

    def info(self) -> Dict[str, Any]:
        """The job's record from the server's job API (``GET /jobs/<id>``): status, percent,
        message, owner, times.

        Raises
        ------
        WPSError
            The server has no job API or does not know the job.
        """
        return self._client._job_record(self.job_id)

    def cancel(self) -> bool:
        """Cancel (dismiss) the job on the server (``POST /jobs/<id>/cancel``).

        Returns
        -------
        bool
            ``True`` if it was cancelled, ``False`` if it had already ended.

        Raises
        ------
        WPSError
            The server has no job API, does not know the job, or refused.
        """
        ok = self._client.cancel(self.job_id)
        if ok:
            self._last = None
        return ok

    def wait(self, progress: Union[bool, Callable[[float, str], None], None] = None,
             timeout: Optional[float] = None) -> Result:
        """Block until the job ends and return its :class:`Result`.

        Parameters
        ----------
        progress : bool or callable, optional
            ``True``: a tqdm progress bar (``tqdm.auto``, so a widget in notebooks) with the
            status message as postfix; a callable: called as ``progress(fraction, message)``
            (fraction 0 to 1, the convention of :mod:`geoml_hub.progress`) whenever the
            status changes; ``False``: silent. Default: the client's ``progress``.
        timeout : float, optional
            Seconds to wait at most (default: no limit).

        Returns
        -------
        Result

        Raises
        ------
        WPSJobError
            The job failed or was dismissed (the server's message).
        WPSTimeoutError
            ``timeout`` passed; the job still runs.
        WPSError
            The status document could not be read after the retries.
        """
        if self._result is not None:
            return self._result
        if progress is None:
            progress = self._progress if self._progress is not None else self._client.progress
        reporter = Reporter(progress, self.process, self.job_id)
        client = self._client
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = client._first_poll  # grows to client.poll_interval
        try:
            while True:
                st = self.status()
                reporter.update(st)
                if st.done:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise WPSTimeoutError(f"{self.process} job {self.job_id}: still {st.state} at {st.percent}% "
                                          f"after {timeout:g} s; it keeps running (Client.job({self.job_id!r}))")
                sleep = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
                time.sleep(sleep)
                interval = min(client.poll_interval, interval * 1.5)
        except KeyboardInterrupt as exc:
            if hasattr(exc, "add_note"):  # Python 3.11+
                exc.add_note(f"geoml-hub: {self.process} job {self.job_id} keeps running on the server; "
                             f"Client.cancel({self.job_id!r}) stops it")
            raise
        finally:
            reporter.close()
        if st.state != "succeeded":
            raise WPSJobError(st.message or f"job {st.state}", job_id=self.job_id, process=self.process,
                              state=st.state)
        self._result = Result(client, self.process, self.job_id, self.status_location,
                              self._execution.processOutputs, st.message, self._download_dir)
        return self._result

    result = wait


class JobsAPI:
    """The server's JSON job API (``GET /jobs``, ``GET /jobs/<id>``, ``POST /jobs/<id>/cancel``),
    a part of :class:`~geoml_hub.client.Client`.

    It uses the client's ``_resolve()``, ``_base`` (the service base URL), ``_request()``,
    ``_error_text()``, ``_local_url()`` and ``download_dir``.
    """

    def _jobs_url(self) -> str:
        self._resolve()
        if not self._base:
            raise WPSError(f"{self.url} has no geoml-hub job API (give the service base URL)")
        return self._base + "/jobs"

    def _json(self, method: str, url: str, what: str, ok=(200,)):
        r = self._request(method, url, what=what)
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code not in ok or not isinstance(body, dict):
            msg = body.get("error") if isinstance(body, dict) and body.get("error") else self._error_text(r)
            raise WPSError(f"{what}: HTTP {r.status_code} {msg}".strip())
        return r.status_code, body

    def jobs(self, status: Union[str, Sequence[str], None] = None, limit: Optional[int] = None) -> List[Dict]:
        """Your jobs on the server (``GET /jobs``), newest first.

        Parameters
        ----------
        status : str or list of str, optional
            Only jobs in these states (``queued``, ``running``, ``succeeded``, ``failed``,
            ``dismissed``).
        limit : int, optional
            At most this many.

        Returns
        -------
        list of dict
            Job records: ``job_id``, ``process``, ``status``, ``percent``, ``message``,
            ``created``, ``started``, ``finished``, ``status_location``, ...

        Raises
        ------
        WPSError
            The server has no job API or refused (e.g. HTTP 401 without a valid token).
        """
        params = {}
        if status:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if limit:
            params["limit"] = str(int(limit))
        url = self._jobs_url() + ("?" + urllib.parse.urlencode(params) if params else "")
        _, body = self._json("GET", url, "job list")
        jobs = body.get("jobs", [])
        for j in jobs:
            if j.get("status_location"):
                j["status_location"] = self._local_url(j["status_location"])
        return jobs

    def _job_record(self, job_id: str) -> Dict:
        _, body = self._json("GET", f"{self._jobs_url()}/{urllib.parse.quote(job_id)}", f"job {job_id}")
        if body.get("status_location"):
            body["status_location"] = self._local_url(body["status_location"])
        return body

    def job(self, job_id: str) -> Job:
        """A :class:`Job` handle for an existing job: by id (looked up with ``GET /jobs/<id>``)
        or by the URL of its status document (works with any WPS server).

        Raises
        ------
        WPSError
            No such job, a synchronous job (no status document), or no job API.
        """
        if re.match(r"^https?://", job_id):
            job = Job(self, "unknown", self._local_url(job_id))
            if self.download_dir is not None:
                job._download_dir = self.download_dir / job.job_id
            return job
        return self._job_from_record(self._job_record(job_id))

    def _job_from_record(self, record: Dict, location: Optional[str] = None) -> Job:
        location = location or record.get("status_location")
        if not location:
            raise WPSError(f"job {record.get('job_id')} ran synchronously and has no status document")
        job = Job(self, record.get("process") or "unknown", location)
        if self.download_dir is not None:
            job._download_dir = self.download_dir / job.job_id
        return job

    def cancel(self, job_id: Union[str, Job]) -> bool:
        """Cancel (dismiss) a queued or running job (``POST /jobs/<id>/cancel``).

        Returns
        -------
        bool
            ``True`` if it was cancelled, ``False`` if it had already ended.

        Raises
        ------
        WPSError
            No such job, not yours, no job API, or another refusal.
        """
        if isinstance(job_id, Job):
            job_id = job_id.job_id
        url = f"{self._jobs_url()}/{urllib.parse.quote(job_id)}/cancel"
        code, body = self._json("POST", url, f"cancel job {job_id}", ok=(200, 409))
        if code == 409:
            if body.get("status") in FINAL or str(body.get("error", "")).startswith("job already"):
                return False
            raise WPSError(f"cancel job {job_id}: {body.get('error') or 'refused'}")
        return True
