"""Deprecated alias of :mod:`geoml_hub.web.headers` (moved in issue 13); importing it warns. It goes in a later
release."""

import sys
import warnings

from geoml_hub.web import headers as _new

warnings.warn("geoml_hub.wps.headers moved to geoml_hub.web.headers", DeprecationWarning, stacklevel=2)

if __name__ != "__main__":
    sys.modules[__name__] = _new
