"""Fan-out of scene work over blocks of rows: the block plan, the block task and its runners.

A scene's classification (or its QC) is split into ``N`` row-blocks, each run on its own
(a worker process here, or a pod of a Kubernetes Job, :mod:`geoml_hub.wps.jobs.kubernetes`),
and the per-block results are put together again (:func:`geoml_hub.classification.assemble`,
:func:`geoml_hub.validation.fuse_counts`).

* :class:`BlockPlan` cuts the rows ``0..height`` into ``N`` contiguous blocks whose boundaries
  are multiples of ``align``: for a classification, ``align`` is the edge of its windows
  (a multiple of the stride), so a block is a run of whole rows of the same windows that the
  single-process run classifies, each window reading its patch/receptive-field margin from the
  scene itself (across the block boundary). A block's result is therefore the single-process
  result for its rows, pixel for pixel.
* A **block task** is a JSON file (``task.json`` in the block directory) naming the kind of
  work (``classify`` or ``qc``), the number of blocks and the arguments. Block ``i`` runs with
  :func:`run_block` (``python -m geoml_hub.blocks TASK_JSON [INDEX]``; without ``INDEX`` the
  index is ``$JOB_COMPLETION_INDEX``, as Kubernetes sets it in the pods of an Indexed Job).
* Each block writes ``block-NNNN.progress`` (fraction and message) while it runs, and
  ``block-NNNN.json`` (its result summary) last, atomically: a block is done when its JSON exists.
* :func:`run_local` runs the blocks over ``workers`` processes (``spawn`` start method,
  ``cores // workers`` PyTorch threads each) and reports the progress as the sum of the blocks'.
"""

from __future__ import annotations

import importlib
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import ParameterError
from .fileio import PathLike, write_json, write_text
from .progress import ProgressCallback, report

TASK_FILE = "task.json"
INDEX_ENV = "JOB_COMPLETION_INDEX"

#: Kind of block work -> "module:function" run for one block, ``f(args, plan, index, out_dir, progress)``.
KINDS = {"classify": "geoml_hub.classification:classify_block",
         "qc": "geoml_hub.validation:count_block"}


