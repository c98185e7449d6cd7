"""Deprecated alias of :mod:`geoml_hub.wps.ogc.wpsio` (moved in issue 13); importing it warns. It goes in a later
release."""

import sys
import warnings

from geoml_hub.wps.ogc import wpsio as _new

warnings.warn("geoml_hub.wps.wpsio moved to geoml_hub.wps.ogc.wpsio", DeprecationWarning, stacklevel=2)

if __name__ != "__main__":
    sys.modules[__name__] = _new
