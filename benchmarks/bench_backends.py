#!/usr/bin/env python
"""Eager PyTorch vs ``torch.compile`` vs ONNX Runtime (CPU) for the two dense inference kernels.

* ``patch``: the fused convolution body of the default patch network (64×64 patches,
  widths 32/64/128, 13 bands) on one 592×592 window (a 512² tile at stride 32 plus the
  receptive-field margin), :class:`geoml_hub.dense.DensePatch`'s ``body``;
* ``pixel``: the folded matrix-product chain of a pixel network (widths 32/64/128, 13 bands)
  on 16,384 pixels (one batch), :class:`geoml_hub.dense.DensePixel`'s ``logits``.

Untrained networks (random weights, BatchNorm statistics set at random) — speed and
equality do not depend on training. Each backend: 2 warm-up calls, then ``--repeats``
timed calls, median; the maximum absolute difference of its output to eager's is
reported (adopt a backend only if faster *and* its classes are identical). ONNX Runtime and
``onnx`` are optional (``pip install onnxruntime onnx``); missing ones are reported as such.

* ``pixel_predict`` (``--pixels``, default 2.25 Mpx; 0 skips it): the path that ships,
  :meth:`geoml_hub.dense.DensePixel.predict` (4,096-pixel batches over worker threads, PyTorch),
  against ONNX Runtime on the same batches and threads, and on 65,536-pixel batches on its
  own threads; classes and probabilities compared.

    python benchmarks/bench_backends.py --out /tmp/geoml-bench/backends.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def networks():
    import torch

    from geoml_hub.dense import DensePatch, DensePixel
    from geoml_hub.networks import PatchCNN

    torch.manual_seed(0)
    out = {}
    for kind, size in (("patch", 64), ("pixel", 1)):
        net = PatchCNN(13, 10, size, [32, 64, 128], 0.0, size > 1)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2)
        net.norm.mean.fill_(1000.0)
        net.norm.std.fill_(300.0)
        net.eval()
        out[kind] = DensePatch(net, (size, size)) if size > 1 else DensePixel(net)
    return out


def timed(fn, x, repeats):
    for _ in range(2):
        fn(x)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        y = fn(x)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), y


def main(argv=None):
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "geoml-bench" / "backends.json")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pixels", type=int, default=2_250_000,
                   help="pixels of the shipped-path comparison (DensePixel.predict vs ONNX Runtime); 0: skip")
    p.add_argument("--only", default="patch,pixel", help="kernels of the eager/compile/ONNX table")
    args = p.parse_args(argv)
    nets = networks()
    rng = np.random.default_rng(0)
    inputs = {"patch": torch.from_numpy(rng.normal(0, 1, (1, 13, 592, 592)).astype(np.float32)).contiguous(
                  memory_format=torch.channels_last),
              "pixel": torch.from_numpy(rng.normal(1000, 300, (16384, 13)).astype(np.float32))}
    fns = {"patch": nets["patch"].body, "pixel": nets["pixel"].logits}
    res = {"machine": C.machine_info(), "torch": torch.__version__, "threads": torch.get_num_threads(), "cases": {}}
    for kind in [k for k in ("patch", "pixel") if k in args.only.split(",")]:
        x, fn = inputs[kind], fns[kind]
        row = {}
        with torch.inference_mode():
            t_eager, y_eager = timed(fn, x, args.repeats)
            row["eager_s"] = t_eager
            try:
                compiled = torch.compile(fn)
                t, y = timed(compiled, x, args.repeats)
                row["compile_s"], row["compile_max_abs_diff"] = t, float((y - y_eager).abs().max())
                row["compile_same_argmax"] = kind == "patch" or bool(torch.equal(y.argmax(1), y_eager.argmax(1)))
            except Exception as exc:  # inductor needs a C++ compiler; report rather than fail
                row["compile_error"] = str(exc).splitlines()[0][:200]
        try:
            import onnxruntime as ort

            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, f"{kind}.onnx")
                module = fn if isinstance(fn, torch.nn.Module) else _Wrap(nets["pixel"])
                torch.onnx.export(module, (x.contiguous(),), path, dynamo=False, input_names=["x"])
                so = ort.SessionOptions()
                so.intra_op_num_threads = torch.get_num_threads()
                sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                xn = x.contiguous().numpy()
                t, y = timed(lambda a: sess.run(None, {"x": a})[0], xn, args.repeats)
                yt = torch.from_numpy(y)
                row["onnxruntime_s"], row["onnxruntime_max_abs_diff"] = t, float((yt - y_eager).abs().max())
                row["onnxruntime_same_argmax"] = kind == "patch" or bool(torch.equal(yt.argmax(1), y_eager.argmax(1)))
                row["onnxruntime"] = ort.__version__
        except Exception as exc:
            row["onnxruntime_error"] = str(exc).splitlines()[0][:200]
        for key in ("compile_s", "onnxruntime_s"):
            if key in row:
                row[key.replace("_s", "_speedup")] = row["eager_s"] / row[key]
        row["load_average_1min"] = os.getloadavg()[0]
        res["cases"][kind] = row
        print(kind, json.dumps(row, indent=1), flush=True)
    if args.pixels:
        res["cases"]["pixel_predict"] = pixel_predict(nets["pixel"], args.pixels, args.repeats)
    C.write_json(args.out, res)
    print(f"  results: {args.out}")
    return res


def pixel_predict(dense, n_pixels, repeats):
    """The shipped path, ``DensePixel.predict`` (4,096-pixel batches over worker threads, each
    PyTorch single-threaded), against ONNX Runtime on the same ``(13, n_pixels)`` uint16 input
    (classes and softmax probabilities compared), ONNX Runtime two ways: the same 4,096-pixel
    batches over the same worker threads with one-thread sessions, and 65,536-pixel batches on
    its own intra-op threads."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    rng = np.random.default_rng(1)
    x = np.clip(rng.normal(1500, 400, (13, n_pixels)), 0, 65535).astype(np.uint16)
    threads = torch.get_num_threads()
    row = {"pixels": n_pixels, "threads": threads, "load_average_1min_before": os.getloadavg()[0]}
    t, cls = timed(lambda a: dense.predict(a), x, repeats)
    prob = dense.predict(x, proba=True)
    row["torch_s"], row["torch_mpx_per_s"] = t, n_pixels / t / 1e6
    try:
        import onnxruntime as ort
    except ImportError as exc:
        row["onnxruntime_error"] = str(exc)
        print("pixel_predict", json.dumps(row, indent=1), flush=True)
        return row
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pixel.onnx")
        t0 = time.perf_counter()
        torch.onnx.export(_Wrap(dense), (torch.zeros(4096, 13),), path, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})

        def session(n_threads):
            so = ort.SessionOptions()
            so.intra_op_num_threads = n_threads
            so.inter_op_num_threads = 1
            return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

        one, big = session(1), session(threads)
        row["onnxruntime_export_and_session_s"] = time.perf_counter() - t0

    def logits_ort(sess, a, batch, pool=None):
        n = a.shape[1]
        out = np.empty((n, 10), dtype=np.float32)

        def run(s):
            chunk = np.ascontiguousarray(a[:, s:s + batch].T, dtype=np.float32)
            out[s:s + chunk.shape[0]] = sess.run(None, {"x": chunk})[0]

        if pool is None:
            for s in range(0, n, batch):
                run(s)
        else:
            list(pool.map(run, range(0, n, batch)))
        return out

    with ThreadPoolExecutor(max_workers=threads) as pool:
        variants = {"onnxruntime_4096_workers": lambda a: logits_ort(one, a, 4096, pool),
                    "onnxruntime_65536_intra": lambda a: logits_ort(big, a, 65536)}
        for name, fn in variants.items():
            t, logits = timed(fn, x, repeats)
            p = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
            row[f"{name}_s"] = t
            row[f"{name}_speedup_vs_torch"] = row["torch_s"] / t
            row[f"{name}_same_classes"] = bool(np.array_equal(logits.argmax(1), cls))
            row[f"{name}_max_abs_diff_proba"] = float(np.abs(p - prob).max())
    row["onnxruntime"] = ort.__version__
    row["load_average_1min_after"] = os.getloadavg()[0]
    print("pixel_predict", json.dumps(row, indent=1), flush=True)
    return row


class _Wrap:
    pass


def _wrap_pixel(dense):
    import torch

    class Pixel(torch.nn.Module):
        def forward(self, x):
            return dense.logits(x)

    return Pixel()


_Wrap = lambda dense: _wrap_pixel(dense)  # noqa: E731


if __name__ == "__main__":
    main()
