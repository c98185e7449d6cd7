"""Deprecated alias of :mod:`geoml_hub.wps.jobs.dispatcher` (moved in issue 13); importing it warns. It goes in a later
release."""

import sys
import warnings

from geoml_hub.wps.jobs import dispatcher as _new

warnings.warn("geoml_hub.wps.dispatcher moved to geoml_hub.wps.jobs.dispatcher", DeprecationWarning, stacklevel=2)

if __name__ == "__main__":  # python -m geoml_hub.wps.dispatcher (before the move)
    sys.exit(_new.main())

if __name__ != "__main__":
    sys.modules[__name__] = _new
