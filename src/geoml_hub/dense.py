"""Dense (fully convolutional) inference of :class:`geoml_hub.networks.PatchCNN` networks.

Two evaluators used by :func:`geoml_hub.classification.classify_scene` (``method='dense'``):

* :class:`DensePixel` — a pixel model (patch size 1×1) is a chain of 1×1 convolutions,
  i.e. of matrix products over pixels. The input normalisation and every BatchNorm are
  folded into the weights (in float64, then cast to float32), the head's view of the
  normalised input (``band_statistics``: the pixel's own value and a zero standard
  deviation) is folded into one more matrix, and the chain runs as ``linear`` (GEMM with
  the bias in oneDNN's epilogue) + in-place ReLU over pixel-major batches of 4,096
  pixels whose activations stay in the CPU cache. On the CPU the batches are spread over
  ``torch.get_num_threads()`` Python worker threads, each running PyTorch single-threaded
  (the GIL is released inside the kernels): no OpenMP barrier per layer, so a worker
  that the OS deschedules on a shared machine does not stall the others — measured 3-10x
  faster than PyTorch's 2 OpenMP threads on large batches with a load average of 4-5 on
  2 cores, and as fast on an idle machine. Classes are the argmax of the logits; probabilities (softmax) only when
  asked for. This is the same function as the per-pixel path up to float32 rounding.
* :class:`DensePatch` — a patch model is evaluated over a whole window at once: the
  convolution body (BatchNorm folded into the convolutions with
  ``torch.nn.utils.fusion.fuse_conv_bn_eval``) runs once over the window plus a margin
  of its receptive field, the body's output is average-pooled over each patch's cells
  (patch starts are a whole number of cells apart because the stride is a multiple of the
  body's down-sampling factor), the per-patch band mean and standard deviation come from
  integral images (float64) of the normalised input ``z`` and ``z**2``, and the head is
  applied to every block's feature vector at once. Inside a window the convolutions see
  the real neighbours of a patch where a patch evaluated alone sees zero padding, so the
  result is close to, not identical with, the per-patch path (measured in
  ``docs/benchmarks.md``); it does not depend on the tile size, because the margin covers
  the receptive field.

Sources: BatchNorm folding, S. Ioffe & C. Szegedy, "Batch Normalization" (ICML 2015),
inference form ``y = gamma (x - mu) / sqrt(var + eps) + beta``; fully convolutional
evaluation of a patch classifier, P. Sermanet et al., "OverFeat" (ICLR 2014) and
J. Long, E. Shelhamer, T. Darrell, "Fully Convolutional Networks for Semantic
Segmentation" (CVPR 2015).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

PIXEL_BATCH = 4096


def _bn_scale_shift(bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` in float64 with ``bn(u) == scale * u + shift`` (evaluation mode)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * scale
    return scale, shift


class DensePixel:
    """A pixel model's network folded into a chain of matrix products.

    Parameters
    ----------
    network : geoml_hub.networks.PatchCNN
        A pixel model (1×1 convolutions, no pooling), in evaluation mode.

    Attributes
    ----------
    layers : list of (torch.Tensor, torch.Tensor)
        ``(W, b)`` float32 of each hidden layer, ``W`` ``(out, in)``, ``b`` ``(out,)``;
        a ReLU follows each.
    head_w, head_x, head_b : torch.Tensor
        Logits ``= head_w @ h + head_x @ f(x) + head_b`` where ``h`` is the last hidden
        layer and ``f(x)`` the (optionally log-transformed) raw input; ``head_x`` is
        ``None`` without band statistics.
    """

    def __init__(self, network) -> None:
        with torch.no_grad():
            self._fold(network)

    def _fold(self, network) -> None:
        norm = network.norm
        self.log_input = bool(norm.log_input)
        inv = 1.0 / norm.std.double().flatten()   # z = (f(x) - mean) * inv
        mean = norm.mean.double().flatten()
        self.device = norm.mean.device
        mods = list(network.body)
        layers: List[Tuple[torch.Tensor, torch.Tensor]] = []
        first = True
        k = 0
        while k < len(mods):
            conv, bn = mods[k], mods[k + 1]
            if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1) or not isinstance(bn, nn.BatchNorm2d):
                raise ValueError("not a pixel model: the body must be 1x1 convolutions with BatchNorm")
            w = conv.weight.double()[:, :, 0, 0]
            b = conv.bias.double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64,
                                                                              device=w.device)
            if first:  # fold the normalisation: W z = (W * inv) f(x) - W (mean * inv)
                b = b - w @ (mean * inv)
                w = w * inv[None, :]
                first = False
            scale, shift = _bn_scale_shift(bn)
            w, b = w * scale[:, None], b * scale + shift
            layers.append((w.float().contiguous(), b.float().contiguous()))
            k += 3  # conv, bn, relu
        linear = network.head[-1]
        lw, lb = linear.weight.double(), linear.bias.double()
        c = lw.shape[1] - (2 * mean.numel() if network.band_statistics else 0)
        hw = lw[:, :c]
        hb = lb.clone()
        hx = None
        if network.band_statistics:  # the head also sees z (mean of one pixel) and 0 (its std)
            wz = lw[:, c:c + mean.numel()]
            hb = hb - wz @ (mean * inv)
            hx = (wz * inv[None, :]).float().contiguous()
        if not layers:  # no hidden layer: the head reads z (global mean of a 1x1 map)
            hb = hb - hw @ (mean * inv)
            hw = hw * inv[None, :]
            hx = hw.float().contiguous() if hx is None else hx + hw.float()
            hw = None
        self.layers = layers
        self.head_w = None if hw is None else hw.float().contiguous()
        self.head_x = hx
        self.head_b = hb.float().contiguous()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of pixels.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, bands)`` float32 raw values.

        Returns
        -------
        torch.Tensor
            ``(N, n_classes)`` float32 logits.
        """
        if self.log_input:
            x = torch.log1p(torch.clamp(x, min=0))
        h = x
        for w, b in self.layers:
            h = torch.relu_(F.linear(h, w, b))
        if self.head_w is None:
            return F.linear(x, self.head_x, self.head_b)
        out = F.linear(h, self.head_w, self.head_b)
        if self.head_x is not None:
            out.addmm_(x, self.head_x.T)
        return out

    def predict(self, x: np.ndarray, proba: bool = False, batch: int = PIXEL_BATCH) -> np.ndarray:
        """Class index (or probabilities) of every pixel.

        Parameters
        ----------
        x : numpy.ndarray
            ``(bands, N)`` raw values, any numeric dtype (converted to float32 batch by batch).
        proba : bool
            Return ``(N, n_classes)`` float32 softmax probabilities instead of classes.
        batch : int
            Pixels per matrix-product chain.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` int64 class indexes, or ``(N, n_classes)`` float32 probabilities.
        """
        n = x.shape[1]
        k = self.head_b.shape[0]
        out = np.empty((n, k), dtype=np.float32) if proba else np.empty(n, dtype=np.int64)

        def run(s: int) -> None:
            with torch.inference_mode():
                chunk = np.ascontiguousarray(x[:, s:s + batch].T, dtype=np.float32)  # (pixels, bands)
                logits = self.logits(torch.from_numpy(chunk).to(self.device))
                if proba:
                    out[s:s + len(chunk)] = torch.softmax(logits, dim=1).cpu().numpy()
                else:
                    out[s:s + len(chunk)] = logits.argmax(1).cpu().numpy()

        starts = range(0, n, batch)
        workers = torch.get_num_threads()
        if self.device.type != "cpu" or workers < 2 or len(starts) < 2:
            for s in starts:
                run(s)
            return out
        torch.set_num_threads(1)  # process-wide: restored below
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geoml-dense") as pool:
                list(pool.map(run, starts))
        finally:
            torch.set_num_threads(workers)
        return out


