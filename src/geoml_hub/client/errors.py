"""The client's exceptions (all are :class:`geoml_hub.errors.GeomlError`)."""

from __future__ import annotations

from typing import Optional

from ..errors import GeomlError


class WPSError(GeomlError):
    """The WPS service could not be reached or answered something unexpected (no URL
    configured, HTTP errors after the retries, a document that is not WPS)."""


class WPSJobError(WPSError):
    """A job was refused (an ExceptionReport on submit) or failed, or was dismissed.

    Attributes
    ----------
    message : str
        The server's message (for a refused request: the ExceptionText).
    job_id : str or None
        The job, when one was created.
    process : str or None
        The process identifier.
    code, locator : str or None
        The OWS exception code and locator (e.g. ``InvalidParameterValue`` and the input).
    state : str or None
        ``'failed'`` or ``'dismissed'`` for a job that ran; ``None`` for a refused request.
    """

    def __init__(self, message: str, job_id: Optional[str] = None, process: Optional[str] = None,
                 code: Optional[str] = None, locator: Optional[str] = None, state: Optional[str] = None):
        self.message = message
        self.job_id = job_id
        self.process = process
        self.code = code
        self.locator = locator
        self.state = state
        where = process or "WPS"
        if job_id:
            where += f" job {job_id}"
        super().__init__(f"{where}: {message}")


class WPSTimeoutError(WPSError, TimeoutError):
    """:meth:`Job.wait` gave up after its ``timeout``; the job itself still runs."""
