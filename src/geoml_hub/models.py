"""Model families and the geoml-hub model file.

Families (:data:`FAMILIES`): ``cnn`` (the PyTorch network below), and three scikit-learn
families on the features of :mod:`geoml_hub.features` (per-band statistics of patches, band
values of pixels, spectral indices): ``forest`` (``RandomForestClassifier``), ``boosting``
(``HistGradientBoostingClassifier``) and ``ensemble`` (a soft-voting ``VotingClassifier`` of
the two). :meth:`Model.predict_proba` is the one interface of all of them.

One architecture family, :class:`geoml_hub.networks.PatchCNN`, serves both patch
classifiers (EuroSAT 64×64 patches) and pixel classifiers (patch size 1, iota2-style):
a per-band normalisation layer, ``len(widths)`` convolution blocks (two 3×3 convolutions
with batch normalisation and ReLU; 1×1 convolutions for patches smaller than 3 pixels),
max-pooling after a block while the feature map is at least 8 pixels, global average
pooling (optionally with the per-band mean and standard deviation of the normalised
input), dropout and a linear classifier.

The model file (``torch.save`` of a plain dictionary, loaded with ``weights_only=True``)
holds the family (``cnn`` when absent: files written before the other families), the
weights (CNN) or the fitted estimator (scikit-learn families: serialised with ``skops.io``
into a ``uint8`` tensor, loaded only if it holds no type beyond skops' trusted ones and the
fitted trees, :data:`TRUSTED_TYPES`), the feature description (scikit-learn families),
the architecture and the hyper-parameters, the class names and codes, the bands of the
samples the model reads, the normalisation statistics, the library versions, the SHA-256
of the training manifest and (optional, ``spectral``) per-band statistics of the training data
for :mod:`geoml_hub.compatibility`. :func:`load_model` checks all of them.
"""

from __future__ import annotations

import hashlib
import platform
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import __version__
from .errors import ModelError, ParameterError
from .features import compute_features
from .fileio import PathLike, atomic_path

FORMAT = "geoml-hub-model"
#: Format version this geoml-hub reads; CNN files are still written as version 1 (unchanged
#: layout, readable by older versions), scikit-learn families as version 2.
FORMAT_VERSION = 2
#: The model families, the first the default of old files.
FAMILIES = ("cnn", "forest", "boosting", "ensemble")
#: Types a scikit-learn model file may hold beyond those skops trusts by default (the fitted trees
#: of the three tree families); a file holding any other type is refused.
TRUSTED_TYPES = frozenset({"sklearn.tree._tree.Tree",
                           "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
                           "sklearn.utils._bunch.Bunch"})
_REQUIRED = ("format", "format_version", "state_dict", "architecture", "hyperparameters", "classes",
             "bands", "sample_bands", "normalization", "versions", "manifest_sha256")


def _torch():
    # imported here: torch takes seconds to load; reading a model's metadata, the WPS and the hub need none
    import torch

    return torch


def build_network(architecture: Dict) -> "torch.nn.Module":
    """Build the network described by ``architecture`` (as stored in a model file).

    ``architecture`` keys: ``name`` (``"patch_cnn"``), ``in_bands``, ``n_classes``,
    ``patch_size`` ``[rows, cols]``, ``widths`` (channels of each convolution block),
    ``dropout``, ``band_statistics`` and ``log_input`` (bools). See :class:`geoml_hub.networks.PatchCNN`.

    Raises
    ------
    ModelError
        If the architecture name is unknown.
    """
    name = architecture.get("name")
    if name != "patch_cnn":
        raise ModelError(f"unknown architecture {name!r}")
    from .networks import PatchCNN  # imported here: networks imports torch (see _torch)

    rows, cols = (int(v) for v in architecture["patch_size"])
    return PatchCNN(int(architecture["in_bands"]), int(architecture["n_classes"]), min(rows, cols),
                    [int(w) for w in architecture["widths"]], float(architecture.get("dropout", 0.0)),
                    bool(architecture.get("band_statistics", False)), bool(architecture.get("log_input", False)))


