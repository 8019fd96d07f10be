"""Dataset specs: Fashion-MNIST IDX, npz, imagefolder, module callables, and the seeded helpers."""

from __future__ import annotations

import gzip
import struct
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from edgecomp.data import EdgeDataset, load_dataset, make_loader, split, subset, take_batch
from edgecomp.data.fashion_mnist import DEFAULT_DIR
from edgecomp.data.idx import parse_idx
from edgecomp.errors import UserInputError

needs_fmnist = pytest.mark.skipif(
    not (DEFAULT_DIR / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed"
)


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


# ---- Fashion-MNIST ----------------------------------------------------------------------------------
@needs_fmnist
@pytest.mark.parametrize("spec, n", [("fashion-mnist", 60000), ("fashion-mnist:train", 60000), ("fashion-mnist:test", 10000)])
def test_fashion_mnist(monkeypatch, spec, n):
    monkeypatch.delenv("EDGECOMP_FASHION_MNIST_DIR", raising=False)
    ds = load_dataset(spec)
    assert isinstance(ds, EdgeDataset) and len(ds) == n
    assert ds.has_labels and ds.num_classes == 10 and ds.sample_shape == (1, 28, 28)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert y.dtype == torch.int64 and y.ndim == 0
    labels = ds.labels()
    assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), n // 10))
    xb, yb = take_batch(ds, 512, seed=0)
    assert xb.shape == (512, 1, 28, 28) and xb.dtype == torch.float32
    assert float(xb.min()) == 0.0 and float(xb.max()) == 1.0
    assert 0.2 < float(xb.mean()) < 0.4  # Fashion-MNIST pixel mean is ~0.286 (no normalization)
    assert torch.allclose(xb[0] * 255, (xb[0] * 255).round(), atol=1e-4)  # pixel / 255
    assert torch.equal(yb, labels[torch.randperm(n, generator=torch.Generator().manual_seed(0))[:512].sort().values])


@needs_fmnist
def test_fashion_mnist_known_first_labels(monkeypatch):
    monkeypatch.delenv("EDGECOMP_FASHION_MNIST_DIR", raising=False)
    # first training labels of the published dataset: Ankle boot, T-shirt/top, T-shirt/top, Dress
    assert load_dataset("fashion-mnist").labels()[:4].tolist() == [9, 0, 0, 3]
    assert load_dataset("fashion-mnist:test").labels()[:4].tolist() == [9, 2, 1, 1]


