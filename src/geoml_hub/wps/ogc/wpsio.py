"""Input and output definitions shared by the process modules (PyWPS objects with titles,
abstracts, units, allowed values and defaults)."""

from __future__ import annotations

import math
import re
from typing import List, Optional, Sequence

from pywps import ComplexOutput, FORMATS, LiteralInput, LiteralOutput
from pywps.exceptions import InvalidParameterValue
from pywps.inout.literaltypes import AllowedValue, convert
from pywps.validator.allowed_value import ALLOWEDVALUETYPE, RANGECLOSURETYPE
from pywps.validator.mode import MODE

from ... import params

_INTEGER = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def strict_literal_problem(data_type: str, value) -> Optional[str]:
    """Why ``value`` is not a literal of ``data_type``, or ``None`` when it is one.

    Text is parsed strictly, unlike PyWPS 4.8 (which takes any text but ``false`` as a true
    boolean and truncates ``1.5`` to the integer 1): a boolean is ``true``, ``false``, ``1`` or
    ``0`` (any case); an integer is digits with an optional sign; a float is a finite decimal
    number (no ``nan``, ``inf`` or overflow such as ``1e400``).
    """
    if isinstance(value, bool):
        return None if data_type == "boolean" else f"is not a valid {data_type}"
    if isinstance(value, (int, float)):
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    if data_type == "boolean":
        return None if text.lower() in _BOOLEANS else "is not a valid boolean; use true or false"
    if data_type in ("integer", "nonNegativeInteger", "positiveInteger"):
        return None if _INTEGER.fullmatch(text) else "is not a valid integer"
    if data_type in ("float", "double"):
        if not _FLOAT.fullmatch(text):
            return "is not a valid float; a finite number is needed" \
                if text.lower().lstrip("+-") in ("nan", "inf", "infinity") else "is not a valid float"
        return None if math.isfinite(float(text)) else "is not a valid float; out of range"
    return None


class CheckedLiteralInput(LiteralInput):
    """PyWPS's LiteralInput whose refusals name the input and what it accepts, with the input as
    locator (PyWPS 4.8 says only "Input data not valid using mode 1" or "Could not convert
    value"), and whose values are parsed strictly (:func:`strict_literal_problem`)."""

    @LiteralInput.data.setter
    def data(self, value):
        if self.data_type and value is not None:
            problem = strict_literal_problem(self.data_type, value)
            if problem:
                raise InvalidParameterValue(f"input {self.identifier}: {str(value)[:60]} {problem}",
                                            self.identifier)
            if self.data_type == "boolean" and isinstance(value, str):
                value = _BOOLEANS[value.strip().lower()]
            try:
                convert(self.data_type, value)
            except InvalidParameterValue:
                raise InvalidParameterValue(f"input {self.identifier}: {str(value)[:60]} is not a valid "
                                            f"{self.data_type}", self.identifier) from None
        try:
            LiteralInput.data.fset(self, value)
        except InvalidParameterValue:
            raise InvalidParameterValue(f"input {self.identifier}: {str(value)[:60]} is not allowed; "
                                        f"{describe_allowed(self.allowed_values)}", self.identifier) from None


def describe_allowed(allowed_values) -> str:
    """``'allowed: 1 to 63 in steps of 2'`` or ``'allowed: auto, cpu, cuda'``."""
    parts = []
    for v in allowed_values or []:
        if getattr(v, "allowed_type", None) == ALLOWEDVALUETYPE.RANGE:
            low = "above" if v.range_closure in (RANGECLOSURETYPE.OPEN, RANGECLOSURETYPE.OPENCLOSED) else "from"
            high = "below" if v.range_closure in (RANGECLOSURETYPE.OPEN, RANGECLOSURETYPE.CLOSEDOPEN) else "to"
            text = f"{low} {v.minval} {high} {v.maxval}"
            if v.spacing:
                text += f" in steps of {v.spacing}"
            parts.append(text)
        elif getattr(v, "allowed_type", None) == ALLOWEDVALUETYPE.VALUE:
            parts.append(str(v.value))
    return "allowed: " + (", ".join(parts) if parts else "see DescribeProcess")


