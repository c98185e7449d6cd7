"""PyTorch network definitions (imported lazily: ``import geoml_hub`` does not load torch).

See :func:`geoml_hub.models.build_network` for the architecture description.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-band standardisation ``(f(x) - mean) / std`` with the training split's statistics as buffers.

    ``f`` is the identity, or with ``log_input`` ``log1p(max(x, 0))``: in log space a linear
    layer forms any band ratio (``log a - log b``), the family of NDVI, NDWI and NDBI, for
    any sensor.
    """

    def __init__(self, bands: int, log_input: bool = False) -> None:
        super().__init__()
        self.log_input = log_input
        self.register_buffer("mean", torch.zeros(1, bands, 1, 1))
        self.register_buffer("std", torch.ones(1, bands, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.log_input:
            x = torch.log1p(torch.clamp(x, min=0))
        return (x - self.mean) / self.std


class PatchCNN(nn.Module):
    """Patch (or pixel) classifier: input ``(batch, bands, rows, cols)`` float32 raw values → logits.

    ``norm`` standardises the bands; ``body`` holds the convolution blocks; the head sees the
    global-average-pooled features and, with ``band_statistics``, the per-band mean and
    standard deviation of the normalised input (the spectral signature that a random forest on
    band statistics uses, handed to the classifier directly).
    """

    def __init__(self, in_bands: int, n_classes: int, patch_size: int, widths: List[int], dropout: float,
                 band_statistics: bool, log_input: bool = False) -> None:
        super().__init__()
        self.norm = Normalize(in_bands, log_input)
        k = 3 if patch_size >= 3 else 1
        size = patch_size
        layers: List[nn.Module] = []
        c_in = in_bands
        for w in widths:
            layers += [nn.Conv2d(c_in, w, k, padding=k // 2, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, k, padding=k // 2, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if size >= 8:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c_in = w
        self.body = nn.Sequential(*layers)
        self.band_statistics = band_statistics
        self.head = nn.Sequential(nn.Dropout(dropout),
                                  nn.Linear(c_in + (2 * in_bands if band_statistics else 0), n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x)
        feats = self.body(z).mean(dim=(2, 3))
        if self.band_statistics:
            flat = z.flatten(2)
            feats = torch.cat([feats, flat.mean(2), flat.std(2, unbiased=False)], dim=1)
        return self.head(feats)