def test_fashion_mnist_from_env_dir_raw_and_gzip(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    labels = np.arange(20, dtype=np.uint8) % 10
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))  # raw
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    monkeypatch.setenv("EDGECOMP_FASHION_MNIST_DIR", str(tmp_path))
    ds = load_dataset("fashion-mnist:train")
    assert len(ds) == 20
    x, y = ds[3]
    assert torch.allclose(x[0], torch.from_numpy(images[3]).float() / 255)
    assert int(y) == 3
    with pytest.raises(UserInputError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist:test")  # t10k files absent


def test_fashion_mnist_missing_dir_and_bad_split(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMP_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(UserInputError) as info:
        load_dataset("fashion-mnist")
    assert "apt-get install -y dataset-fashion-mnist" in str(info.value)
    assert "EDGECOMP_FASHION_MNIST_DIR" in str(info.value)
    with pytest.raises(UserInputError, match="unknown Fashion-MNIST split 'val'"):
        load_dataset("fashion-mnist:val")


def test_fashion_mnist_inconsistent_files(tmp_path, monkeypatch):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((5, 28, 28))))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4)))
    monkeypatch.setenv("EDGECOMP_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(UserInputError, match="5 images but .* 4 labels"):
        load_dataset("fashion-mnist")


def test_idx_parser():
    a = np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 5
    out = parse_idx(idx_bytes(a, 0x0B))
    assert out.dtype == np.int16 and out.dtype.isnative and np.array_equal(out, a)
    f = np.linspace(0, 1, 6, dtype=np.float32)
    assert np.array_equal(parse_idx(idx_bytes(f, 0x0D)), f)
    good = idx_bytes(np.zeros((2, 2)))
    with pytest.raises(UserInputError, match="bad magic"):
        parse_idx(b"\x01" + good[1:])
    with pytest.raises(UserInputError, match="bad magic"):
        parse_idx(good[:2] + b"\x07" + good[3:])
    with pytest.raises(UserInputError, match="payload is 3 bytes"):
        parse_idx(good[:-1])
    with pytest.raises(UserInputError, match="too short"):
        parse_idx(b"\x00\x00")
    with pytest.raises(UserInputError, match="truncated IDX header"):
        parse_idx(good[:9])


# ---- npz --------------------------------------------------------------------------------------------
def test_npz_labeled_and_unlabeled(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((7, 3, 4, 4))
    y = np.array([0, 2, 1, 2, 0, 1, 4])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert len(ds) == 7 and ds.sample_shape == (3, 4, 4) and ds.has_labels and ds.num_classes == 5
    xi, yi = ds[1]
    assert xi.dtype == torch.float32 and torch.allclose(xi, torch.from_numpy(x[1]).float())
    assert yi.dtype == torch.int64 and yi.ndim == 0 and int(yi) == 2
    assert load_dataset(str(tmp_path / "d.npz")).sample_shape == (3, 4, 4)  # shorthand

    np.savez(tmp_path / "u.npz", x=x.astype(np.float16))
    ds = load_dataset(f"npz:{tmp_path / 'u.npz'}")
    assert not ds.has_labels and ds.num_classes is None
    assert int(ds[0][1]) == -1 and ds[0][0].dtype == torch.float32


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"y": np.zeros(3, dtype=np.int64)}, "no array named 'x'"),
        ({"x": np.zeros((3, 2), dtype=np.uint8)}, "x must be a floating-point array"),
        ({"x": np.zeros(3)}, "at least 2 dimensions"),
        ({"x": np.zeros((0, 2))}, "holds no samples"),
        ({"x": np.array([[np.nan, 1.0]])}, "NaN or infinite"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(4, dtype=np.int64)}, "x has 3 samples but y has 4 labels"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(3)}, "y must be an integer array"),
        ({"x": np.zeros((3, 2)), "y": np.zeros((3, 1), dtype=np.int64)}, r"y must have shape \(N,\)"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, -1, 1])}, "negative label"),
        ({"x": np.array([{"a": 1}], dtype=object)}, r"holds object \(pickled\) arrays"),
    ],
)
def test_npz_bad(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserInputError, match=message):
        load_dataset(f"npz:{path}")


