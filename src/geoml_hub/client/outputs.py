"""The outputs of a finished job (:class:`Result`): literals as Python values, JSON files as
dicts, other files downloaded, chaining by dataset name, PyCM's confusion matrix.

A result reaches the server through its client: ``client._local_url(url)`` (the server's
public URL mapped to the client's), ``client._download(url, path)`` and
``client._job_dir(job_id)``.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

from .converters import pyname, safe_name, typed


class Result(Mapping):
    """The outputs of a finished job, as Python objects, by attribute or by key.

    ``result.kappa`` and ``result["kappa"]`` are the same. Values are converted on first
    access:

    - literal outputs: ``int``, ``float``, ``bool`` or ``str`` (from the WPS data type);
    - JSON files (``application/json``): loaded, a ``dict`` or ``list``;
    - other files: downloaded into :attr:`download_dir` and returned as
      :class:`pathlib.Path`.

    Attributes
    ----------
    job_id : str
    process : str
        The process identifier.
    status_location : str or None
    message : str
        The final status message.
    download_dir : pathlib.Path
        Where files are downloaded (created on the first download).
    """

    def __init__(self, client, process: str, job_id: str, status_location: Optional[str], outputs,
                 message: str = "", download_dir: Optional[Path] = None):
        self._client = client
        self.process = process
        self.job_id = job_id
        self.status_location = status_location
        self.message = message or ""
        self._outputs = {o.identifier: o for o in outputs}
        self._values: Dict[str, Any] = {}
        self._paths: Dict[str, Path] = {}
        self._download_dir = download_dir

    # -- mapping ------------------------------------------------------------------------------------
    def __getitem__(self, key: str):
        if key not in self._outputs:
            raise KeyError(f"{self.process} has no output {key!r}; outputs: {', '.join(self._outputs)}")
        if key not in self._values:
            self._values[key] = self._convert(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        outputs = self.__dict__.get("_outputs", {})
        for ident in outputs:
            if ident == name or pyname(ident) == name:
                return self[ident]
        raise AttributeError(f"{type(self).__name__} of {self.__dict__.get('process')} has no output {name!r}; "
                             f"outputs: {', '.join(outputs)}")

    def __dir__(self):
        return sorted(set(super().__dir__()) | {pyname(k) for k in self._outputs})

    def __repr__(self) -> str:
        parts = []
        for ident, out in self._outputs.items():
            if out.reference:
                parts.append(f"{ident}=<{out.mimeType or 'file'}: {self._file_name(ident)}>")
            else:
                parts.append(f"{ident}={self[ident]!r}")
        return f"<Result {self.process} job {self.job_id}: " + ", ".join(parts) + ">"

    # -- what the outputs are ----------------------------------------------------------------------
    @property
    def download_dir(self) -> Path:
        if self._download_dir is None:
            self._download_dir = self._client._job_dir(self.job_id)
        return self._download_dir

    @property
    def urls(self) -> Dict[str, str]:
        """``{output: URL}`` of the outputs returned by reference (files)."""
        return {k: self._client._local_url(o.reference) for k, o in self._outputs.items() if o.reference}

    @property
    def literals(self) -> Dict[str, Any]:
        """``{output: value}`` of the literal outputs (no download)."""
        return {k: self[k] for k, o in self._outputs.items() if not o.reference}

    def url(self, name: str) -> str:
        """The URL of a file output.

        Raises
        ------
        KeyError
            No such output, or it is not a file reference.
        """
        urls = self.urls
        if name not in urls:
            raise KeyError(f"{self.process} output {name!r} is not a file reference; files: {', '.join(urls)}")
        return urls[name]

    def dataset(self, name: str) -> str:
        """The dataset name of a file output, for chaining: ``jobs/<job id>/<file>``.

        It is read from the output URL (``.../outputs/<job id>/<file>``); for a URL of
        another form the URL itself is returned (the server accepts URLs as dataset names
        too).

        A literal output that already is a dataset name (``jobs/<job id>/...``, e.g. the
        ``samples`` tree of extract_samples) is returned as it is.

        Raises
        ------
        KeyError
            No such output, or a literal output that is no dataset name.
        """
        out = self._outputs.get(name)
        if out is not None and not out.reference:
            value = self[name]
            if isinstance(value, str) and value.startswith("jobs/"):
                return value
        url = self.url(name)
        path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
        if "/outputs/" in path:
            rest = path.rsplit("/outputs/", 1)[1].strip("/")
            if "/" in rest and ".." not in rest.split("/"):
                return "jobs/" + rest
        return url

    def datasets(self) -> Dict[str, str]:
        """``{output: dataset name}`` of every file output and every literal dataset name."""
        names = {k: self.dataset(k) for k in self.urls}
        names.update({k: v for k, v in self.literals.items() if isinstance(v, str) and v.startswith("jobs/")})
        return names

    def path(self, name: str) -> Path:
        """Download a file output (once) and return its local path (JSON files too).

        Raises
        ------
        KeyError
            No such file output.
        WPSError
            The download failed after the retries.
        """
        url = self.url(name)
        if name not in self._paths:
            self._paths[name] = self._client._download(url, self.download_dir / self._file_name(name))
        return self._paths[name]

    def download(self, directory: Union[str, os.PathLike, None] = None) -> Dict[str, Path]:
        """Download every file output; returns ``{output: path}``.

        Parameters
        ----------
        directory : path, optional
            Where to put them (default :attr:`download_dir`).
        """
        if directory is not None:
            self._download_dir = Path(directory)
            self._paths.clear()
        return {k: self.path(k) for k in self.urls}

    def confusion_matrix(self, name: Optional[str] = None):
        """The PyCM confusion matrix of a QC job, loaded from its PyCM object file output.

        Parameters
        ----------
        name : str, optional
            The output (default: the one output named ``pycm_object``, or the only output
            whose name starts with it or whose file ends in ``.obj``).

        Returns
        -------
        pycm.ConfusionMatrix

        Raises
        ------
        KeyError
            The job has no (or several, and ``name`` was not given) PyCM object outputs.
        """
        if name is None:
            cands = [k for k in self.urls if k == "pycm_object"] or \
                    [k for k in self.urls if k.startswith("pycm_object") or self._file_name(k).endswith(".obj")]
            if len(cands) != 1:
                raise KeyError(f"{self.process} has {'no' if not cands else 'several'} PyCM object outputs"
                               + (f": {', '.join(cands)}; give one" if cands else ""))
            name = cands[0]
        import pycm  # here, not at the top: it imports numpy (0.1 s), which only QC results need

        with open(self.path(name), encoding="utf-8") as fh:
            return pycm.ConfusionMatrix(file=fh)

    @property
    def pycm(self):
        """The :class:`pycm.ConfusionMatrix` of a QC job, or ``None`` when the job has no PyCM
        object output (see :meth:`confusion_matrix`)."""
        try:
            return self.confusion_matrix()
        except KeyError:
            return None

    # -- conversion --------------------------------------------------------------------------------
    def _file_name(self, name: str) -> str:
        ref = self._outputs[name].reference or ""
        base = urllib.parse.unquote(urllib.parse.urlparse(ref).path.rsplit("/", 1)[-1])
        return safe_name(base, name)

    def _convert(self, name: str):
        out = self._outputs[name]
        mime = (out.mimeType or "").split(";")[0].strip().lower()
        if out.reference:
            if mime == "application/json" or (not mime and self._file_name(name).endswith(".json")):
                return json.loads(self.path(name).read_text(encoding="utf-8"))
            return self.path(name)
        data = list(out.data or [])
        if mime == "application/json" and data:
            return json.loads("".join(data))
        values = [typed(d, out.dataType) if out.dataType else d for d in data]
        if not values:
            return None
        return values[0] if len(values) == 1 else values
