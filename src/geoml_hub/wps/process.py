"""Deprecated alias of :mod:`geoml_hub.wps.ogc.process` (moved in issue 13); importing it warns. It goes in a later
release."""

import sys
import warnings

from geoml_hub.wps.ogc import process as _new

warnings.warn("geoml_hub.wps.process moved to geoml_hub.wps.ogc.process", DeprecationWarning, stacklevel=2)

if __name__ != "__main__":
    sys.modules[__name__] = _new
