"""WPS documents and values: XML helpers, Python values to and from WPS literals, and the
inputs of a DescribeProcess as :class:`InputInfo` records.

OWSLib parses the documents into its objects; what it leaves out (an input's allowed
ranges and unit of measure, the state of a ProcessFailed document that carries an
ExceptionReport, the ExceptionReport's code and locator) is read here from the XML.
"""

from __future__ import annotations

import keyword
import numbers
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

from owslib.etree import etree

#: WPS status elements and the client's names of the states.
STATES = {"ProcessAccepted": "accepted", "ProcessStarted": "running", "ProcessPaused": "paused",
          "ProcessSucceeded": "succeeded", "ProcessFailed": "failed"}
#: The states in which a job has ended.
FINAL = ("succeeded", "failed", "dismissed")
#: WPS literal data types and their Python types.
PY_TYPES = {"integer": int, "int": int, "nonNegativeInteger": int, "positiveInteger": int, "long": int,
            "float": float, "double": float, "decimal": float, "boolean": bool, "string": str}


# -- names ------------------------------------------------------------------------------------------------

def pyname(identifier: str) -> str:
    """A Python identifier for a WPS identifier (``my-process`` -> ``my_process``).

    Parameters
    ----------
    identifier : str
        A WPS process, input or output identifier.

    Returns
    -------
    str
        A valid Python name: non-word characters become ``_``, a leading digit gets a ``_``
        before it, a keyword one after it.
    """
    name = re.sub(r"\W", "_", identifier)
    if not name or name[0].isdigit():
        name = "_" + name
    if keyword.iskeyword(name):
        name += "_"
    return name


def safe_name(text: str, fallback: str = "output") -> str:
    """A file name made of word characters, dots and dashes (at most 120), or ``fallback``."""
    name = re.sub(r"[^\w.\-]", "_", text or "")[:120].lstrip(".")
    return name or fallback


# -- XML ---------------------------------------------------------------------------------------------------