DATASET_HELP = (" A dataset name: ROOT/PATH inside a data root such as data/..., workspace/PATH, "
                "jobs/JOB_ID/FILE for an earlier job's output, or an http(s) URL.")


def dataset_input(identifier: str, title: str, abstract: str, min_occurs: int = 1, max_occurs: int = 1,
                  default: Optional[str] = None) -> LiteralInput:
    """A string input naming a dataset (see :mod:`geoml_hub.wps.ogc.inputs`)."""
    return CheckedLiteralInput(identifier, title, data_type="string", abstract=abstract + DATASET_HELP,
                        min_occurs=min_occurs, max_occurs=max_occurs, default=default, mode=MODE.SIMPLE)


def literal_input(identifier: str, title: str, data_type: str, abstract: str, default=None,
                  minimum=None, maximum=None, allowed: Optional[Sequence] = None, uom: Optional[str] = None,
                  min_occurs: Optional[int] = None, spacing=None,
                  closure: str = RANGECLOSURETYPE.CLOSED) -> LiteralInput:
    """A literal input with an optional range ``[minimum, maximum]`` or a list of allowed values.

    Inputs with a default are optional (``min_occurs=0``) unless ``min_occurs`` says otherwise.
    A range needs both bounds (PyWPS 4.8 compares against both); ``spacing`` restricts it to
    ``minimum + k * spacing`` (e.g. odd numbers: ``minimum=1, spacing=2``) and ``closure``
    (a :data:`RANGECLOSURETYPE` value, default closed) says which ends are included.
    """
    if allowed is not None:
        allowed_values = list(allowed)
    elif minimum is not None or maximum is not None:
        if minimum is None or maximum is None:
            raise ValueError(f"input {identifier}: a range needs both minimum and maximum")
        allowed_values = [AllowedValue(minval=minimum, maxval=maximum, spacing=spacing, range_closure=closure)]
    else:
        allowed_values = None
    if min_occurs is None:
        min_occurs = 0 if default is not None else 1
    uoms = [uom] if uom else None
    return CheckedLiteralInput(identifier, title, data_type=data_type, abstract=abstract, default=default,
                        min_occurs=min_occurs, max_occurs=1, allowed_values=allowed_values, uoms=uoms,
                        mode=MODE.SIMPLE)


def literal_output(identifier: str, title: str, data_type: str, abstract: str = "", uom: Optional[str] = None):
    return LiteralOutput(identifier, title, data_type=data_type, abstract=abstract, uoms=[uom] if uom else None)


def file_output(identifier: str, title: str, fmt, abstract: str = "") -> ComplexOutput:
    """A file output, returned by reference (a URL under the server's ``/outputs/``)."""
    return ComplexOutput(identifier, title, abstract=abstract, supported_formats=[fmt], as_reference=True)


#: Formats PyWPS does not define.
from pywps import Format  # noqa: E402

MODEL_FORMAT = Format("application/octet-stream", extension=".pt")
HTML_FORMAT = Format("text/html", extension=".html")
PNG_FORMAT = Format("image/png", extension=".png")
PYCM_FORMAT = Format("application/json", extension=".obj")
PYCM_ABSTRACT = "PyCM object file: pycm.ConfusionMatrix(file=open(path)) loads the matrix with every statistic."


