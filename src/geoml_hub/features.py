"""Features of the tree models: per-band statistics of patches, band values of pixels, and
normalised-difference spectral indices from bands of known wavelength.

The scikit-learn model families (:mod:`geoml_hub.models`) read these features instead of raw
windows:

* patches larger than one pixel: per band the mean, standard deviation, 10/50/90 %
  quantiles and texture over the patch's pixels, and the band's share of the mean over all
  bands (the spectral shape, independent of brightness); per spectral index the same
  statistics but the share;
* pixels (1×1 samples): the band values and the spectral indices.

Texture is the mean absolute difference between horizontally and vertically adjacent pixels
(a first-order measure of local variation, Haralick et al. 1973 §II), divided by the band's
mean + 1 for bands (so it does not merely repeat the brightness).

Spectral indices need to know which band is red, NIR, … . The band names come, in this order,
from an explicit list (``band_names``), the band descriptions of the source rasters, or a
sensor preset chosen by the band count (:data:`SENSORS`); when none applies there are no
indices and the model's metadata says so. The indices are the usual normalised differences
``(a - b) / (a + b)``:

===== ============ =========================================================================
name  bands        source
===== ============ =========================================================================
NDVI  NIR, red     Rouse et al. (1974), Monitoring vegetation systems in the Great Plains
                   with ERTS
NDWI  green, NIR   McFeeters (1996), Int. J. Remote Sensing 17(7)
MNDWI green, SWIR1 Xu (2006), Int. J. Remote Sensing 27(14)
NDBI  SWIR1, NIR   Zha et al. (2003), Int. J. Remote Sensing 24(3)
NBR   NIR, SWIR2   Key & Benson (2006), Landscape Assessment (FIREMON)
===== ============ =========================================================================
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ParameterError

#: Sensor presets: band names in file order, and the band name of each spectral role.
SENSORS: Dict[str, Dict] = {
    # EuroSAT's order (B8A last), as in ../shared/data/eurosat_ms and torchgeo
    "sentinel2": {"bands": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12",
                            "B8A"),
                  "roles": {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir1": "B11",
                            "swir2": "B12"}},
    # Landsat 7 ETM+ reflective bands 1-5 and 7
    "landsat7": {"bands": ("B1", "B2", "B3", "B4", "B5", "B7"),
                 "roles": {"blue": "B1", "green": "B2", "red": "B3", "nir": "B4", "swir1": "B5", "swir2": "B7"}},
    # the same plus the thermal band 6 and a quality (Fmask) band, as the Chiapas stack
    "landsat7_8band": {"bands": ("B1", "B2", "B3", "B4", "B5", "B7", "B6", "QA"),
                       "roles": {"blue": "B1", "green": "B2", "red": "B3", "nir": "B4", "swir1": "B5",
                                 "swir2": "B7"}},
}

#: The preset chosen by band count when nothing else names the bands.
PRESET_BY_COUNT = {13: "sentinel2", 6: "landsat7", 8: "landsat7_8band"}

#: Normalised-difference indices: name → (role a, role b), index = (a - b) / (a + b).
INDICES: Dict[str, Tuple[str, str]] = {"NDVI": ("nir", "red"), "NDWI": ("green", "nir"),
                                       "MNDWI": ("green", "swir1"), "NDBI": ("swir1", "nir"),
                                       "NBR": ("nir", "swir2")}

#: Patterns in band descriptions (lower case) that name a spectral role.
_ROLE_PATTERNS = {"blue": r"\bblue\b", "green": r"\bgreen\b", "red": r"(?<!infra)(?<!infra-)\bred\b",
                  "nir": r"\bnir\b|near[ -]infrared", "swir1": r"\bswir[ -]?1\b", "swir2": r"\bswir[ -]?2\b"}

QUANTILES = (10, 50, 90)


def roles_from_names(names: Sequence[str]) -> Dict[str, int]:
    """Spectral role → 0-based position of the band, from band names.

    A name matches a sensor preset's band name (``B04``, ``B4``) or contains a role word
    (``'ETM+ band 3 (red)'``, ``'NIR'``). Unmatched roles are left out.
    """
    roles: Dict[str, int] = {}
    clean = [str(n).strip() for n in names]
    for preset in SENSORS.values():
        if any(clean) and all(n in preset["bands"] for n in clean):
            return {role: clean.index(band) for role, band in preset["roles"].items() if band in clean}
    for i, n in enumerate(clean):
        for role, pattern in _ROLE_PATTERNS.items():
            if role not in roles and re.search(pattern, n.lower()):
                roles[role] = i
    return roles


def resolve_band_names(sample_bands: int, band_names: Optional[Sequence[str]] = None,
                       descriptions: Optional[Sequence[Optional[str]]] = None) -> Dict:
    """The names of a sample's bands and where they came from.

    Parameters
    ----------
    sample_bands : int
        Band count of the samples.
    band_names : sequence of str, optional
        Explicit names (``--band-names``), one per band.
    descriptions : sequence of str, optional
        Band descriptions of the source raster (``None`` entries: no description).

    Returns
    -------
    dict
        ``names`` (list of str or ``None``), ``source`` (``'band_names'``, ``'descriptions'``,
        ``'preset:<sensor>'`` or ``'unknown'``).

    Raises
    ------
    ParameterError
        If ``band_names`` does not have one name per band.
    """
    if band_names:
        names = [str(n).strip() for n in band_names]
        if len(names) != sample_bands:
            raise ParameterError(f"band names: {len(names)} given but the samples have {sample_bands} bands")
        return {"names": names, "source": "band_names"}
    if descriptions and all(descriptions) and len(descriptions) == sample_bands \
            and roles_from_names(descriptions):
        return {"names": [str(d) for d in descriptions], "source": "descriptions"}
    preset = PRESET_BY_COUNT.get(sample_bands)
    if preset:
        return {"names": list(SENSORS[preset]["bands"]), "source": f"preset:{preset}"}
    return {"names": None, "source": "unknown"}


def feature_spec(sample_bands: int, bands: Sequence[int], patch_size: Sequence[int],
                 band_names: Optional[Sequence[str]] = None,
                 descriptions: Optional[Sequence[Optional[str]]] = None, indices: bool = True) -> Dict:
    """The description of a tree model's features, stored in the model file.

    Parameters
    ----------
    sample_bands : int
    bands : sequence of int
        1-based bands of the samples the model reads (its input's band order).
    patch_size : (rows, cols)
    band_names, descriptions : see :func:`resolve_band_names`
    indices : bool
        Derive spectral indices where the bands allow.

    Returns
    -------
    dict
        ``kind`` (``'patch_statistics'`` or ``'pixel_values'``), ``band_names`` (of the
        model's bands, or ``None``), ``band_names_source``, ``indices`` (name →
        ``[position a, position b]`` into the model's bands), ``quantiles`` and
        ``indices_note`` (why there are none, if so).
    """
    named = resolve_band_names(sample_bands, band_names, descriptions)
    names = named["names"]
    model_names = [names[b - 1] for b in bands] if names else None
    pairs: Dict[str, List[int]] = {}
    note = ""
    if not indices:
        note = "spectral indices switched off"
    elif model_names is None:
        note = ("band names unknown (no band descriptions, no sensor preset for "
                f"{sample_bands} bands, no band names given): no spectral indices")
    else:
        roles = roles_from_names(model_names)
        for name, (a, b) in INDICES.items():
            if a in roles and b in roles:
                pairs[name] = [roles[a], roles[b]]
        if not pairs:
            note = "the bands' names name no red/NIR/SWIR pair: no spectral indices"
    pixel = tuple(int(v) for v in patch_size) == (1, 1)
    return {"kind": "pixel_values" if pixel else "patch_statistics", "band_names": model_names,
            "band_names_source": named["source"], "indices": pairs,
            "quantiles": [] if pixel else list(QUANTILES), "indices_note": note}


def _index_planes(x: np.ndarray, pairs: Dict[str, Sequence[int]]) -> np.ndarray:
    """``(N, n_indices, rows, cols)`` float32 normalised differences of ``x`` ``(N, bands, rows, cols)``."""
    out = np.empty((x.shape[0], len(pairs)) + x.shape[2:], dtype=np.float32)
    for k, (a, b) in enumerate(pairs.values()):
        xa, xb = x[:, a], x[:, b]
        den = xa + xb
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(np.abs(den) > 1e-6, (xa - xb) / np.where(den == 0, 1, den), 0.0)
        out[:, k] = np.clip(v, -1.0, 1.0)
    return out


def compute_features(x: np.ndarray, spec: Dict) -> np.ndarray:
    """Feature matrix of samples for a tree model.

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, bands, rows, cols)`` raw values of the model's bands (any numeric dtype).
    spec : dict
        :func:`feature_spec`'s description.

    Returns
    -------
    numpy.ndarray
        ``(N, n_features)`` float32; :func:`feature_names` names the columns.
    """
    x = np.asarray(x, dtype=np.float32)
    n, nb = x.shape[:2]
    pairs = spec.get("indices") or {}
    idx = _index_planes(x, pairs) if pairs else np.empty((n, 0) + x.shape[2:], dtype=np.float32)
    if spec["kind"] == "pixel_values":
        return np.concatenate([x.reshape(n, nb), idx.reshape(n, idx.shape[1])], axis=1)
    parts = _statistics(x, spec) + [_texture(x) / (np.abs(x.mean((2, 3))) + 1)]
    mean = x.mean((2, 3))
    parts.append(mean / (np.abs(mean).mean(1, keepdims=True) + 1e-6))
    if idx.shape[1]:
        parts += _statistics(idx, spec) + [_texture(idx)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def _statistics(x: np.ndarray, spec: Dict) -> List[np.ndarray]:
    """Mean, standard deviation and quantiles of each plane of ``(N, planes, rows, cols)``."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    parts = [flat.mean(2), flat.std(2)]
    if spec.get("quantiles"):
        parts += list(np.percentile(flat, spec["quantiles"], axis=2))  # (n_quantiles, N, planes)
    return parts


def _texture(x: np.ndarray) -> np.ndarray:
    """``(N, planes)`` mean absolute difference of horizontally and vertically adjacent pixels."""
    dx = np.abs(np.diff(x, axis=3)).mean((2, 3)) if x.shape[3] > 1 else np.zeros(x.shape[:2], np.float32)
    dy = np.abs(np.diff(x, axis=2)).mean((2, 3)) if x.shape[2] > 1 else np.zeros(x.shape[:2], np.float32)
    return (dx + dy) / 2


def feature_names(spec: Dict, n_bands: int) -> List[str]:
    """Column names of :func:`compute_features` (``'mean B04'``, ``'NDVI'``, ...)."""
    names = spec.get("band_names") or [f"band {i + 1}" for i in range(n_bands)]
    idx = list((spec.get("indices") or {}).keys())
    if spec["kind"] == "pixel_values":
        return list(names) + idx
    def stats(planes):
        out = [f"mean {b}" for b in planes] + [f"std {b}" for b in planes]
        for q in spec.get("quantiles") or []:
            out += [f"q{q} {b}" for b in planes]
        return out

    return (stats(names) + [f"texture {b}" for b in names] + [f"share {b}" for b in names] + stats(idx)
            + [f"texture {i}" for i in idx])


def parse_band_names(text: Optional[str]) -> Optional[Tuple[str, ...]]:
    """``"B1,B2,B3"`` → ``('B1', 'B2', 'B3')`` (``None`` for an empty text).

    Raises
    ------
    ParameterError
        If a name is empty.
    """
    if text is None or not str(text).strip():
        return None
    names = tuple(v.strip() for v in str(text).split(","))
    if any(not v for v in names):
        raise ParameterError(f"band names must be comma-separated names such as B02,B03,B04, got {str(text)[:60]!r}")
    return names
