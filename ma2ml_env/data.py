"""Datasets for real child training, held as tensors (no DataLoader in the hot loop).

:func:`load_dataset` returns an :class:`ImageData`: ``uint8`` images in ``NCHW`` layout and ``int64``
labels for three disjoint splits:

- ``train``: what the child is trained on during the search;
- ``val``: held out from the *training* part with a fixed seeded split; the search reward is the
  accuracy on it;
- ``test``: the dataset's own test split (or a fixed held-out part); never used for the reward, only by
  :func:`ma2ml_env.rewards.train.train_final` to report the final pipeline.

Built-in datasets (``name``):

==============  ==========================================================================================
``digits``      scikit-learn's embedded 8x8 grey digits (1,797 images, 10 classes). Default; no files.
                Test: a fixed stratified 20% split (seed 0); val: ``val_fraction`` of the rest.
``cifar10``     ``torchvision.datasets.CIFAR10`` from ``root`` (``root/cifar-10-batches-py``).
``cifar100``    ``torchvision.datasets.CIFAR100`` from ``root`` (``root/cifar-100-python``).
``imagefolder`` ``torchvision.datasets.ImageFolder`` from ``root``: ``root/train`` and ``root/test`` (or
                ``root/val``) if present, else ``root`` itself split 80/20; images resized to
                ``image_size``.
``synthetic``   seeded class-dependent patterns plus noise (learnable), for speed tests: ``size``,
                ``shape=(C, H, W)``, ``num_classes``.
``npz``         your own arrays from one ``.npz`` file at ``root``: ``x_train, y_train, x_test, y_test``;
                images ``uint8`` ``[N, H, W]`` (grey) or ``[N, H, W, C]``; labels integers ``0..K-1``
                (``K`` = the largest label + 1). The simplest way to bring any image data.
``fashion_mnist`` Fashion-MNIST from the standard IDX files (``train-images-idx3-ubyte.gz``,
                ``train-labels-idx1-ubyte.gz``, ``t10k-...``; ``.gz`` or uncompressed) under ``root``;
                default root :data:`FASHION_MNIST_ROOT` where it exists (Debian's package
                ``dataset-fashion-mnist`` installs the files there).
``mnist``       MNIST from the same IDX files under ``root``.
==============  ==========================================================================================

Downloads happen only with ``download=True``; a missing dataset raises ``FileNotFoundError`` naming the
path and the option. This module imports torch: import it only where real training happens.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ma2ml_env.imports import import_module

__all__ = ["DATASETS", "FASHION_MNIST_ROOT", "ImageData", "check_dataset_location", "load_dataset"]

#: The dataset names :func:`load_dataset` knows.
DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic", "npz", "fashion_mnist", "mnist")

#: Where Debian's ``dataset-fashion-mnist`` puts the IDX files: the default root of ``fashion_mnist``.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class ImageData:
    """A classification dataset as tensors.

    Attributes:
        name: dataset name.
        train_x, val_x, test_x: ``uint8`` images ``[N, C, H, W]``.
        train_y, val_y, test_y: ``int64`` labels ``[N]``.
        num_classes: number of classes.
        mean, std: per-channel statistics of ``train_x`` scaled to ``[0, 1]`` (for normalisation).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors())

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: str | torch.device) -> ImageData:
        """A copy with every split on ``device`` (a no-op when already there)."""
        device = torch.device(device)
        if self.train_x.device == device:
            return self
        names = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
        return dataclasses.replace(self, **{n: getattr(self, n).to(device) for n in names})

    def merged_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The full training set (``train + val``), for the final training of the best pipeline."""
        return torch.cat([self.train_x, self.val_x]), torch.cat([self.train_y, self.val_y])

    def __repr__(self) -> str:
        c, (h, w) = self.channels, self.image_size
        return (
            f"ImageData({self.name!r}, {c}x{h}x{w}, classes={self.num_classes}, train={len(self.train_y)}, "
            f"val={len(self.val_y)}, test={len(self.test_y)}, device={self.device})"
        )


# -- helpers -------------------------------------------------------------------------------------------
def _split(n: int, fraction: float, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (stratified when labels are given) split of ``range(n)``: (kept, held_out) index arrays."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fractions must lie in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    if labels is None:
        perm = rng.permutation(n)
        k = max(1, round(n * fraction))
        return np.sort(perm[k:]), np.sort(perm[:k])
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        held.append(idx[: round(len(idx) * fraction)])
    held_out = np.sort(np.concatenate(held))
    mask = np.ones(n, dtype=bool)
    mask[held_out] = False
    return np.flatnonzero(mask), held_out


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    xf = x.float().div_(255.0)
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _make(
    name: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    val_fraction: float,
    split_seed: int,
    max_train: int | None,
) -> ImageData:
    keep, held = _split(len(train_y), val_fraction, split_seed, train_y.numpy())
    if max_train is not None and max_train < len(keep):
        # a seeded subset of the training part; the validation split stays the same
        keep = np.sort(np.random.default_rng(split_seed + 1).permutation(keep)[:max_train])
    tr_x, tr_y = train_x[torch.from_numpy(keep)], train_y[torch.from_numpy(keep)]
    mean, std = _stats(tr_x)
    return ImageData(
        name=name,
        train_x=tr_x.contiguous(),
        train_y=tr_y.contiguous(),
        val_x=train_x[torch.from_numpy(held)].contiguous(),
        val_y=train_y[torch.from_numpy(held)].contiguous(),
        test_x=test_x.contiguous(),
        test_y=test_y.contiguous(),
        num_classes=num_classes,
        mean=mean,
        std=std,
    )


def _missing(name: str, path: Path, extra: str = "") -> FileNotFoundError:
    return FileNotFoundError(
        f"dataset {name!r} not found at {str(path)!r}{extra}. Put the data there, point root=... at it, or pass "
        f"download=True to download it (e.g. reward_kwargs={{'dataset': {name!r}, 'root': ..., 'download': True}})."
    )


# -- the loaders ---------------------------------------------------------------------------------------
def _load_digits(val_fraction: float, split_seed: int, max_train: int | None) -> ImageData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)  # [N, 1, 8, 8]
    y = torch.from_numpy(d.target.astype(np.int64))
    # the test split is fixed (seed 0) whatever split_seed is, so test images never leak into a search
    train_idx, test_idx = _split(len(y), 0.2, 0, d.target)
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return _make("digits", x[tr], y[tr], x[te], y[te], 10, val_fraction, split_seed, max_train)


def _load_cifar(
    name: str, root: str | os.PathLike | None, download: bool, check_md5: bool, val_fraction: float,
    split_seed: int, max_train: int | None,
) -> ImageData:
    datasets = import_module("torchvision.datasets")

    base_cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    if root is None:
        raise ValueError(
            f"dataset {name!r} needs root=<folder that holds {base_cls.base_folder}/> (and download=True to fetch it)"
        )
    folder = Path(root).expanduser() / base_cls.base_folder
    if not download and not folder.is_dir():
        raise _missing(name, folder)
    cls = base_cls
    if not check_md5:
        # same loader, files only checked for existence (for re-packed or subset copies)
        cls = type(
            base_cls.__name__,
            (base_cls,),
            {
                "train_list": [[f, None] for f, _ in base_cls.train_list],
                "test_list": [[f, None] for f, _ in base_cls.test_list],
                "meta": {**base_cls.meta, "md5": None},
            },
        )
    try:
        train = cls(str(Path(root).expanduser()), train=True, download=download)
        test = cls(str(Path(root).expanduser()), train=False, download=download)
    except RuntimeError as exc:
        raise _missing(
            name, folder, f" or corrupted ({exc}; pass check_md5=False for copies with other checksums)"
        ) from exc

    def tensors(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # HWC -> CHW
        return x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64)

    (tx, ty), (sx, sy) = tensors(train), tensors(test)
    return _make(name, tx, ty, sx, sy, len(train.classes), val_fraction, split_seed, max_train)


def _load_imagefolder(
    root: str | os.PathLike | None, image_size: int, val_fraction: float, split_seed: int, max_train: int | None
) -> ImageData:
    datasets = import_module("torchvision.datasets")
    v2 = import_module("torchvision.transforms.v2")

    if root is None:
        raise ValueError("dataset 'imagefolder' needs root=<folder of class sub-folders>")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _missing("imagefolder", root, " (ImageFolder data cannot be downloaded)")
    tf = v2.Compose([v2.PILToTensor(), v2.Resize((image_size, image_size), antialias=True)])

    def load(path: Path, classes: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        ds = datasets.ImageFolder(str(path), transform=tf)
        if classes is not None and ds.classes != classes:
            raise ValueError(f"{path} has classes {ds.classes}, but the training folder has {classes}")
        xs, ys = [], []
        for img, label in ds:
            if img.shape[0] == 1:  # grey images in a colour dataset (or vice versa) -> 3 channels
                img = img.expand(3, -1, -1)
            xs.append(img[:3])
            ys.append(label)
        return torch.stack(xs), torch.tensor(ys, dtype=torch.int64), ds.classes

    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        tx, ty, classes = load(root / "train")
        sx, sy, _ = load(test_dir, classes)
    else:
        x, y, classes = load(root)
        keep, held = _split(len(y), 0.2, 0, y.numpy())
        tx, ty = x[torch.from_numpy(keep)], y[torch.from_numpy(keep)]
        sx, sy = x[torch.from_numpy(held)], y[torch.from_numpy(held)]
    return _make("imagefolder", tx, ty, sx, sy, len(classes), val_fraction, split_seed, max_train)


def _load_synthetic(
    size: int, shape: tuple[int, int, int], num_classes: int, test_size: int | None, noise: float,
    val_fraction: float, split_seed: int, max_train: int | None,
) -> ImageData:
    c, h, w = shape
    g = torch.Generator().manual_seed(1234)
    # smooth class templates (low-resolution noise upsampled) so that conv nets can learn them
    low = torch.rand(num_classes, c, max(2, h // 4), max(2, w // 4), generator=g)
    templates = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    n = size + (test_size if test_size is not None else max(num_classes, size // 5))
    y = torch.arange(n) % num_classes
    y = y[torch.randperm(n, generator=g)]
    x = templates[y] + noise * torch.randn(n, c, h, w, generator=g)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return _make("synthetic", x[:size], y[:size], x[size:], y[size:], num_classes, val_fraction, split_seed, max_train)


def _synthetic_from(kw: dict[str, Any], common: tuple[Any, ...]) -> ImageData:
    shp = tuple(int(v) for v in kw["shape"])
    if len(shp) != 3:
        raise ValueError(f"synthetic shape must be (C, H, W), got {kw['shape']}")
    return _load_synthetic(int(kw["size"]), shp, int(kw["num_classes"]), kw["test_size"], float(kw["noise"]), *common)


def _load_npz(root: str | os.PathLike | None, common: tuple[Any, ...]) -> ImageData:
    if root is None:
        raise ValueError("dataset 'npz' needs root=<path of an .npz file with x_train, y_train, x_test, y_test>")
    path = Path(root).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"dataset 'npz': no file at {str(path)!r}; root must be the path of an .npz file "
                                "with arrays x_train, y_train, x_test, y_test")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
        if missing:
            raise ValueError(f"{path} lacks arrays {missing}; it has {sorted(f.files)}. Save it with "
                             "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
        arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    return _from_arrays("npz", str(path), arrays, common)


def _from_arrays(name: str, where: str, a: Mapping[str, np.ndarray], common: tuple[Any, ...]) -> ImageData:
    """Validate uint8 ``[N, H, W]`` / ``[N, H, W, C]`` images and integer labels, then build the splits."""
    xs = {}
    for split in ("train", "test"):
        x, y = a[f"x_{split}"], a[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim not in (3, 4):
            raise ValueError(f"{where}: x_{split} must be uint8 images [N, H, W] or [N, H, W, C], got dtype "
                             f"{x.dtype} and shape {x.shape}")
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
            raise ValueError(f"{where}: y_{split} must be one integer label per image ({len(x)}), got dtype "
                             f"{y.dtype} and shape {y.shape}")
        if len(y) and y.min() < 0:
            raise ValueError(f"{where}: y_{split} has negative labels; labels must be 0..K-1")
        xs[split] = (x[:, :, :, None] if x.ndim == 3 else x), y.astype(np.int64)
    (tx, ty), (sx, sy) = xs["train"], xs["test"]
    if tx.shape[1:] != sx.shape[1:]:
        raise ValueError(f"{where}: train images are {tx.shape[1:]} but test images are {sx.shape[1:]}")
    if len(ty) < 2:
        raise ValueError(f"{where}: x_train needs at least 2 images, got {len(ty)}")
    k = int(max(ty.max(), sy.max() if len(sy) else 0)) + 1

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW

    return _make(name, t(tx), torch.from_numpy(ty), t(sx), torch.from_numpy(sy), k, *common)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian magic, dimension sizes, then uint8 data), ``.gz`` or plain."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    head = int.from_bytes(raw[:4], "big")
    if head != magic:
        raise ValueError(f"{path} is not an IDX file of the expected kind (magic {head}, expected {magic})")
    nd = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd)]
    data = np.frombuffer(bytearray(raw), dtype=np.uint8, offset=4 + 4 * nd)  # a writable copy (torch wants one)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {data.size} bytes of data for dimensions {dims}")
    return data.reshape(dims)


def _load_idx(name: str, root: str | os.PathLike | None, common: tuple[Any, ...]) -> ImageData:
    if root is None:
        if name == "fashion_mnist" and Path(FASHION_MNIST_ROOT).is_dir():
            root = FASHION_MNIST_ROOT
        else:
            hint = " (apt-get install dataset-fashion-mnist puts them in " + FASHION_MNIST_ROOT + ")" \
                if name == "fashion_mnist" else ""
            raise ValueError(f"dataset {name!r} needs root=<folder of the IDX files train-images-idx3-ubyte.gz, "
                             f"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz>{hint}")
    folder = Path(root).expanduser()
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        for kind, magic, key in (("images-idx3", 2051, "x"), ("labels-idx1", 2049, "y")):
            stem = f"{prefix}-{kind}-ubyte"
            path = next((folder / f for f in (stem + ".gz", stem) if (folder / f).is_file()), None)
            if path is None:
                raise FileNotFoundError(f"dataset {name!r}: {stem}.gz (or {stem}) not found in {str(folder)!r}; "
                                        "point root=... at the folder of the four IDX files")
            arrays[f"{key}_{split}"] = _read_idx(path, magic)
    return _from_arrays(name, str(folder), arrays, common)


#: dataset name -> loader(keyword arguments of load_dataset, (val_fraction, split_seed, max_train))
_LOADERS: dict[str, Callable[[dict[str, Any], tuple[Any, ...]], ImageData]] = {
    "digits": lambda kw, common: _load_digits(*common),
    "cifar10": lambda kw, common: _load_cifar("cifar10", kw["root"], kw["download"], kw["check_md5"], *common),
    "cifar100": lambda kw, common: _load_cifar("cifar100", kw["root"], kw["download"], kw["check_md5"], *common),
    "imagefolder": lambda kw, common: _load_imagefolder(kw["root"], int(kw["image_size"]), *common),
    "synthetic": _synthetic_from,
    "npz": lambda kw, common: _load_npz(kw["root"], common),
    "fashion_mnist": lambda kw, common: _load_idx("fashion_mnist", kw["root"], common),
    "mnist": lambda kw, common: _load_idx("mnist", kw["root"], common),
}
assert tuple(_LOADERS) == DATASETS


def load_dataset(
    name_or_spec: str | Mapping[str, Any] | ImageData = "digits",
    root: str | os.PathLike | None = None,
    download: bool = False,
    *,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    max_train: int | None = None,
    image_size: int = 32,
    check_md5: bool = True,
    size: int = 50_000,
    shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    test_size: int | None = None,
    noise: float = 0.25,
    device: str | torch.device | None = None,
) -> ImageData:
    """Load a dataset as tensors with a seeded train / validation split and a separate test split.

    Args:
        name_or_spec: a name from :data:`DATASETS`, a dict ``{"name": ..., **these keyword arguments}``,
            or an :class:`ImageData` (returned as is, moved to ``device``).
        root: data folder (CIFAR: the folder holding ``cifar-10-batches-py``; ImageFolder: the image root;
            MNIST / Fashion-MNIST: the folder of the IDX files; npz: the file).
        download: download CIFAR into ``root`` if missing (nothing is ever downloaded otherwise).
        val_fraction: fraction of the training part held out (stratified) as the validation split.
        split_seed: seed of the validation split (and of the ``max_train`` subset).
        max_train: keep at most this many training images (a seeded subset; for fast tests).
        image_size: ImageFolder images are resized to ``image_size x image_size``.
        check_md5: verify CIFAR files' checksums (``False`` accepts re-packed copies; files must exist).
        size, shape, num_classes, test_size, noise: the ``synthetic`` dataset (training images, ``(C, H,
            W)``, classes, test images (default ``size // 5``), noise level).
        device: move every split there (``None``: stay on the CPU).

    Raises:
        FileNotFoundError: the data is not at ``root``; the message names the path and ``download=True``.
        ValueError: unknown name or bad argument.
    """
    if isinstance(name_or_spec, ImageData):
        return name_or_spec if device is None else name_or_spec.to(device)
    kwargs: dict[str, Any] = {
        "root": root, "download": download, "val_fraction": val_fraction, "split_seed": split_seed,
        "max_train": max_train, "image_size": image_size, "check_md5": check_md5, "size": size, "shape": shape,
        "num_classes": num_classes, "test_size": test_size, "noise": noise, "device": device,
    }
    if isinstance(name_or_spec, Mapping):
        spec = dict(name_or_spec)
        name = spec.pop("name", None)
        unknown = sorted(set(spec) - set(kwargs))
        if unknown:
            raise ValueError(f"unknown dataset spec keys {unknown}; allowed: ['name', *{sorted(kwargs)}]")
        kwargs.update(spec)
    else:
        name = name_or_spec
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; use one of {list(DATASETS)}, a spec dict or an ImageData")
    if not 0.0 < kwargs["val_fraction"] < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {kwargs['val_fraction']}")
    common = (kwargs["val_fraction"], kwargs["split_seed"], kwargs["max_train"])
    data = _LOADERS[name](kwargs, common)
    return data if kwargs["device"] is None else data.to(kwargs["device"])


def check_dataset_location(
    dataset: Any, root: str | os.PathLike | None = None, download: bool = False
) -> None:
    """Check, without loading anything, that a dataset argument of :class:`TrainEvaluator` can be found:
    a known name, and for file-backed datasets a ``root`` that exists (CIFAR: unless ``download=True``).

    Raises:
        ValueError: naming the dataset, the path looked at and how to fix it.
    """
    if isinstance(dataset, ImageData):
        return
    if isinstance(dataset, Mapping):
        spec = dict(dataset)
        name = spec.get("name")
        root = spec.get("root", root)
        download = spec.get("download", download)
    else:
        name = dataset
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; use one of {list(DATASETS)}, a spec dict or an ImageData"
        )
    how = f"pass root=<folder> (reward_kwargs={{'dataset': {name!r}, 'root': ...}}; CLI: --data-root)"
    if name in ("cifar10", "cifar100"):
        folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
        if root is None:
            raise ValueError(
                f"dataset {name!r} needs the folder that holds {folder}/: {how}, and download=True "
                "to fetch it there"
            )
        path = Path(root).expanduser() / folder
        if not path.is_dir() and not download:
            raise ValueError(
                f"dataset {name!r} not found: {str(path)!r} does not exist. Put the data there, point "
                f"root=... at the folder that holds {folder}/, or pass download=True to download it"
            )
    elif name == "imagefolder":
        if root is None:
            raise ValueError(f"dataset 'imagefolder' needs root=<folder of class sub-folders>: {how}")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ValueError(
                f"dataset 'imagefolder' not found: {str(path)!r} is not a folder; point root=... at "
                "the folder of class sub-folders (ImageFolder data cannot be downloaded)"
            )
    elif name == "npz":
        if root is None:
            raise ValueError(
                "dataset 'npz' needs root=<path of an .npz file with x_train, y_train, x_test, y_test>"
            )
        path = Path(root).expanduser()
        if not path.is_file():
            raise ValueError(
                f"dataset 'npz' not found: no file at {str(path)!r}; root must be the path of an "
                ".npz file with x_train, y_train, x_test, y_test"
            )
    elif name in ("mnist", "fashion_mnist"):
        if root is None:
            if name == "fashion_mnist" and Path(FASHION_MNIST_ROOT).is_dir():
                return
            hint = f" (apt-get install dataset-fashion-mnist puts them in {FASHION_MNIST_ROOT})" \
                if name == "fashion_mnist" else ""
            raise ValueError(f"dataset {name!r} needs root=<folder of the four IDX files>{hint}: {how}")
        folder = Path(root).expanduser()
        stem = "train-images-idx3-ubyte"
        if not any((folder / f).is_file() for f in (stem + ".gz", stem)):
            raise ValueError(
                f"dataset {name!r} not found: no {stem}.gz (or {stem}) in {str(folder)!r}; point "
                "root=... at the folder of the four IDX files"
            )