def qc_outputs(prefix: str = "") -> List:
    """The outputs of a PyCM quality-control run."""
    return [
        literal_output(prefix + "overall_accuracy", "Overall accuracy", "float",
                       "Share of correctly classified reference items, 0 to 1."),
        literal_output(prefix + "kappa", "Kappa", "float", "Cohen's kappa."),
        literal_output(prefix + "n", "Compared items", "integer", "Labelled pixels or patches compared."),
        file_output(prefix + "summary", "QC summary", FORMATS.JSON,
                    "overall_accuracy, kappa, ppv, tpr, f1 per class, counts."),
        file_output(prefix + "report", "PyCM report", HTML_FORMAT, "PyCM's HTML report."),
        file_output(prefix + "matrix", "Confusion matrix", FORMATS.CSV, "Rows: reference; columns: predicted."),
        file_output(prefix + "heatmap", "Confusion-matrix heatmap", PNG_FORMAT),
        file_output(prefix + "pycm_object", "PyCM confusion matrix", PYCM_FORMAT, PYCM_ABSTRACT),
    ]


# -- inputs shared by several processes --------------------------------------------------------------

#: Values of the ``device`` inputs.
DEVICES = params.DEVICES
#: Largest number of files of one multi-file scene.
MAX_SCENE_FILES = 20


def scene_input(abstract: str = "") -> LiteralInput:
    """``scene``: one multi-band GeoTIFF, or up to :data:`MAX_SCENE_FILES` single-band files on one grid."""
    return dataset_input("scene", "Scene",
                         "The scene: one multi-band GeoTIFF, or several GeoTIFFs on one grid whose bands are "
                         f"stacked in the order given (repeat the input, at most {MAX_SCENE_FILES} files), e.g. "
                         "data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif."
                         + (" " + abstract if abstract else ""),
                         max_occurs=MAX_SCENE_FILES)


def samples_input(abstract: str) -> LiteralInput:
    """``samples``: a training-sample tree (directory) or a ``manifest.csv``."""
    return dataset_input("samples", "Training samples",
                         "A training-sample tree (one sub-directory per class holding GeoTIFF patches or .npy "
                         "containers, e.g. data/eurosat_ms or the samples output of extract_samples) or a "
                         "manifest.csv (e.g. the manifest output of balance_samples). " + abstract)


def model_input() -> LiteralInput:
    return dataset_input("model", "Model",
                         "A model file written by train_model, e.g. jobs/JOB_ID/model.pt.")


def reference_nodata_input() -> LiteralInput:
    return literal_input("reference_nodata", "Reference nodata", "float",
                         "Value of unlabelled reference pixels; they are left out.", default=0.0)


def ignore_crs_input() -> LiteralInput:
    return literal_input("ignore_crs_name", "Ignore CRS name", "boolean",
                         "Accept CRSs that differ only in name (e.g. the same EPSG code).", default=False)


def seed_input(what: str) -> LiteralInput:
    """The ``seed`` input of a process whose randomness is ``what``
    (:func:`geoml_hub.params.seed_param`), for processes without a declared seed."""
    return param_input(params.field_param("seed", params.seed_param(what)))


def param_input(p: params.Param) -> LiteralInput:
    """The optional literal input of a declared parameter (:class:`geoml_hub.params.Param`):
    identifier, title, abstract, default, allowed range or values and unit as declared."""
    return literal_input(p.wps, p.title, p.wps_type, p.help, default=p.default, minimum=p.minimum,
                         maximum=p.maximum, allowed=p.choices, uom=p.unit, min_occurs=0, spacing=p.spacing)


def param_inputs(cls, skip: Sequence[str] = ()) -> List[LiteralInput]:
    """The literal inputs of the declared parameters of ``cls`` that are WPS inputs, in field order.

    Parameters
    ----------
    cls : dataclass type
        E.g. :class:`geoml_hub.training.TrainConfig`.
    skip : sequence of str
        Parameter names to leave out.
    """
    return [param_input(p) for p in params.declared(cls) if p.wps and p.name not in skip]


def drop_unset_outputs(request, response, values) -> None:
    """Leave the outputs whose value is ``None`` (or missing from ``values``) out of the response
    document: PyWPS would render an unset literal output as the string ``None`` and an unset
    file output as an empty reference. Kept when the client asked for one raw output."""
    if getattr(request, "raw", False):
        return
    for name in list(response.outputs):
        if values.get(name) is None:
            del response.outputs[name]
