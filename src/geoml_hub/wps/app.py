"""Deprecated alias of :mod:`geoml_hub.wps.http.app` (moved in issue 13); importing it warns. It goes in a later
release."""

import sys
import warnings

from geoml_hub.wps.http import app as _new

warnings.warn("geoml_hub.wps.app moved to geoml_hub.wps.http.app", DeprecationWarning, stacklevel=2)

if __name__ != "__main__":
    sys.modules[__name__] = _new
