"""Progress reporting shared by the command line (tqdm bars) and the WPS status.

Long operations accept ``progress``: a callable ``progress(fraction, message)`` where
``fraction`` is in ``[0, 1]`` and ``message`` a short human-readable string. ``None``
means no reporting.
"""

from __future__ import annotations

from typing import Callable, Optional

ProgressCallback = Callable[[float, str], None]


def report(progress: Optional[ProgressCallback], fraction: float, message: str) -> None:
    """Call ``progress`` if it is set, clamping ``fraction`` to ``[0, 1]``."""
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))), message)


def scaled(progress: Optional[ProgressCallback], start: float, stop: float) -> Optional[ProgressCallback]:
    """Map a sub-task's ``[0, 1]`` progress onto ``[start, stop]`` of the parent's.

    Used by pipelines so that each step moves its part of one overall bar.
    """
    if progress is None:
        return None

    def _sub(fraction: float, message: str) -> None:
        report(progress, start + (stop - start) * fraction, message)

    return _sub
