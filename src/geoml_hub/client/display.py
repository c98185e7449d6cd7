"""Showing a job in a notebook or a terminal: the progress of :meth:`Job.wait`."""

from __future__ import annotations

from tqdm.auto import tqdm


class Reporter:
    """Shows a job's progress: a tqdm bar, a callback, or nothing.

    Parameters
    ----------
    progress : bool or callable
        ``True``: a ``tqdm.auto`` bar (a widget in JupyterLab) with the status message as
        postfix; a callable: ``progress(fraction, message)`` whenever the status changes;
        ``False`` or ``None``: nothing.
    process, job_id : str
        The bar's label.
    """

    def __init__(self, progress, process: str, job_id: str):
        self.progress = progress
        self.process = process
        self.job_id = job_id
        self.bar = None
        self.last = None

    def update(self, st) -> None:
        """Show a :class:`~geoml_hub.client.JobStatus` (once per state, percent and message)."""
        key = (st.state, st.percent, st.message)
        if key == self.last or not self.progress:
            return
        self.last = key
        message = st.message or st.state
        if callable(self.progress):
            self.progress(st.percent / 100.0, message)
            return
        if self.bar is None:
            self.bar = tqdm(total=100, desc=self.process, unit="%",
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]")
        short = message if len(message) <= 70 else message[:67] + "..."
        self.bar.set_postfix_str(short, refresh=False)
        if st.percent > self.bar.n:
            self.bar.update(st.percent - self.bar.n)
        self.bar.refresh()

    def close(self) -> None:
        """Close the bar (if one was shown)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