def manifest_hash(samples: Sequence) -> str:
    """SHA-256 of a training manifest: ``class/file name,index`` lines, sorted.

    Only the class directory and file name enter the hash, so moving the whole tree
    does not change it.
    """
    lines = sorted(f"{s.class_name}/{Path(s.file).name},{s.index}" for s in samples)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def library_versions(family: str = "cnn") -> Dict[str, str]:
    """Versions of the libraries a model file depends on (scikit-learn and skops too for the
    scikit-learn families)."""
    torch = _torch()
    out = {"geoml_hub": __version__, "torch": str(torch.__version__), "numpy": str(np.__version__),
           "python": platform.python_version()}
    if family != "cnn":
        import sklearn  # imported here: only the tree families need it
        import skops

        out.update(sklearn=str(sklearn.__version__), skops=str(skops.__version__))
    return out


@dataclass
class Model:
    """A loaded, checked classifier.

    Attributes
    ----------
    network : torch.nn.Module or None
        CNN family (``None`` for the scikit-learn families): in evaluation mode on
        :attr:`device`; input ``(batch, len(bands), rows, cols)`` float32 raw values
        (normalisation is inside the network), output logits ``(batch, n_classes)``.
    class_names : list of str
        Ordered as the network outputs.
    class_codes : list of int
        Code of each output (written to classification rasters).
    bands : list of int
        1-based indexes, into the bands of the training samples, that the network reads.
    sample_bands : int
        Band count of the training samples.
    patch_size : tuple of int
        ``(rows, cols)`` in pixels.
    meta : dict
        Everything else in the file (architecture, hyper-parameters, normalisation,
        versions, manifest hash, training history, the feature description).
    family : str
        One of :data:`FAMILIES`.
    estimator : object
        The fitted scikit-learn classifier (``None`` for the CNN); it reads the features of
        :func:`geoml_hub.features.compute_features` with ``meta['features']``.
    """

    network: object
    class_names: List[str]
    class_codes: List[int]
    bands: List[int]
    sample_bands: int
    patch_size: tuple
    device: str
    meta: Dict = field(default_factory=dict)
    family: str = "cnn"
    estimator: object = None

    @property
    def is_pixel_model(self) -> bool:
        """True when the model classifies single pixels (patch size 1×1)."""
        return tuple(self.patch_size) == (1, 1)

    def predict_proba(self, x: np.ndarray, batch_size: int = 256, tta: bool = False) -> np.ndarray:
        """Class probabilities of samples.

        Parameters
        ----------
        x : numpy.ndarray
            ``(N, len(bands), rows, cols)`` raw values (any numeric dtype).
        batch_size : int
        tta : bool
            Test-time augmentation: average the probabilities over the 8 flips and
            90° rotations of each patch (square patches larger than 1 pixel; 8× the cost).

        Returns
        -------
        numpy.ndarray
            ``(N, n_classes)`` float32 probabilities.
        """
        if self.family != "cnn":
            return self._predict_proba_trees(x, batch_size)
        torch = _torch()
        out = np.empty((len(x), len(self.class_names)), dtype=np.float32)
        rows, cols = self.patch_size
        views = _DIHEDRAL if tta and rows == cols and rows > 1 else _DIHEDRAL[:1]
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                chunk = np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32)
                xb = torch.from_numpy(chunk if chunk.flags.writeable else chunk.copy()).to(self.device)
                prob = sum(torch.softmax(self.network(view(xb)), dim=1) for view in views) / len(views)
                out[start:start + len(xb)] = prob.cpu().numpy()
        return out

    def _predict_proba_trees(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        """Scikit-learn families: features of whole chunks (all pixels of a window at once)."""
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency; see training.single_thread

        out = np.zeros((len(x), len(self.class_names)), dtype=np.float32)
        chunk = max(batch_size, 65536 if self.is_pixel_model else 1024)
        cols = np.asarray(self.estimator.classes_, dtype=np.int64)  # class indexes seen in training
        for start in range(0, len(x), chunk):
            feats = compute_features(x[start:start + chunk], self.meta["features"])
            with threadpool_limits(limits=1, user_api="openmp"):
                out[start:start + len(feats), cols] = self.estimator.predict_proba(feats)
        return out


_DIHEDRAL = [lambda t: t, lambda t: t.flip(-1), lambda t: t.flip(-2), lambda t: t.flip(-1).flip(-2),
             lambda t: t.transpose(-1, -2), lambda t: t.transpose(-1, -2).flip(-1),
             lambda t: t.transpose(-1, -2).flip(-2), lambda t: t.transpose(-1, -2).flip(-1).flip(-2)]


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` if PyTorch sees a GPU, else ``cpu``.

    Raises
    ------
    ParameterError
        If ``device`` is not ``auto``, ``cpu`` or ``cuda``, or ``cuda`` is asked for and
        PyTorch sees no GPU.
    """
    torch = _torch()
    if device not in ("auto", "cpu", "cuda"):
        raise ParameterError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device cuda requested but PyTorch sees no CUDA GPU")
    return device


def save_model(path: PathLike, network, *, architecture: Dict, hyperparameters: Dict, class_names: Sequence[str],
               class_codes: Sequence[int], bands: Sequence[int], sample_bands: int, mean: Sequence[float],
               std: Sequence[float], manifest_sha256: str, training: Optional[Dict] = None, family: str = "cnn",
               estimator=None, features: Optional[Dict] = None, spectral: Optional[Dict] = None) -> Path:
    """Write a model file atomically (see the module docstring for its content).

    ``network`` is the CNN (``None`` for a scikit-learn family, whose fitted ``estimator``
    and feature description ``features`` are stored instead). ``mean``/``std``: per-band
    statistics of the training samples in raw units (every family). ``spectral``: optional
    per-band statistics of the training data in raw units
    (:func:`geoml_hub.compatibility.training_statistics`), stored under the ``spectral`` key
    for the compatibility check; files without it fall back on ``normalization``.

    Raises
    ------
    ModelError
        If ``family`` is unknown, or a scikit-learn family lacks its estimator or features.
    """
    torch = _torch()
    if family not in FAMILIES:
        raise ModelError(f"unknown model family {family!r} (one of {', '.join(FAMILIES)})")
    extra: Dict = {"family": family}
    if family == "cnn":
        state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
        version = 1
    else:
        if estimator is None or features is None:
            raise ModelError(f"a {family} model needs its fitted estimator and feature description")
        import skops.io as sio  # imported here: only the tree families need it

        state = {}
        blob = sio.dumps(estimator)
        extra.update(estimator=torch.frombuffer(bytearray(blob), dtype=torch.uint8).clone(), features=dict(features))
        version = 2
    payload = {
        "format": FORMAT, "format_version": version, "state_dict": state, **extra,
        "architecture": dict(architecture), "hyperparameters": dict(hyperparameters),
        "classes": [{"name": str(n), "code": int(c)} for n, c in zip(class_names, class_codes)],
        "bands": [int(b) for b in bands], "sample_bands": int(sample_bands),
        "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "versions": library_versions(family), "manifest_sha256": manifest_sha256, "training": dict(training or {}),
    }
    if spectral is not None:
        payload["spectral"] = dict(spectral)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _load_problem(path: Path, exc: BaseException) -> str:
    """What is wrong with a model file that ``torch.load`` refused, in words."""
    if path.stat().st_size == 0:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head[:2] == b"PK":
            return "the file is truncated"
        return "not a PyTorch model archive"
    if "weights_only" in str(exc) or "Unsupported global" in str(exc):
        return "it holds Python objects that are not loaded for safety; not a geoml-hub model"
    return "the archive is incomplete or corrupt"


def _first_words(exc: BaseException) -> str:
    """What a torch error about loading weights says, in words (e.g. 'weights are missing')."""
    text = str(exc)
    if "Missing key" in text:
        return "weights are missing"
    if "Unexpected key" in text:
        return "unexpected weights"
    if "size mismatch" in text:
        return "weight shapes differ"
    return "weights differ"


def load_model(path: PathLike, device: str = "auto") -> Model:
    """Load and check a model file.

    Parameters
    ----------
    path : path-like
    device : {'auto', 'cpu', 'cuda'}

    Returns
    -------
    Model

    Raises
    ------
    ModelError
        If the file is missing, not a geoml-hub model, of a newer format, or its parts
        disagree (class count, band count, normalisation length, weights).
    """
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files; their texts are torch's internals
        raise ModelError(f"{path}: not a readable model file ({_load_problem(path, exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not a geoml-hub model file")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise ModelError(f"{path}: model file lacks {missing}")
    if int(payload["format_version"]) > FORMAT_VERSION:
        raise ModelError(f"{path}: model format {payload['format_version']} is newer than this geoml-hub "
                         f"supports ({FORMAT_VERSION}); upgrade geoml-hub")
    arch = payload["architecture"]
    classes = payload["classes"]
    bands = payload["bands"]
    norm = payload["normalization"]
    if len(classes) != int(arch.get("n_classes", -1)):
        raise ModelError(f"{path}: {len(classes)} class names but the network has {arch.get('n_classes')} outputs")
    if len(bands) != int(arch.get("in_bands", -1)):
        raise ModelError(f"{path}: band list has {len(bands)} bands but the network reads {arch.get('in_bands')}")
    if len(norm["mean"]) != len(bands) or len(norm["std"]) != len(bands):
        raise ModelError(f"{path}: normalisation statistics do not match the {len(bands)} bands")
    if any(b < 1 or b > int(payload["sample_bands"]) for b in bands):
        raise ModelError(f"{path}: band indexes {bands} outside 1..{payload['sample_bands']}")
    family = str(payload.get("family", "cnn"))
    if family not in FAMILIES:
        raise ModelError(f"{path}: unknown model family {family!r}")
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "estimator")}
    patch_size = tuple(int(v) for v in arch["patch_size"])
    class_names = [c["name"] for c in classes]
    codes = [int(c["code"]) for c in classes]
    if family != "cnn":
        estimator = _load_estimator(path, payload, len(classes))
        return Model(None, class_names, codes, [int(b) for b in bands], int(payload["sample_bands"]), patch_size,
                     "cpu", meta, family, estimator)
    network = build_network(arch)
    try:
        network.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: the weights do not fit the network the file describes (a corrupt or edited "
                         f"model file; {_first_words(exc)})") from None
    stored_mean = network.norm.mean.flatten().tolist()
    if not np.allclose(stored_mean, norm["mean"], rtol=1e-5):
        raise ModelError(f"{path}: normalisation statistics disagree with the network's")
    dev = resolve_device(device)
    network.to(dev).eval()
    return Model(network, class_names, codes, [int(b) for b in bands], int(payload["sample_bands"]), patch_size,
                 dev, meta)


def _load_estimator(path: Path, payload: Dict, n_classes: int):
    """The scikit-learn estimator of a model file, loaded with ``skops.io`` trusting only its
    default types and :data:`TRUSTED_TYPES`.

    Raises
    ------
    ModelError
        If the estimator or the feature description is missing, the file holds another type,
        or the estimator is unreadable or predicts other classes.
    """
    import skops.io as sio  # imported here: only the tree families need it

    blob = payload.get("estimator")
    if blob is None or "features" not in payload:
        raise ModelError(f"{path}: a {payload.get('family')} model file lacks its estimator or feature description")
    data = bytes(blob.numpy().tobytes()) if hasattr(blob, "numpy") else bytes(blob)
    try:
        types = sio.get_untrusted_types(data=data)
    except Exception:  # skops raises many types for damaged archives
        raise ModelError(f"{path}: the stored estimator is unreadable (a corrupt or edited model file)") from None
    foreign = [t for t in types if t not in TRUSTED_TYPES]
    if foreign:
        raise ModelError(f"{path}: the stored estimator holds types that are not loaded for safety: {foreign[:3]}")
    try:
        estimator = sio.loads(data, trusted=types)
    except Exception:  # as above
        raise ModelError(f"{path}: the stored estimator is unreadable (a corrupt or edited model file)") from None
    classes = np.asarray(getattr(estimator, "classes_", []))
    if not len(classes) or classes.min() < 0 or classes.max() >= n_classes:
        raise ModelError(f"{path}: the stored estimator's classes do not match the file's {n_classes} classes")
    return estimator
