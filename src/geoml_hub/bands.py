"""Which bands of an input a model reads: the checks shared by classification and the
compatibility check (:mod:`geoml_hub.classification`, :mod:`geoml_hub.compatibility`)."""

from __future__ import annotations

from typing import List, Optional, Sequence

from .errors import ModelError


def check_samples(model, sample_set) -> None:
    """Refuse samples whose band count or patch size differ from the model's training samples'.

    Raises
    ------
    ModelError
    """
    if sample_set.bands != model.sample_bands:
        raise ModelError(f"{sample_set.source}: samples have {sample_set.bands} bands but the model was trained "
                         f"on {model.sample_bands}-band samples")
    if tuple(sample_set.patch_size) != tuple(model.patch_size):
        raise ModelError(f"{sample_set.source}: patch size {sample_set.patch_size} does not match the model's "
                         f"{tuple(model.patch_size)}")


def resolve_band_map(model, scene_count: int, band_map: Optional[Sequence[int]], source: str) -> List[int]:
    """Scene band (1-based) to read for each model band.

    Without ``band_map`` the scene must have the training samples' band count and the
    model's bands are read at the same positions.

    Raises
    ------
    ModelError
        If the band counts do not match, or ``band_map`` has the wrong length or an index
        outside the scene.
    """
    if band_map is None:
        if scene_count != model.sample_bands:
            raise ModelError(f"{source}: scene has {scene_count} bands but the model was trained on "
                             f"{model.sample_bands}-band samples (give a band map: {len(model.bands)} scene band indexes)")
        return list(model.bands)
    band_map = [int(b) for b in band_map]
    if len(band_map) != len(model.bands):
        raise ModelError(f"band map has {len(band_map)} entries but the model reads {len(model.bands)} bands")
    bad = [b for b in band_map if b < 1 or b > scene_count]
    if bad:
        raise ModelError(f"band map entries {bad} outside the scene's bands 1..{scene_count}")
    return band_map
