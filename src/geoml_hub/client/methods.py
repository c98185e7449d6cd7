"""Process methods: a Python function per WPS process, with a keyword-only signature and a
numpydoc docstring built from its DescribeProcess.

birdy's ``WPSClient`` builds such methods too (with boltons' ``FunctionBuilder``); this
client builds its own because it describes processes lazily (on first use of a method, not
in the constructor), checks each value's type before a request is sent, shows allowed ranges
and units, and returns :class:`~geoml_hub.client.Result` or :class:`~geoml_hub.client.Job`
objects; see the package's notes.
"""

from __future__ import annotations

import inspect
import os
import textwrap
from typing import Callable, List, Sequence, Union

from .converters import PY_TYPES, InputInfo
from .jobs import Job
from .outputs import Result

#: Keyword arguments of every process method that control the call, not the process.
CONTROL_OPTIONS = ("wait", "progress", "download_dir")


def build_method(call: Callable, identifier: str, name: str, process, infos: List[InputInfo],
                 url: str) -> Callable:
    """A process method.

    Parameters
    ----------
    call : callable
        ``call(identifier, {input: value}, **options)`` runs the process (the client's
        ``_call``); the method passes the call options (``wait``, ``progress``,
        ``download_dir``) as keywords unless an input has the same name.
    identifier : str
        The process identifier.
    name : str
        The method's Python name.
    process : owslib.wps.Process
        The process description.
    infos : list of InputInfo
        Its inputs.
    url : str
        The service (for the docstring).

    Returns
    -------
    callable
        A function of keyword-only arguments: the inputs (required ones first, then those with
        defaults), then the call options. Its ``__signature__`` and ``__doc__`` show them.
    """
    by_name = {i.name: i for i in infos}
    controls = [c for c in CONTROL_OPTIONS if c not in by_name]

    def method(**kwargs):
        options = {c: kwargs.pop(c) for c in controls if c in kwargs}
        return call(identifier, kwargs, **options)

    params = []
    for info in sorted(infos, key=lambda i: not i.required):
        default = inspect.Parameter.empty if info.required else info.default
        params.append(inspect.Parameter(info.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=info.py_type()))
    option_types = {"wait": (bool, True), "progress": (Union[bool, Callable, None], None),
                    "download_dir": (Union[str, os.PathLike, None], None)}
    for c in controls:
        t, d = option_types[c]
        params.append(inspect.Parameter(c, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=t))
    method.__signature__ = inspect.Signature(params, return_annotation=Union[Result, Job])
    method.__name__ = name
    method.__qualname__ = f"Client.{name}"
    method.__doc__ = process_docstring(url, process, infos, controls)
    return method


def process_docstring(url: str, process, infos: List[InputInfo], controls: Sequence[str]) -> str:
    """The numpydoc docstring of a process method.

    Parameters
    ----------
    url : str
        The service, as the text names it.
    process : owslib.wps.Process
        The process description (title, abstract, outputs).
    infos : list of InputInfo
        Its inputs (see :func:`~geoml_hub.client.converters.input_infos`).
    controls : sequence of str
        The call options the method takes (:data:`CONTROL_OPTIONS` not shadowed by an input).

    Returns
    -------
    str
    """

    def wrap(text, indent=""):
        return "\n".join(textwrap.wrap(text, 92, initial_indent=indent, subsequent_indent=indent))

    lines = [process.title or process.identifier, "", wrap(process.abstract or "").strip(), "",
             wrap(f"Runs the WPS process ``{process.identifier}`` of {url}. Inputs not given take the "
                  "process's defaults."), "", "Parameters", "----------"]
    lines += [i.doc() for i in sorted(infos, key=lambda i: not i.required)]
    docs = {"wait": "wait : bool, optional\n    Block until the job ends and return its Result (default), or "
                    "return a Job\n    at once.",
            "progress": "progress : bool or callable, optional\n    A tqdm progress bar (True), a callable "
                        "``progress(fraction, message)``,\n    or nothing (False). Default: the client's.",
            "download_dir": "download_dir : path, optional\n    Where this job's file outputs are "
                            "downloaded (default: the client's)."}
    lines += [docs[c] for c in controls]
    lines += ["", "Returns", "-------", "Result or Job",
              "    A Result (``wait=True``) with these outputs, or a Job (``wait=False``):"]
    for out in process.processOutputs:
        is_ref = out.dataType == "ComplexData"
        mimes = []
        if is_ref:
            for fmt in (getattr(out, "supportedValues", None) or []) + [getattr(out, "defaultValue", None)]:
                mt = getattr(fmt, "mimeType", None)
                if mt and mt not in mimes:
                    mimes.append(mt)
            kind = "dict (JSON)" if "application/json" in mimes else "pathlib.Path"
            kind += f" ({mimes[0]})" if mimes and "application/json" not in mimes else ""
        else:
            kind = PY_TYPES.get(out.dataType or "", str).__name__
        title = getattr(out, "title", "") or ""
        text = " ".join(x for x in (title.rstrip(".") + "." if title else "", (out.abstract or "").strip()) if x)
        lines.append(f"    {out.identifier} : {kind}")
        if text:
            lines.append(wrap(text, "        "))
    lines += ["", "Raises", "------",
              "TypeError", "    An unknown keyword, a missing required input, or a value of the wrong type.",
              "WPSJobError", "    The server refused the request (its ExceptionReport message, e.g. a value "
                             "out of range)\n    or the job failed or was dismissed.",
              "WPSError", "    The server could not be reached or read after the retries."]
    return "\n".join(lines)
