"""Datasets: the synthetic stand-in, the augmentation, .npz files and the CIFAR-10 download path.

The CIFAR-10 tests never touch the internet: they write a tiny archive in CIFAR-10's format, serve it
from 127.0.0.1 and let the library fetch it through torchvision's download and md5 code.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import pickle
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import l2bn.data
from l2bn.data import (
    N_CLASSES,
    CifarSource,
    DatasetError,
    check_dataset_name,
    dataset_fingerprint,
    fetch_cifar10,
    load_cifar10,
    load_dataset,
    load_npz,
    make_synthetic,
    translate_flip,
)

# ---------------------------------------------------------------------------------------------
# The synthetic dataset
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic():
    """The whole synthetic set: 45000 + 5000 training images, 10000 test images (cached in data/;
    the first call ever generates it, about 12 s)."""
    return load_dataset("synthetic", 45000, 5000, 10000)


def rows(x: torch.Tensor) -> set[bytes]:
    """Each image as bytes, to compare sets of images."""
    flat = x.reshape(len(x), -1).numpy()
    return {r.tobytes() for r in flat}


def test_synthetic_has_cifar10_shapes(synthetic):
    for x, y, n in ((synthetic.x_train, synthetic.y_train, 45000), (synthetic.x_val, synthetic.y_val, 5000),
                    (synthetic.x_test, synthetic.y_test, 10000)):
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.uint8
        assert y.shape == (n,) and y.dtype == torch.int64
        counts = torch.bincount(y, minlength=N_CLASSES)
        assert len(counts) == N_CLASSES
        assert (counts - n / N_CLASSES).abs().max() < 0.1 * n / N_CLASSES, counts
    assert len(synthetic.checksum) == 64 and synthetic.name == "synthetic"
    # Not a constant image: the pixels use the range.
    assert synthetic.x_train[:100].float().std() > 20


def test_synthetic_sizes_are_those_of_cifar10():
    with pytest.raises(DatasetError, match="50000 training images"):
        load_dataset("synthetic", 45001, 5000, 100)
    with pytest.raises(DatasetError, match="10000 test images"):
        load_dataset("synthetic", 100, 100, 10001)


def test_synthetic_is_deterministic(synthetic):
    a, b = make_synthetic(n_train=30, n_test=20), make_synthetic(n_train=30, n_test=20)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    other = make_synthetic(n_train=30, n_test=20, seed=1)
    assert not np.array_equal(a["x_train"], other["x_train"])
    # Loading again gives the same images, and the checksum covers the full arrays, not the cut.
    small = load_dataset("synthetic", 300, 100, 50)
    assert small.checksum == synthetic.checksum
    assert torch.equal(small.x_test, synthetic.x_test[:50])


def test_the_synthetic_images_are_those_of_the_one_shot_arithmetic():
    """``make_synthetic`` computes its images in pieces of 500 (faster: they stay in the cache); they
    are the images it made when it computed each 10000 at once: the digest below was taken at
    df99ed6, before the pieces, for sizes that cut the pieces short in both splits."""
    arrays = make_synthetic(n_train=1200, n_test=600)
    h = hashlib.sha256()
    for key in ("x_train", "y_train", "x_test", "y_test"):
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    assert h.hexdigest() == "d49f688fef8925f5e09e88286f8b18ad90eb61608c54111220b2d7874aa54f13"


def test_validation_split_is_disjoint_from_training_and_fixed(synthetic):
    assert not rows(synthetic.x_val) & rows(synthetic.x_train)
    assert len(rows(synthetic.x_val) | rows(synthetic.x_train)) == 50000  # all distinct images
    small, larger = load_dataset("synthetic", 1000, 500, 10), load_dataset("synthetic", 2000, 500, 10)
    assert torch.equal(small.x_val, larger.x_val)  # growing n_train does not move the validation set
    assert torch.equal(small.x_train, larger.x_train[:1000])
    assert not rows(larger.x_val) & rows(larger.x_train)


def test_unknown_dataset_name():
    for name in ("mnist", "npz:", "cifar100"):
        with pytest.raises(ValueError, match="dataset: unknown dataset"):
            check_dataset_name(name)


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


def bright_pixel_images(n: int, row: int, col: int) -> torch.Tensor:
    x = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    x[:, :, row, col] = 255
    return x


def pixel_positions(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of the single bright pixel of each image (every channel the same)."""
    assert (out.flatten(1) > 0).sum(1).eq(3).all()  # exactly one pixel, in all three channels
    flat = out[:, 0].flatten(1).argmax(1)
    return flat // out.shape[-1], flat % out.shape[-1]