class DensePatch:
    """A patch model evaluated fully convolutionally over windows.

    Parameters
    ----------
    network : geoml_hub.networks.PatchCNN
        In evaluation mode.
    patch_size : tuple of int
        ``(rows, cols)`` of the model's patches.

    Attributes
    ----------
    factor : int
        Down-sampling of the body (``2 ** number of max-poolings``).
    margin : int
        Pixels read around a window on each side: the body's receptive-field radius,
        rounded up to a multiple of ``factor``.
    cells : tuple of int
        ``(rows, cols)`` of the body's output for one patch (what the global average pools).
    """

    def __init__(self, network, patch_size: Tuple[int, int]) -> None:
        with torch.no_grad():
            self._build(network, patch_size)

    def _build(self, network, patch_size: Tuple[int, int]) -> None:
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        self.norm = network.norm
        mods = list(network.body)
        fused: List[nn.Module] = []
        k = 0
        factor, radius = 1, 0
        rows, cols = (int(v) for v in patch_size)
        while k < len(mods):
            m = mods[k]
            if isinstance(m, nn.Conv2d):
                nxt = mods[k + 1] if k + 1 < len(mods) else None
                if isinstance(nxt, nn.BatchNorm2d):
                    fused.append(fuse_conv_bn_eval(m, nxt))
                    k += 2
                else:
                    fused.append(m)
                    k += 1
                radius += (m.kernel_size[0] // 2) * factor
                continue
            if isinstance(m, nn.MaxPool2d):
                radius += factor  # kernel 2, stride 2: one more input cell on one side
                factor *= 2
                rows, cols = rows // 2, cols // 2
            fused.append(m)
            k += 1
        # channels-last: oneDNN's preferred layout on CPU (about 1.7x faster for these convolutions)
        self.body = nn.Sequential(*fused).eval().to(memory_format=torch.channels_last)
        self.head = network.head[-1]
        self.band_statistics = bool(network.band_statistics)
        self.factor = factor
        self.margin = int(math.ceil(radius / factor) * factor)
        self.cells = (rows, cols)
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))

    def supports(self, stride: int) -> bool:
        """True if windows at ``stride`` align with the body's pooling grid (``stride % factor == 0``)."""
        return stride % self.factor == 0 and min(self.cells) >= 1

    def window_logits(self, x: np.ndarray, nbr: int, nbc: int, stride: int) -> torch.Tensor:
        """Logits of the ``nbr × nbc`` patches of a window.

        Parameters
        ----------
        x : numpy.ndarray
            ``(bands, (nbr-1)*stride + rows + 2*margin, (nbc-1)*stride + cols + 2*margin)``
            float32 raw values: the union of the patches plus ``margin`` on every side.
            Patch ``(i, j)`` starts at ``(margin + i*stride, margin + j*stride)``.
        nbr, nbc : int
            Patches down and across.
        stride : int
            Pixels between patch starts; a multiple of :attr:`factor`.

        Returns
        -------
        torch.Tensor
            ``(nbr * nbc, n_classes)`` float32 logits, row-major over the patches.
        """
        m, f = self.margin, self.factor
        pr, pc = self.patch_size
        with torch.inference_mode():
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(self.norm.mean.device)
            z = self.norm(xt)
            feat = self.body(z.contiguous(memory_format=torch.channels_last))  # (1, C, H/f, W/f)
            feat = feat[:, :, m // f:, m // f:]
            step = stride // f
            pooled = F.avg_pool2d(feat, self.cells, stride=step)[:, :, :nbr, :nbc]  # (1, C, nbr, nbc)
            feats = [pooled[0].flatten(1).T]
            if self.band_statistics:
                zw = z[0, :, m:m + (nbr - 1) * stride + pr, m:m + (nbc - 1) * stride + pc].double()
                n = float(pr * pc)
                mean = _box_sums(zw, nbr, nbc, stride, pr, pc) / n
                sq = _box_sums(zw * zw, nbr, nbc, stride, pr, pc) / n
                std = torch.sqrt(torch.clamp(sq - mean * mean, min=0))
                feats += [mean.flatten(1).T.float(), std.flatten(1).T.float()]
            return self.head(torch.cat(feats, dim=1))


def _box_sums(a: torch.Tensor, nbr: int, nbc: int, stride: int, pr: int, pc: int) -> torch.Tensor:
    """Sums of ``a`` ``(C, H, W)`` over the ``pr × pc`` boxes starting at ``(i*stride, j*stride)``;
    returns ``(C, nbr, nbc)`` (same dtype).

    When the patch is a whole number of stride blocks, sums per ``stride`` block first (each
    pixel read once), then sums those over the ``pr/stride × pc/stride`` blocks of a patch;
    otherwise from an integral image (2-D cumulative sum).
    """
    if pr % stride == 0 and pc % stride == 0:
        blocks = F.avg_pool2d(a[None], stride, stride=stride)  # (1, C, H/s, W/s) block means
        sums = F.avg_pool2d(blocks, (pr // stride, pc // stride), stride=1)[0, :, :nbr, :nbc]
        return sums * float(pr * pc)
    s = F.pad(a, (1, 0, 1, 0)).cumsum(1).cumsum(2)
    r0 = torch.arange(nbr, device=a.device) * stride
    c0 = torch.arange(nbc, device=a.device) * stride
    r1, c1 = r0 + pr, c0 + pc
    return (s[:, r1][:, :, c1] - s[:, r0][:, :, c1] - s[:, r1][:, :, c0] + s[:, r0][:, :, c0])


def dense_evaluator(model) -> Optional[object]:
    """:class:`DensePixel` or :class:`DensePatch` for a loaded :class:`geoml_hub.models.Model`
    (cached on the model), or ``None`` if its network is not a ``PatchCNN``."""
    cached = getattr(model, "_dense", None)
    if cached is not None:
        return cached
    net = model.network
    if not hasattr(net, "norm") or not hasattr(net, "body"):
        return None
    ev = DensePixel(net) if model.is_pixel_model else DensePatch(net, tuple(model.patch_size))
    try:
        object.__setattr__(model, "_dense", ev)
    except AttributeError:
        pass
    return ev
