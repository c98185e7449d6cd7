"""The npm packages the web map serves (Leaflet, Leaflet.draw), found for the map and for
``geoml-hub up``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import GeomlError


def find_vendor() -> Path:
    """``node_modules`` with Leaflet and Leaflet.draw: ``$GEOML_MAP_VENDOR``, the repository's
    (``npm ci``, see the README) or the current directory's.

    Raises
    ------
    GeomlError
        If Leaflet is not installed.
    """
    env = os.environ.get("GEOML_MAP_VENDOR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[3] / "node_modules", Path.cwd() / "node_modules"]
    for c in candidates:
        if (c / "leaflet" / "dist" / "leaflet.js").is_file() and (c / "leaflet-draw" / "dist").is_dir():
            return c
    raise GeomlError("Leaflet not found: run `npm ci` in the repository (see the README) or set GEOML_MAP_VENDOR "
                     "to a node_modules directory with leaflet and leaflet-draw")