def test_translate_shapes_and_dtype():
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    out = translate_flip(x, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    float_out = translate_flip(x.float(), 4, torch.Generator().manual_seed(0))
    assert torch.equal(float_out, out.float())


def test_translation_is_bounded_by_the_shift_and_uses_every_offset():
    row, col = 16, 9
    out = translate_flip(bright_pixel_images(2000, row, col), 4, torch.Generator().manual_seed(1),
                         flip=False)
    r, c = pixel_positions(out)
    dy, dx = r - row, c - col
    assert dy.abs().max() <= 4 and dx.abs().max() <= 4
    assert set(dy.tolist()) == set(range(-4, 5)) == set(dx.tolist())


def test_flip_mirrors_about_half_of_the_images():
    row, col = 16, 9  # mirrored, column 9 goes to 22: far from anything a shift of 4 reaches
    out = translate_flip(bright_pixel_images(2000, row, col), 4, torch.Generator().manual_seed(2))
    r, c = pixel_positions(out)
    flipped = (c - (31 - col)).abs() <= 4
    assert ((c - col).abs() <= 4).logical_xor(flipped).all()
    assert (r - row).abs().max() <= 4
    assert 0.45 < flipped.float().mean() < 0.55


def test_each_output_is_a_shifted_or_mirrored_copy_of_its_input():
    x = torch.randint(1, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    out = translate_flip(x, 4, torch.Generator().manual_seed(4))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        crops = {(dy, dx): padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)}
        candidates = [(*k, flip, c.flip(-1) if flip else c) for k, c in crops.items() for flip in (0, 1)]
        matches = [(dy, dx, flip) for dy, dx, flip, c in candidates if torch.equal(out[i], c)]
        assert len(matches) == 1, (i, matches)


def test_augmentation_is_reproducible_with_a_seeded_generator():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    a = translate_flip(x, 4, torch.Generator().manual_seed(6))
    b = translate_flip(x, 4, torch.Generator().manual_seed(6))
    c = translate_flip(x, 4, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------------------------------------
# Arrays from .npz files
# ---------------------------------------------------------------------------------------------


def npz_arrays(n_train: int = 20, n_test: int = 10, nhwc: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    shape = (32, 32, 3) if nhwc else (3, 32, 32)
    return {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": rng.integers(0, N_CLASSES, n_train),
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": rng.integers(0, N_CLASSES, n_test),
    }


def write_npz(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("nhwc", [True, False], ids=["NHWC", "NCHW"])
def test_npz_loads_either_layout_as_nchw(tmp_path, nhwc):
    arrays = npz_arrays(nhwc=nhwc)
    path = write_npz(tmp_path / "d.npz", arrays)
    loaded = load_npz(path)
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        expected = x.transpose(0, 3, 1, 2) if nhwc else x
        assert loaded[f"x_{split}"].shape == (len(x), 3, 32, 32)
        assert np.array_equal(loaded[f"x_{split}"], expected)
        assert np.array_equal(loaded[f"y_{split}"], arrays[f"y_{split}"])
        assert loaded[f"y_{split}"].dtype == np.int64
    ds = load_dataset(f"npz:{path}", 12, 4, 10)
    assert ds.x_train.shape == (12, 3, 32, 32) and ds.x_val.shape == (4, 3, 32, 32)
    assert torch.equal(ds.x_test, torch.from_numpy(np.ascontiguousarray(loaded["x_test"])))
    assert not rows(ds.x_val) & rows(ds.x_train)


def test_npz_layouts_give_the_same_dataset(tmp_path):
    nhwc = npz_arrays(nhwc=True)
    nchw = {k: v.transpose(0, 3, 1, 2) if k.startswith("x") else v for k, v in nhwc.items()}
    a = load_dataset(f"npz:{write_npz(tmp_path / 'a.npz', nhwc)}", 12, 4, 10)
    b = load_dataset(f"npz:{write_npz(tmp_path / 'b.npz', nchw)}", 12, 4, 10)
    assert torch.equal(a.x_train, b.x_train) and a.checksum == b.checksum


def _drop(key):
    return lambda a: {k: v for k, v in a.items() if k != key}


def _set(key, fn):
    return lambda a: {**a, key: fn(a[key])}


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (_drop("y_test"), r"lacks arrays \['y_test'\]"),
        (_set("x_train", lambda x: x.astype(np.float32)), "x_train .* has dtype float32; it must be uint8"),
        (_set("x_test", lambda x: x[..., 0]), r"x_test .* has shape \(10, 32, 32\)"),
        (_set("x_train", lambda x: np.concatenate([x, x[..., :1]], -1)), r"x_train .* has shape"),
        (_set("y_train", lambda y: np.where(np.arange(len(y)) == 3, 10, y)), r"y_train .* \[0, 10\)"),
        (_set("y_test", lambda y: np.where(np.arange(len(y)) == 0, -1, y)), r"y_test .* \[0, 10\)"),
        (_set("y_train", lambda y: y[:-1]), "y_train .* 1-d integer array of length 20"),
        (_set("y_test", lambda y: y.astype(np.float64)), "y_test .* integer array"),
    ],
    ids=["missing", "dtype", "ndim", "channels", "label-high", "label-negative", "length", "float-labels"],
)
def test_npz_errors_say_what_is_wrong(tmp_path, corrupt, message):
    path = write_npz(tmp_path / "bad.npz", corrupt(npz_arrays()))
    with pytest.raises(DatasetError, match=message) as err:
        load_npz(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"npz:{path}", 12, 4, 5)


def test_npz_missing_or_unreadable_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_npz(tmp_path / "nothing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_npz(junk)


def test_a_constant_channel_is_refused_naming_the_data(tmp_path):
    arrays = npz_arrays(n_train=24)
    arrays["x_train"][..., 1] = 77  # NHWC: channel 1 of every training image is one value
    path = write_npz(tmp_path / "flat.npz", arrays)
    with pytest.raises(DatasetError, match=r"^dataset: channel 1 of the 12 training images .* "
                       r"constant \(every pixel 77\)") as err:
        load_dataset(f"npz:{path}", 12, 4, 5)
    assert "\n" not in str(err.value)
    one_value = {**arrays, "x_train": np.full_like(arrays["x_train"], 128)}
    with pytest.raises(DatasetError, match="channel 0 .* constant"):
        load_dataset(f"npz:{write_npz(tmp_path / 'grey.npz', one_value)}", 12, 4, 5)


def test_images_of_different_sizes_across_splits_are_refused(tmp_path):
    arrays = npz_arrays()
    arrays["x_test"] = arrays["x_test"][:, :16, :16]  # 16×16 test images, 32×32 training images
    path = write_npz(tmp_path / "sizes.npz", arrays)
    message = r"^dataset: in .* the training images are \(3, 32, 32\) and the test images \(3, 16, 16\)"
    with pytest.raises(DatasetError, match=message):
        load_npz(path)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"npz:{path}", 12, 4, 5)


def test_dataset_check_compares_every_split(make_dataset):
    data = make_dataset(n_train=8, n_val=4, n_test=4)
    data.check()  # random images pass
    with pytest.raises(DatasetError, match="different shapes"):
        l2bn.data.Dataset(**{**vars(data), "x_val": data.x_val[..., :16, :16]}).check()
    with pytest.raises(DatasetError, match="no training images"):
        l2bn.data.Dataset(**{**vars(data), "x_train": data.x_train[:0]}).check()


def test_a_npy_file_named_npz_is_named_as_such(tmp_path):
    path = tmp_path / "arrays.npz"
    with open(path, "wb") as f:
        np.save(f, npz_arrays()["x_train"])
    with pytest.raises(DatasetError, match=r"^dataset: .*arrays.npz is a .npy array, not an .npz "
                       r"archive; save the four arrays .* np.savez"):
        load_npz(path)


@pytest.mark.parametrize("kind", ["folder", "object-array", "pickle", "empty"])
def test_other_files_that_are_no_npz_archive(tmp_path, kind):
    path = tmp_path / "d.npz"
    if kind == "folder":
        path.mkdir()
    elif kind == "object-array":
        np.savez(path, **{**npz_arrays(), "y_train": np.array([{"a": 1}] * 20, dtype=object)})
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(npz_arrays()))
    else:
        path.write_bytes(b"")
    message = "is a folder" if kind == "folder" else "is not a readable .npz file"
    with pytest.raises(DatasetError, match=f"^dataset: .*{message}") as err:
        load_npz(path)
    assert "\n" not in str(err.value)


def test_a_folder_named_as_the_npz_is_called_a_folder_wherever_it_is_read(tmp_path):
    folder = tmp_path / "d.npz"
    folder.mkdir()
    with pytest.raises(DatasetError, match=f"^dataset: npz file {folder} is a folder, not an .npz file$"):
        dataset_fingerprint(f"npz:{folder}")  # the cache key reads it first


def test_l2bn_data_that_is_a_file_is_refused_naming_it(tmp_path, monkeypatch):
    target = tmp_path / "data"
    target.write_text("a file")
    monkeypatch.setenv("L2BN_DATA", str(target))
    with pytest.raises(l2bn.data.DataError, match=f"^L2BN_DATA: {target} is not a folder"):
        l2bn.data.data_root()


# ---------------------------------------------------------------------------------------------
# CIFAR-10, offline: a tiny archive in CIFAR-10's format served from 127.0.0.1
# ---------------------------------------------------------------------------------------------

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
N_PER_BATCH, N_TEST = 3, 4


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cifar_archive(tmp_path_factory):
    """A CIFAR-10-format .tar.gz; returns (archive path, file md5s, the arrays written)."""
    work = tmp_path_factory.mktemp("cifar-src")
    folder = work / FOLDER
    folder.mkdir()
    rng = np.random.default_rng(0)
    written = {}
    for name in [*TRAIN_FILES, "test_batch"]:
        n = N_TEST if name == "test_batch" else N_PER_BATCH
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, N_CLASSES, n)],
                 "batch_label": name}
        written[name] = batch
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps(
        {"label_names": [f"class{i}" for i in range(N_CLASSES)], "num_cases_per_batch": N_PER_BATCH}))
    archive = work / "serve" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=FOLDER)
    file_md5s = tuple((name, md5(folder / name)) for name in [*TRAIN_FILES, "test_batch"])
    return archive, file_md5s, written


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve(monkeypatch):
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 for ``folder`` (stopped afterwards)."""
    for var in ("no_proxy", "NO_PROXY"):  # never route 127.0.0.1 through a proxy
        monkeypatch.setenv(var, "*")
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def source_for(url: str, archive_md5: str, file_md5s) -> CifarSource:
    return CifarSource(url=url, archive_md5=archive_md5, file_md5s=file_md5s)


def test_cifar10_download_extract_and_load(tmp_path, cifar_archive, serve):
    archive, file_md5s, written = cifar_archive
    source = source_for(f"{serve(archive.parent)}/{archive.name}", md5(archive), file_md5s)
    root = tmp_path / "data"
    folder = fetch_cifar10(root, source)
    assert folder == root / FOLDER and folder.is_dir()
    assert sorted(p.name for p in root.iterdir()) == [FOLDER]  # no archive or temporary folder left
    arrays = load_cifar10(root, source)
    x_train = np.concatenate([written[n]["data"] for n in TRAIN_FILES]).reshape(-1, 3, 32, 32)
    y_train = np.concatenate([written[n]["labels"] for n in TRAIN_FILES])
    assert arrays["x_train"].shape == (5 * N_PER_BATCH, 3, 32, 32) and arrays["x_train"].dtype == np.uint8
    assert np.array_equal(arrays["x_train"], x_train)
    assert np.array_equal(arrays["y_train"], y_train) and arrays["y_train"].dtype == np.int64
    assert np.array_equal(arrays["x_test"], written["test_batch"]["data"].reshape(-1, 3, 32, 32))
    assert np.array_equal(arrays["y_test"], written["test_batch"]["labels"])


def test_cifar10_through_load_dataset(tmp_path, cifar_archive, serve, monkeypatch):
    archive, file_md5s, written = cifar_archive
    source = source_for(f"{serve(archive.parent)}/{archive.name}", md5(archive), file_md5s)
    monkeypatch.setattr(l2bn.data, "cifar10_source", lambda: source)
    ds = load_dataset("cifar10", 10, 5, N_TEST, root=tmp_path)
    assert ds.name == "cifar10" and ds.x_train.shape == (10, 3, 32, 32) and len(ds.x_val) == 5
    assert torch.equal(ds.y_test, torch.tensor(written["test_batch"]["labels"]))
    # Once unpacked, nothing is downloaded again: a source whose server is gone still loads.
    monkeypatch.setattr(l2bn.data, "cifar10_source", lambda: source_for(
        f"http://127.0.0.1:{closed_port()}/{archive.name}", source.archive_md5, file_md5s))
    assert load_dataset("cifar10", 10, 5, N_TEST, root=tmp_path).checksum == ds.checksum


def test_a_corrupted_download_leaves_nothing_behind(tmp_path, cifar_archive, serve):
    archive, file_md5s, _ = cifar_archive
    bad = tmp_path / "serve" / archive.name
    bad.parent.mkdir()
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in transit
    bad.write_bytes(bytes(raw))
    source = source_for(f"{serve(bad.parent)}/{archive.name}", md5(archive), file_md5s)
    root = tmp_path / "data"
    with pytest.raises(DatasetError) as err:
        fetch_cifar10(root, source)
    message = str(err.value)
    assert "md5" in message and source.url in message and "DATASET=synthetic" in message
    assert not (root / FOLDER).exists()
    assert list(root.iterdir()) == []  # no temporary folder, no partial archive


def test_a_tampered_batch_file_is_detected(tmp_path, cifar_archive, serve):
    archive, file_md5s, _ = cifar_archive
    source = source_for(f"{serve(archive.parent)}/{archive.name}", md5(archive), file_md5s)
    root = tmp_path / "data"
    load_cifar10(root, source)
    batch = root / FOLDER / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\x00")
    with pytest.raises(DatasetError) as err:
        load_cifar10(root, source)
    message = str(err.value)
    assert "data_batch_3" in message and "md5" in message
    assert "--fetch-cifar10" in message and f"delete {root / FOLDER}" in message
    batch.unlink()  # a missing file is reported the same way
    with pytest.raises(DatasetError, match="data_batch_3 is missing or corrupted"):
        load_cifar10(root, source)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_cifar10_suggests_the_synthetic_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    url = f"http://127.0.0.1:{closed_port()}/cifar-10-python.tar.gz"
    monkeypatch.setattr(l2bn.data, "cifar10_source", lambda: source_for(url, "0" * 32, ()))
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", 10, 5, 5, root=tmp_path)
    message = str(err.value)
    assert "DATASET=synthetic" in message and url in message
    assert list(tmp_path.iterdir()) == []