def test_npz_not_an_archive(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserInputError, match="corrupt or not an .npz file"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")
    with pytest.raises(UserInputError, match="file not found"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")


# ---- imagefolder -------------------------------------------------------------------------------------
def make_folder(root, modes: dict[str, list[tuple[str, tuple[int, int]]]]):
    rng = np.random.default_rng(2)
    for cls, images in modes.items():
        (root / cls).mkdir(parents=True)
        for i, (mode, (w, h)) in enumerate(images):
            channels = {"L": (h, w), "RGB": (h, w, 3), "RGBA": (h, w, 4)}[mode]
            Image.fromarray(rng.integers(0, 256, channels, dtype=np.uint8), mode).save(root / cls / f"{i}.png")
    return root


def test_imagefolder_grayscale(tmp_path):
    root = make_folder(tmp_path / "imgs", {"dog": [("L", (6, 5))] * 2, "cat": [("L", (6, 5))] * 3})
    (root / "cat" / "notes.txt").write_text("ignored")
    ds = load_dataset(f"imagefolder:{root}")
    assert len(ds) == 5 and ds.sample_shape == (1, 5, 6)
    assert ds.classes == ("cat", "dog") and ds.num_classes == 2
    assert ds.labels().tolist() == [0, 0, 0, 1, 1]
    x, y = ds[4]
    expected = np.asarray(Image.open(root / "dog" / "1.png"), dtype=np.float32) / 255
    assert torch.allclose(x[0], torch.from_numpy(expected)) and int(y) == 1
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert load_dataset(str(root)).sample_shape == (1, 5, 6)  # a bare directory is an imagefolder


def test_imagefolder_mixed_becomes_rgb(tmp_path):
    root = make_folder(tmp_path / "imgs", {"a": [("L", (4, 4)), ("RGBA", (4, 4))], "b": [("RGB", (4, 4))]})
    ds = load_dataset(f"imagefolder:{root}")
    assert ds.sample_shape == (3, 4, 4)
    gray, _ = ds[0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # L replicated to RGB
    rgb = np.asarray(Image.open(root / "b" / "0.png"), dtype=np.float32).transpose(2, 0, 1) / 255
    assert torch.allclose(ds[2][0], torch.from_numpy(rgb))


def test_imagefolder_errors(tmp_path):
    root = make_folder(tmp_path / "sizes", {"a": [("L", (4, 4))], "b": [("L", (5, 4))]})
    with pytest.raises(UserInputError, match="images differ in size: .*4x4.*5x4"):
        load_dataset(f"imagefolder:{root}")
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(UserInputError, match="class folder 'a' has no images"):
        load_dataset(f"imagefolder:{empty}")
    flat = tmp_path / "flat"
    flat.mkdir()
    with pytest.raises(UserInputError, match="no class sub-folders"):
        load_dataset(f"imagefolder:{flat}")
    broken = make_folder(tmp_path / "broken", {"a": [("L", (4, 4))]})
    (broken / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UserInputError, match="cannot read image .*bad.png"):
        load_dataset(f"imagefolder:{broken}")
    with pytest.raises(UserInputError, match="not a directory"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")


# ---- module callables ----------------------------------------------------------------------------------
DATA_MODULE = textwrap.dedent(
    """
    import numpy as np
    import torch
    from torch.utils.data import Dataset, TensorDataset

    def labeled():
        g = torch.Generator().manual_seed(0)
        return TensorDataset(torch.rand(6, 2, 3, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2]))

    class Unlabeled(Dataset):
        def __len__(self):
            return 4
        def __getitem__(self, i):
            return np.full((5,), i, dtype=np.float32)

    class WithClasses(Dataset):
        classes = ["no", "yes"]
        def __len__(self):
            return 2
        def __getitem__(self, i):
            return torch.zeros(3), i

    def features():
        return TensorDataset(torch.ones(2, 3))

    def ints():
        return TensorDataset(torch.zeros(2, 3, dtype=torch.int64))

    def broken():
        raise RuntimeError("boom")

    NOT_CALLABLE = 3
    """
)


@pytest.fixture()
def data_module(tmp_path, monkeypatch):
    path = tmp_path / "user_data_mod.py"
    path.write_text(DATA_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return path


def test_callable_from_file_and_module(data_module):
    ds = load_dataset(f"{data_module}:labeled")
    assert len(ds) == 6 and ds.sample_shape == (2, 3) and ds.has_labels
    x, y = ds[2]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and y.ndim == 0 and int(y) == 2
    xb, yb = take_batch(ds, 6)
    assert xb.shape == (6, 2, 3) and yb.tolist() == [0, 1, 2, 0, 1, 2]

    ds = load_dataset("user_data_mod:Unlabeled")
    assert not ds.has_labels and ds.num_classes is None and ds.sample_shape == (5,)
    x, y = ds[3]
    assert torch.equal(x, torch.full((5,), 3.0)) and int(y) == -1

    ds = load_dataset("user_data_mod:features")  # TensorDataset(x) yields 1-tuples
    assert not ds.has_labels and ds.sample_shape == (3,) and int(ds[1][1]) == -1

    ds = load_dataset("user_data_mod:WithClasses")
    assert ds.num_classes == 2 and ds.classes == ("no", "yes")


@pytest.mark.parametrize(
    "attr, message",
    [
        ("missing", "'missing' not found in"),
        ("NOT_CALLABLE", "is not callable"),
        ("broken", "calling it failed: RuntimeError: boom"),
        ("ints", "samples must be floating point"),
    ],
)
def test_callable_errors(data_module, attr, message):
    with pytest.raises(UserInputError, match=message):
        load_dataset(f"{data_module}:{attr}")


def test_bad_specs(tmp_path):
    with pytest.raises(UserInputError, match="no module named 'no_such_module_xyz'"):
        load_dataset("no_such_module_xyz:make")
    with pytest.raises(UserInputError, match="file not found: .*nope.py"):
        load_dataset(f"{tmp_path / 'nope.py'}:make")
    with pytest.raises(UserInputError, match="unknown dataset spec"):
        load_dataset("cifar10")
    with pytest.raises(UserInputError, match="empty dataset spec"):
        load_dataset("  ")


# ---- helpers ----------------------------------------------------------------------------------------------
@pytest.fixture()
def small(tmp_path):
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    np.savez(tmp_path / "s.npz", x=x, y=np.arange(100) % 3)
    return load_dataset(f"npz:{tmp_path / 's.npz'}")


def test_subset(small):
    a, b, c = subset(small, 10, seed=0), subset(small, 10, seed=0), subset(small, 10, seed=1)
    ids = lambda ds: [int(ds[i][0]) for i in range(len(ds))]  # noqa: E731
    assert len(a) == 10 and ids(a) == ids(b) != ids(c)
    assert ids(a) == sorted(set(ids(a)))
    assert a.sample_shape == (1,) and a.num_classes == 3 and a.has_labels
    assert len(subset(small, 0.25, seed=0)) == 25
    assert subset(small, 1.0) is small
    for bad in (0, 101, 0.0, 1.5, -3):
        with pytest.raises(UserInputError):
            subset(small, bad)


def test_split(small):
    parts = split(small, [0.7, 0.3], seed=4)
    assert [len(p) for p in parts] == [70, 30]
    seen = [int(x) for p in parts for x in p.get_batch(range(len(p)))[0][:, 0]]
    assert sorted(seen) == list(range(100))  # disjoint and complete
    assert [len(p) for p in split(small, [0.5, 0.2], seed=4)] == [50, 20]
    assert torch.equal(split(small, [0.7, 0.3], seed=4)[1].labels(), parts[1].labels())
    with pytest.raises(UserInputError, match="sum to"):
        split(small, [0.8, 0.3])
    with pytest.raises(UserInputError, match="empty part"):
        split(small, [0.995, 0.004])


def test_make_loader_is_seeded(small):
    order = lambda seed: torch.cat([x[:, 0] for x, _ in make_loader(small, 16, shuffle=True, seed=seed)])  # noqa: E731
    assert torch.equal(order(5), order(5)) and not torch.equal(order(5), order(6))
    assert sorted(order(5).tolist()) == list(range(100))
    batches = list(make_loader(small, 32))
    assert [len(x) for x, _ in batches] == [32, 32, 32, 4]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and torch.equal(x[:, 0], torch.arange(32.0))


def test_take_batch(small):
    x, y = take_batch(small, 8, seed=3)
    x2, _ = take_batch(small, 8, seed=3)
    assert x.shape == (8, 1) and y.shape == (8,) and torch.equal(x, x2)
    assert torch.equal(y, (x[:, 0].long() % 3))
    assert take_batch(small, 1000)[0].shape == (100, 1)  # clamps to the dataset
    sub = subset(small, 20, seed=0)
    xs, ys = take_batch(sub, 20)
    assert torch.equal(ys, xs[:, 0].long() % 3)
