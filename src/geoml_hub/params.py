"""One declaration per parameter: the field helper of the core operations' parameter dataclasses.

Each core operation declares its user-facing parameters once, as fields of a dataclass in its
own module (:class:`geoml_hub.balancing.BalanceParams`,
:class:`geoml_hub.training.TrainConfig`, :class:`geoml_hub.classification.ClassifyParams`,
:class:`geoml_hub.validation.EvaluateParams`), made with :func:`param`. A field carries the
default, the kind of value, the allowed range or values, the unit, a title and the help text.
From these declarations come

* the command-line options (:func:`add_cli_options`, :func:`cli_values`; ``geoml_hub.cli``),
* the WPS literal inputs with their DescribeProcess metadata
  (:func:`geoml_hub.wps.ogc.wpsio.param_inputs`; ``processes/``),
* the pipeline's pass-through (:func:`names`; ``geoml_hub.pipeline``),
* the parameter tables of ``docs/parameters.md`` (:mod:`geoml_hub.tools.paramdoc`).

The range and allowed values are those the WPS and the command line refuse values outside
(:func:`check_values`; the command line checks before it writes anything); the core
functions check what they must themselves (e.g. ``epochs`` at least 1).

This module imports nothing heavy: the process modules and the command line read it.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import ParameterError

#: The key of a declared field's :attr:`dataclasses.Field.metadata`.
METADATA_KEY = "geoml_param"

#: Kinds of values: the WPS data type of each (``integers``: comma-separated integers, a string).
KINDS = {"integer": "integer", "float": "float", "boolean": "boolean", "string": "string", "integers": "string"}


@dataclass(frozen=True)
class Param:
    """A declared parameter (built by :func:`declared` from a field made with :func:`param`).

    Attributes
    ----------
    name : str
        The core's name (the dataclass field and keyword argument).
    kind : {'integer', 'float', 'boolean', 'string', 'integers'}
        The kind of value; ``integers`` are comma-separated integers on the command line and
        in the WPS, a tuple in the core.
    default : object
        The default (``None``: the core derives one; the help text says how).
    title : str
        Short title (the WPS input's title).
    help : str
        What the parameter does (the WPS input's abstract, the option's help, the docs).
    minimum, maximum : number, optional
        The allowed range, both ends included.
    spacing : number, optional
        Allowed values are ``minimum + k * spacing``.
    choices : tuple, optional
        The allowed values.
    unit : str, optional
        Unit of measure (the WPS input's UOM).
    wps : str or None
        The WPS input's identifier; ``None``: not a WPS input.
    cli : str or None
        The command-line option; ``None``: not an option. A boolean's option is a flag that
        sets the value other than the default.
    flag_help : str
        Help of a boolean flag (what setting it does); default: derived from ``help``.
    """

    name: str
    kind: str
    default: Any
    title: str
    help: str
    minimum: Any = None
    maximum: Any = None
    spacing: Any = None
    choices: Optional[Tuple] = None
    unit: Optional[str] = None
    wps: Optional[str] = None
    cli: Optional[str] = None
    flag_help: str = ""

    @property
    def wps_type(self) -> str:
        """The WPS literal data type."""
        return KINDS[self.kind]

    def allowed_text(self) -> str:
        """``'1 to 500'``, ``'auto, cpu, cuda'``, ``'1 to 63 in steps of 2'`` or ``''``."""
        if self.choices:
            return ", ".join(str(c) for c in self.choices)
        if self.minimum is None and self.maximum is None:
            return ""
        text = f"{self.minimum} to {self.maximum}"
        return text + (f" in steps of {self.spacing}" if self.spacing else "")


_UNSET = object()


def param(default: Any, kind: str, title: str, help: str, *, minimum=None, maximum=None, spacing=None,
          choices: Optional[Sequence] = None, unit: Optional[str] = None, wps: Any = _UNSET, cli: Any = _UNSET,
          flag_help: str = "") -> Any:
    """A dataclass field declaring a user-facing parameter.

    Parameters
    ----------
    default : object
        The default (``None``: derived by the core).
    kind : {'integer', 'float', 'boolean', 'string', 'integers'}
    title, help : str
        Title and help text (see :class:`Param`).
    minimum, maximum, spacing : number, optional
        Allowed range (both ends needed) and step.
    choices : sequence, optional
        Allowed values.
    unit : str, optional
    wps : str or None, optional
        WPS input identifier (default: the field's name; ``None``: none).
    cli : str or None, optional
        Command-line option (default: ``--name-with-dashes``; ``None``: none).
    flag_help : str
        Help of a boolean flag.

    Returns
    -------
    dataclasses.Field
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if (minimum is None) != (maximum is None):
        raise ValueError(f"{title}: a range needs both minimum and maximum")
    meta = dict(kind=kind, title=title, help=help, minimum=minimum, maximum=maximum, spacing=spacing,
                choices=tuple(choices) if choices is not None else None, unit=unit, wps=wps, cli=cli,
                flag_help=flag_help)
    if isinstance(default, (list, dict, set)):
        raise ValueError("mutable defaults: use a tuple")
    return dataclasses.field(default=default, metadata={METADATA_KEY: meta})


# -- parameters shared by several operations ---------------------------------------------------------------

#: Values of the ``device`` parameters.
DEVICES = ("auto", "cpu", "cuda")


def device_param() -> Any:
    """The ``device`` field: where PyTorch runs."""
    return param("auto", "string", "Device",
                 "Where PyTorch runs: auto (a CUDA GPU when the server has one, else the CPU), cpu or cuda "
                 "(fails when the server has no GPU).", choices=DEVICES)


def tta_param() -> Any:
    """The ``tta`` field: test-time augmentation of patch models."""
    return param(False, "boolean", "Test-time augmentation",
                 "Patch models: average the prediction over the 8 flips and rotations of each patch (8 times the "
                 "cost; no effect on pixel models).")


def seed_param(what: str) -> Any:
    """The ``seed`` field of an operation whose randomness is ``what``."""
    return param(0, "integer", "Random seed", f"Seed of {what}: the same seed gives the same result.",
                 minimum=0, maximum=2 ** 31 - 1)


# -- reading the declarations -----------------------------------------------------------------------------

def field_param(name: str, f: dataclasses.Field) -> Param:
    """The :class:`Param` of a field made with :func:`param`, named ``name``."""
    meta = dict(f.metadata[METADATA_KEY])
    if meta["wps"] is _UNSET:
        meta["wps"] = name
    if meta["cli"] is _UNSET:
        meta["cli"] = "--" + name.replace("_", "-")
    return Param(name=name, default=f.default, **meta)


def declared(cls) -> List[Param]:
    """The declared parameters of a dataclass (or instance), in field order.

    Parameters
    ----------
    cls : dataclass type or instance

    Returns
    -------
    list of Param
        Fields made with :func:`param`; other fields are internal and left out.
    """
    return [field_param(f.name, f) for f in dataclasses.fields(cls) if METADATA_KEY in f.metadata]


def names(cls) -> Tuple[str, ...]:
    """The names of the declared parameters (the keyword arguments a pipeline passes on)."""
    return tuple(p.name for p in declared(cls))


def defaults(cls) -> Dict[str, Any]:
    """``{name: default}`` of the declared parameters."""
    return {p.name: p.default for p in declared(cls)}


def by_wps(cls) -> Dict[str, Param]:
    """``{WPS identifier: Param}`` of the parameters that are WPS inputs."""
    return {p.wps: p for p in declared(cls) if p.wps}


def parse_integers(text: Optional[str], name: str, minimum: Optional[int] = None) -> Optional[Tuple[int, ...]]:
    """``"2,3,4,8"`` -> ``(2, 3, 4, 8)`` (``None`` for an empty text).

    Raises
    ------
    ParameterError
        If an item is not an integer, or is below ``minimum``.
    """
    if text is None or not str(text).strip():
        return None
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ParameterError(f"{name} expects comma-separated integers such as 2,3,4, got {str(text)[:60]!r}") from None
    if minimum is not None:
        bad = [v for v in values if v < minimum]
        if bad:
            raise ParameterError(f"{name}: band numbers start at {minimum}, got {list(bad)}")
    return values or None


def check_value(p: Param, value: Any, label: Optional[str] = None) -> None:
    """Raise :class:`ParameterError` if ``value`` is outside ``p``'s declared range or choices.

    ``None`` (the core derives the value) and booleans always pass. ``label`` names the
    parameter in the message (default: its command-line option, else its name).
    """
    if value is None or p.kind == "boolean":
        return
    label = label or p.cli or p.name
    if p.choices and value not in p.choices:
        raise ParameterError(f"{label} must be one of {p.allowed_text()}, got {value!r}")
    if p.kind == "integers" or p.minimum is None:
        return
    if not p.minimum <= value <= p.maximum:
        unit = f" {p.unit}" if p.unit else ""
        raise ParameterError(f"{label} must be {p.minimum} to {p.maximum}{unit}, got {value}")
    if p.spacing and (value - p.minimum) % p.spacing:
        raise ParameterError(f"{label} must be {p.allowed_text()}, got {value}")


def check_values(cls, values: Dict[str, Any], cli: bool = True) -> None:
    """Check ``{name: value}`` against the declarations of ``cls`` (:func:`check_value`); names
    that ``cls`` does not declare are left alone. ``cli``: name the option in messages (else the
    parameter's name).

    Raises
    ------
    ParameterError
        For the first value outside its declared range or choices.
    """
    for p in declared(cls):
        if p.name in values:
            check_value(p, values[p.name], (p.cli if cli else None) or p.name)


# -- the command line --------------------------------------------------------------------------------------

def _cli_help(p: Param) -> str:
    if p.kind == "boolean":
        # a flag sets the value other than the default: --tta (true), --no-augment (false)
        text = p.flag_help or (p.help if not p.default else f"{p.name} false; {p.help}")
    else:
        text = p.help
        extra = []
        if p.unit:
            extra.append(p.unit)
        if p.minimum is not None and not p.choices:
            extra.append(p.allowed_text())
        if p.default is not None:
            extra.append(f"default {p.default}")
        elif "default" not in p.help.lower():
            extra.append("default: none")
        if extra:
            text += f" ({'; '.join(extra)})"
    return text.replace("%", "%%")


_CLI_TYPES = {"integer": int, "float": float, "string": str, "integers": str}


def add_cli_options(parser, cls, skip: Iterable[str] = ()) -> None:
    """Add an option per declared parameter of ``cls`` to an argparse parser or group.

    The option's destination is the parameter's name and its default the declared one, so
    :func:`cli_values` gives the complete keyword arguments of the operation. A boolean is a
    flag that sets the value other than its default (``--no-augment``, ``--global-clusters``,
    ``--tta``).

    Parameters
    ----------
    parser : argparse.ArgumentParser or argument group
    cls : dataclass type
    skip : iterable of str
        Names to leave out (e.g. a ``seed`` that another group already adds).
    """
    skip = set(skip)
    for p in declared(cls):
        if not p.cli or p.name in skip:
            continue
        if p.kind == "boolean":
            parser.add_argument(p.cli, dest=p.name, action="store_false" if p.default else "store_true",
                                default=p.default, help=_cli_help(p))
        else:
            metavar = p.cli.lstrip("-").replace("-", "_").upper() if p.kind != "integers" else "N,N,..."
            parser.add_argument(p.cli, dest=p.name, type=_CLI_TYPES[p.kind], default=p.default,
                                choices=list(p.choices) if p.choices else None,
                                metavar=None if p.choices else metavar, help=_cli_help(p))


def cli_values(args: argparse.Namespace, cls, skip: Iterable[str] = ()) -> Dict[str, Any]:
    """The operation's keyword arguments from parsed options (see :func:`add_cli_options`);
    ``integers`` are parsed into tuples.

    Raises
    ------
    ParameterError
        For an ``integers`` option that is not comma-separated integers.
    """
    skip = set(skip)
    out = {}
    for p in declared(cls):
        if not p.cli or p.name in skip or not hasattr(args, p.name):
            continue
        value = getattr(args, p.name)
        if p.kind == "integers":
            value = parse_integers(value, p.cli)
        out[p.name] = value
    return out
