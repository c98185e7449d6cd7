"""Exceptions raised by geoml-hub.

Every expected failure (bad input, mismatched grids, a model that does not fit the
data) raises a subclass of :class:`GeomlError` with a one-line message that names the
file or parameter at fault. The command line prints that line and exits with status 2;
the WPS layer turns it into an OGC ExceptionReport.
"""

from __future__ import annotations


class GeomlError(ValueError):
    """Base class of all expected geoml-hub errors (one-line, user-facing message)."""


class DataError(GeomlError):
    """A training-sample tree, manifest, scene or raster is missing, unreadable or inconsistent."""


class GridMismatchError(GeomlError):
    """Two rasters that must share a grid differ in shape, transform or CRS."""


class ModelError(GeomlError):
    """A model file is corrupt, of an unknown format, or does not fit the data it is applied to."""


class ParameterError(GeomlError):
    """A parameter value is out of its allowed range."""