@dataclass(frozen=True)
class BlockPlan:
    """Row-blocks of a ``height`` × ``width`` grid.

    Attributes
    ----------
    height, width : int
        The grid, in pixels.
    align : int
        Block boundaries are multiples of it (pixels): the window edge of the classification.
    n : int
        Number of blocks (at most the number of ``align`` rows: a block is never empty).
    """

    height: int
    width: int
    align: int
    n: int

    @classmethod
    def split(cls, height: int, width: int, align: int, n: int) -> "BlockPlan":
        """Plan ``n`` blocks (fewer when the grid has fewer than ``n`` runs of ``align`` rows).

        Raises
        ------
        ParameterError
            If ``n`` or ``align`` is below 1, or the grid is empty.
        """
        if n < 1 or align < 1:
            raise ParameterError(f"blocks and their alignment must be at least 1 (got {n}, {align})")
        if height < 1 or width < 1:
            raise ParameterError(f"empty grid {height}x{width}")
        return cls(int(height), int(width), int(align), int(min(n, math.ceil(height / align))))

    @property
    def rows(self) -> List[Tuple[int, int]]:
        """``(start, stop)`` rows of each block (``stop`` exclusive), top to bottom."""
        units = math.ceil(self.height / self.align)
        cuts = [(i * units) // self.n * self.align for i in range(self.n)] + [self.height]
        return [(cuts[i], min(self.height, cuts[i + 1])) for i in range(self.n)]

    def block(self, index: int) -> Tuple[int, int]:
        """Rows ``(start, stop)`` of block ``index``.

        Raises
        ------
        ParameterError
            If ``index`` is not in ``0..n-1``.
        """
        if not 0 <= index < self.n:
            raise ParameterError(f"block index {index} outside 0..{self.n - 1}")
        return self.rows[index]

    def to_json(self) -> Dict[str, int]:
        return {"height": self.height, "width": self.width, "align": self.align, "n": self.n}


def block_name(index: int, suffix: str) -> str:
    """``block-NNNN<suffix>``: the files of block ``index``."""
    return f"block-{index:04d}{suffix}"


def write_task(out_dir: PathLike, kind: str, plan: BlockPlan, args: Dict[str, Any]) -> Path:
    """Write the block task ``out_dir/task.json`` (``args`` must be JSON: paths as strings).

    Raises
    ------
    ParameterError
        If ``kind`` is not one of :data:`KINDS`.
    """
    if kind not in KINDS:
        raise ParameterError(f"block kind must be one of {', '.join(KINDS)}, got {kind!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_json(out_dir / TASK_FILE, {"kind": kind, "plan": plan.to_json(), "args": args})


def read_task(path: PathLike) -> Tuple[str, BlockPlan, Dict[str, Any]]:
    """``(kind, plan, args)`` of a task file (see :func:`write_task`)."""
    data = json.loads(Path(path).read_text())
    return data["kind"], BlockPlan(**data["plan"]), data["args"]


def _progress_writer(out_dir: Path, index: int) -> ProgressCallback:
    path = out_dir / block_name(index, ".progress")
    last = [-1.0]

    def write(fraction: float, message: str) -> None:
        if fraction - last[0] >= 0.01 or fraction >= 1.0:  # at most ~100 small writes per block
            last[0] = fraction
            write_text(path, f"{fraction:.4f} {message}\n")
    return write


def run_block(task_path: PathLike, index: Optional[int] = None) -> Dict[str, Any]:
    """Run block ``index`` of a task; write its files into the task's directory.

    Parameters
    ----------
    task_path : path-like
        ``task.json`` (:func:`write_task`); the block files go next to it.
    index : int, optional
        Block index; default ``$JOB_COMPLETION_INDEX``.

    Returns
    -------
    dict
        The block's result summary (also written to ``block-NNNN.json``).

    Raises
    ------
    ParameterError
        If no index is given or set, or it is outside the plan.
    """
    task_path = Path(task_path)
    if index is None:
        raw = os.environ.get(INDEX_ENV)
        if raw is None or not raw.strip().isdigit():
            raise ParameterError(f"no block index: give one or set {INDEX_ENV} (got {raw!r})")
        index = int(raw)
    kind, plan, args = read_task(task_path)
    plan.block(index)  # validates the index
    module, func = KINDS[kind].split(":")
    # the kind's module is imported by name: geoml_hub.classification imports this module
    fn = getattr(importlib.import_module(module), func)
    out_dir = task_path.parent
    result = fn(args, plan, index, out_dir, _progress_writer(out_dir, index))
    write_json(out_dir / block_name(index, ".json"), result)
    return result


def block_progress(out_dir: PathLike, n: int) -> float:
    """Sum of the blocks' progress divided by ``n`` (0..1): a finished block counts 1."""
    out_dir = Path(out_dir)
    total = 0.0
    for i in range(n):
        if (out_dir / block_name(i, ".json")).exists():
            total += 1.0
            continue
        try:
            total += min(1.0, float((out_dir / block_name(i, ".progress")).read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return total / n


def block_results(out_dir: PathLike, n: int) -> List[Dict[str, Any]]:
    """The ``block-NNNN.json`` summaries of blocks ``0..n-1``.

    Raises
    ------
    ParameterError
        If a block has no result (it did not finish).
    """
    out_dir = Path(out_dir)
    missing = [i for i in range(n) if not (out_dir / block_name(i, ".json")).exists()]
    if missing:
        raise ParameterError(f"{out_dir}: blocks {missing} have no result")
    return [json.loads((out_dir / block_name(i, ".json")).read_text()) for i in range(n)]


def _init_worker(threads: int) -> None:
    """A worker process's thread budget: PyTorch reads ``OMP_NUM_THREADS`` when it is first imported
    (by a classification block; a QC block never imports it)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)


def run_local(task_path: PathLike, workers: int, progress: Optional[ProgressCallback] = None,
              poll: float = 0.5, message: str = "blocks") -> List[Dict[str, Any]]:
    """Run every block of a task over ``workers`` processes; return the block summaries.

    The processes are started with ``spawn`` (no forked PyTorch or GDAL state), each with
    ``max(1, cores // workers)`` PyTorch threads. Progress is the sum of the blocks' progress
    (read from their ``.progress`` files every ``poll`` seconds) over the number of blocks.

    Raises
    ------
    ParameterError
        If ``workers`` is below 1.
    Exception
        The first exception of a block (the other blocks are cancelled or left to finish).
    """
    if workers < 1:
        raise ParameterError(f"workers must be at least 1, got {workers}")
    task_path = Path(task_path)
    _, plan, _ = read_task(task_path)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=min(workers, plan.n), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(run_block, str(task_path), i) for i in range(plan.n)]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=poll, return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is not None:
                    for g in pending:
                        g.cancel()
                    raise f.exception()
            frac = block_progress(task_path.parent, plan.n)
            report(progress, frac, f"{message}: {sum(1 for f in futures if f.done())}/{plan.n} blocks done")
    return [f.result() for f in futures]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m geoml_hub.blocks TASK_JSON [INDEX]``: run one block (the pod of a fan-out Job).

    Exit status 0 when the block ran; 2 with a one-line error otherwise (the error is also
    written to ``/dev/termination-log`` when it exists, so Kubernetes shows it as the pod's
    termination message).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) not in (1, 2):
        print("usage: python -m geoml_hub.blocks TASK_JSON [INDEX]", file=sys.stderr)
        return 2
    try:
        run_block(argv[0], int(argv[1]) if len(argv) == 2 else None)
    except Exception as exc:  # every failure becomes a one-line reason for the job
        text = f"block {argv[1] if len(argv) == 2 else os.environ.get(INDEX_ENV)}: {type(exc).__name__}: {exc}"
        print(f"geoml-hub: error: {text}", file=sys.stderr)
        try:
            with open("/dev/termination-log", "w") as f:
                f.write(text[:4000])
        except OSError:
            pass
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
