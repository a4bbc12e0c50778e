"""Real image data for reward="train": a user's .npz arrays and the MNIST / Fashion-MNIST IDX files.

Small files made here (every value known); Debian's Fashion-MNIST where it is installed.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from ma2ml_env.data import FASHION_MNIST_ROOT, load_dataset
from ma2ml_env.pipeline import Architecture, Pipeline, Stage
from ma2ml_env.rewards.train import TrainEvaluator

TINY = Architecture(resolution=8, stem_width=16, stages=(Stage(3, 1, 16, 1, 1), Stage(3, 2, 24, 1, 2)), head_width=64)
GOOD = Pipeline(arch=TINY).with_train(optimizer="sgd", lr=0.1, batch_size=32, epochs=2)


def _evaluate(ev, pipelines, seeds):
    """Each pipeline with its seed through ``ev.evaluate_pipeline`` (the PipelineEvaluator method), in order."""
    if len(pipelines) != len(seeds):
        raise ValueError(f"got {len(pipelines)} pipelines but {len(seeds)} seeds; pass one seed per pipeline")
    return [ev.evaluate_pipeline(p, s) for p, s in zip(pipelines, seeds)]


def _patterns(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable uint8 images: class c is bright in row block c (3 classes), plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, *shape)).astype(np.uint8)
    h = shape[0] // 3
    for c in range(3):
        x[y == c, c * h:(c + 1) * h] += 150
    return x, y


def _write_npz(path: Path, shape=(8, 8), n=300, **override) -> Path:
    xt, yt = _patterns(n, shape, 0)
    xs, ys = _patterns(60, shape, 1)
    arrays = {"x_train": xt, "y_train": yt, "x_test": xs, "y_test": ys, **override}
    np.savez(path, **arrays)
    return path


def _write_idx(folder: Path, compress: bool, n_train=120, n_test=30) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    xt, yt = _patterns(n_train, (9, 7), 2)
    xs, ys = _patterns(n_test, (9, 7), 3)
    out = {}
    for prefix, x, y in (("train", xt, yt), ("t10k", xs, ys)):
        for kind, magic, arr in (("images-idx3", 2051, x), ("labels-idx1", 2049, y.astype(np.uint8))):
            body = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
            name = f"{prefix}-{kind}-ubyte"
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(body))
            else:
                (folder / name).write_bytes(body)
            out[f"{prefix}-{kind}"] = arr
    return out


# -- npz ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 3)], ids=["HW", "HWC"])
def test_npz_arrays_become_nchw_splits(tmp_path, shape):
    path = _write_npz(tmp_path / "d.npz", shape=shape)
    d = load_dataset("npz", root=path, val_fraction=0.2)
    c = 1 if len(shape) == 2 else 3
    assert d.train_x.shape[1:] == (c, 8, 8) and d.train_x.dtype == torch.uint8
    assert d.num_classes == 3 and len(d.train_y) + len(d.val_y) == 300 and len(d.test_y) == 60
    raw = np.load(path)
    # test split is the file's own, in order and unchanged (HWC -> CHW)
    want = raw["x_test"] if len(shape) == 3 else raw["x_test"][..., None]
    assert torch.equal(d.test_x, torch.from_numpy(want).permute(0, 3, 1, 2))
    assert d.test_y.tolist() == raw["y_test"].tolist()


def test_npz_trains_a_child(tmp_path):
    ev = TrainEvaluator(dataset="npz", root=str(_write_npz(tmp_path / "d.npz")), device="cpu", epoch_scale=1.0)
    r = _evaluate(ev, [GOOD], [0])[0]
    assert r.status == "ok" and r.accuracy > 0.6, r  # 3 classes: chance is 1/3


@pytest.mark.parametrize(("override", "match"), [
    ({"x_train": np.zeros((300, 8, 8), np.float32)}, r"x_train must be uint8 images \[N, H, W\]"),
    ({"y_train": np.zeros(299, np.int64)}, r"y_train must be one integer label per image \(300\)"),
    ({"y_test": np.full(60, -1)}, "y_test has negative labels"),
    ({"x_test": np.zeros((60, 9, 8), np.uint8)}, r"train images are \(8, 8, 1\) but test images are \(9, 8, 1\)"),
])
def test_bad_npz_arrays_are_refused_with_the_rule(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("npz", root=_write_npz(tmp_path / "d.npz", **override))


def test_npz_missing_keys_and_file(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError,
                       match=r"lacks arrays \['x_train', 'y_train', 'x_test', 'y_test'\]; it has \['images'\]"):
        load_dataset("npz", root=tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="no file at"):
        load_dataset("npz", root=tmp_path / "nope.npz")
    with pytest.raises(ValueError, match=r"needs root=<path of an .npz file"):
        load_dataset("npz")


# -- IDX (MNIST / Fashion-MNIST) ---------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_idx_files_are_read_exactly(tmp_path, compress):
    raw = _write_idx(tmp_path / "m", compress)
    d = load_dataset("mnist", root=tmp_path / "m", val_fraction=0.25)
    assert d.train_x.shape[1:] == (1, 9, 7) and d.num_classes == 3
    assert torch.equal(d.test_x[:, 0], torch.from_numpy(raw["t10k-images-idx3"]))
    assert d.test_y.tolist() == raw["t10k-labels-idx1"].tolist()
    assert len(d.train_y) + len(d.val_y) == 120


def test_idx_errors_name_the_file(tmp_path):
    _write_idx(tmp_path / "m", True)
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte.gz \(or t10k-labels-idx1-ubyte\) not found"):
        load_dataset("fashion_mnist", root=tmp_path / "m")
    _write_idx(tmp_path / "t", True)
    p = tmp_path / "t" / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-5]))
    with pytest.raises(ValueError, match="is truncated"):
        load_dataset("mnist", root=tmp_path / "t")
    _write_idx(tmp_path / "s", False)
    images = (tmp_path / "s" / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "s" / "train-labels-idx1-ubyte").write_bytes(images)  # an images file under a labels name
    with pytest.raises(ValueError, match="not an IDX file of the expected kind"):
        load_dataset("mnist", root=tmp_path / "s")
    with pytest.raises(ValueError, match="dataset 'mnist' needs root="):
        load_dataset("mnist")


@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_debian_fashion_mnist_is_the_default_root():
    d = load_dataset("fashion_mnist", max_train=500)
    assert d.image_size == (28, 28) and d.channels == 1 and d.num_classes == 10
    assert len(d.test_y) == 10_000 and len(d.val_y) == 12_000 and len(d.train_y) == 500
    assert sorted(set(d.test_y.tolist())) == list(range(10))
    assert torch.bincount(d.test_y).tolist() == [1000] * 10  # Fashion-MNIST's balanced test split