def local(tag: str) -> str:
    """The local name of an element tag (``{namespace}Name`` -> ``Name``)."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_xml(content: bytes):
    """Parse an XML document; ``None`` when it is empty or not well-formed."""
    if not content or not content.strip():
        return None
    try:
        return etree.fromstring(content)
    except Exception:  # lxml's XMLSyntaxError or ElementTree's ParseError
        return None


def exception_texts(root) -> List[Tuple[Optional[str], Optional[str], str]]:
    """``[(code, locator, text)]`` of an ``ows:ExceptionReport`` element (or one containing it)."""
    out = []
    for el in root.iter():
        if local(el.tag) == "Exception":
            text = " ".join(" ".join(t.strip() for t in sub.itertext() if t.strip())
                            for sub in el if local(sub.tag) == "ExceptionText")
            out.append((el.get("exceptionCode"), el.get("locator"), text.strip()))
    return out


def exception_message(root) -> Tuple[str, Optional[str], Optional[str]]:
    """``(message, code, locator)`` of an ExceptionReport: all texts joined, the first code
    and locator."""
    excs = exception_texts(root)
    if not excs:
        return "the server reported an error without a message", None, None
    code, locator, text = excs[0]
    msg = "; ".join(t for _, _, t in excs if t) or code or "error"
    return msg, code, locator


def status_state(root) -> str:
    """The state of an ExecuteResponse from its ``wps:Status`` element (OWSLib overwrites its
    own ``status`` with ``'Exception'`` when a ProcessFailed carries an ExceptionReport)."""
    for status in root:
        if local(status.tag) == "Status":
            for child in status:
                if local(child.tag) in STATES:
                    return STATES[local(child.tag)]
    return "failed" if local(root.tag) == "ExceptionReport" else "unknown"


# -- values ------------------------------------------------------------------------------------------------

def typed(value, data_type: Optional[str]):
    """A DescribeProcess default or allowed value, or a literal output, as the Python type of
    ``data_type`` (text that does not convert is returned as it is)."""
    if value is None:
        return None
    t = PY_TYPES.get(data_type or "", str)
    if isinstance(value, t) and not (t is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if t is bool:
            return text.lower() in ("true", "1")
        if t is int:
            return int(float(text))
        if t is float:
            return float(text)
    except ValueError:
        return text
    return text


def literal(value, info: "InputInfo", method: str) -> str:
    """One value as the text of a WPS literal (booleans ``true``/``false``).

    Parameters
    ----------
    value : object
        A number, bool, string, path or numpy scalar.
    info : InputInfo
        The input it is for (its data type decides what is accepted).
    method : str
        The process method's name, for the message.

    Returns
    -------
    str

    Raises
    ------
    TypeError
        A value of the wrong type (a float for an integer input, a bool for a number, ...).
    """
    t = PY_TYPES.get(info.data_type or "", str) if info.kind == "literal" else str
    if isinstance(value, os.PathLike):
        value = Path(os.fspath(value)).as_posix()
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:  # numpy scalars
            value = value.item()
        except (TypeError, ValueError):
            pass

    def bad(what):
        return TypeError(f"{method}(): {info.name} expects {what}, got {value!r}")

    if isinstance(value, bool):
        if t in (int, float):
            raise bad("a number")
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        if t is bool:
            raise bad("True or False")
        return str(int(value))
    if isinstance(value, numbers.Real):
        if t is int:
            if float(value).is_integer():
                return str(int(value))
            raise bad("an integer")
        if t is bool:
            raise bad("True or False")
        return repr(float(value))
    if isinstance(value, str):
        return value
    raise bad(f"a {t.__name__}")


# -- process inputs ----------------------------------------------------------------------------------------

@dataclass
class InputInfo:
    """One input of a process, as the client's methods use it."""

    identifier: str
    name: str  # Python keyword
    title: str
    abstract: str
    kind: str  # 'literal', 'complex' or 'bbox'
    data_type: Optional[str]
    min_occurs: int
    max_occurs: int
    default: Any
    allowed: List[Any]
    ranges: List[Tuple[str, str, Optional[str]]]
    uom: Optional[str]

    @property
    def required(self) -> bool:
        """Whether a call must give it (no default and ``minOccurs`` > 0)."""
        return self.min_occurs > 0 and self.default is None

    @property
    def repeatable(self) -> bool:
        """Whether it takes a list (``maxOccurs`` other than 1)."""
        return self.max_occurs != 1

    def py_type(self):
        """The annotation of the method's parameter."""
        t = PY_TYPES.get(self.data_type or "", str) if self.kind == "literal" else str
        return List[t] if self.repeatable else t

    def type_text(self) -> str:
        """The type as a numpydoc parameter line says it (``int, optional``)."""
        if self.allowed:
            text = "{" + ", ".join(repr(typed(v, self.data_type)) for v in self.allowed) + "}"
        else:
            t = PY_TYPES.get(self.data_type or "", str) if self.kind == "literal" else str
            text = t.__name__
        if self.repeatable:
            most = "" if self.max_occurs < 0 else f" (at most {self.max_occurs})"
            text = f"{text} or list of {text}{most}"
        return text + ("" if self.required else ", optional")

    def doc(self) -> str:
        """The numpydoc entry of the parameter: title, abstract, default, range, unit."""
        lines = [f"{self.name} : {self.type_text()}"]
        body = " ".join(x for x in (self.title.rstrip(".") + "." if self.title else "", self.abstract or "") if x)
        extra = []
        if self.default is not None:
            extra.append(f"Default: {self.default!r}.")
        elif not self.required and "default:" not in body.lower():
            extra.append("Default: not set (the process decides).")
        for low, high, closure in self.ranges:
            extra.append(f"Allowed: {low} to {high}" + (f" ({closure})" if closure and closure != "closed" else "")
                         + (f" {self.uom}" if self.uom else "") + ".")
        if self.uom and not self.ranges:
            extra.append(f"Unit: {self.uom}.")
        if self.identifier != self.name:
            extra.append(f"WPS input {self.identifier!r}.")
        text = " ".join([body] + extra).strip()
        lines += textwrap.wrap(text, 88, initial_indent="    ", subsequent_indent="    ") or ["    "]
        return "\n".join(lines)


def input_infos(process, root) -> List[InputInfo]:
    """The inputs of a process description.

    Parameters
    ----------
    process : owslib.wps.Process
        OWSLib's reading of the description.
    root : element
        The ``ProcessDescriptions`` document, for what OWSLib does not read: each input's
        ``AllowedValues/Range`` elements and unit of measure.

    Returns
    -------
    list of InputInfo
        In the order of the description.
    """
    raw = {}
    for inp in root.iter():
        if local(inp.tag) != "Input":
            continue
        ident = next((c.text for c in inp if local(c.tag) == "Identifier"), None)
        ranges, uom = [], None
        for el in inp.iter():
            tag = local(el.tag)
            if tag == "Range":
                low = next((c.text for c in el if local(c.tag) == "MinimumValue"), None)
                high = next((c.text for c in el if local(c.tag) == "MaximumValue"), None)
                closure = next((v for k, v in el.attrib.items() if local(k) == "rangeClosure"), None)
                ranges.append((low, high, closure))
            elif tag == "UOM" and uom is None and el.text:
                uom = el.text.strip()
        raw[ident] = (ranges, uom)
    infos = []
    for inp in process.dataInputs:
        kind = "literal" if inp.dataType not in ("ComplexData", "BoundingBoxData") else \
            ("complex" if inp.dataType == "ComplexData" else "bbox")
        ranges, uom = raw.get(inp.identifier, ([], None))
        default = inp.defaultValue if kind == "literal" else None
        infos.append(InputInfo(
            inp.identifier, pyname(inp.identifier), getattr(inp, "title", "") or "", (inp.abstract or "").strip(),
            kind, inp.dataType if kind == "literal" else None, max(0, inp.minOccurs), inp.maxOccurs,
            typed(default, inp.dataType) if default is not None else None,
            [v for v in (inp.allowedValues or []) if v is not None], ranges, uom))
    return infos
