"""Datasets: CIFAR-10, a synthetic stand-in with CIFAR-10's shapes, and any arrays in an ``.npz``.

A dataset is held whole as uint8 tensors on the training device; augmentation (random translation by
up to 4 pixels and horizontal flips, independently per image) runs there too, so the training loop
never touches a DataLoader.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import store
from .errors import DataError

N_CLASSES = 10
SYNTHETIC_SEED = 0  # the synthetic images are fixed; the training seed only orders and augments them


DatasetError = DataError  # the name data errors had before ``errors``, kept for callers of this module


def data_root() -> Path:
    """Where downloads and results live: ``$L2BN_DATA``, else the repository's ``data/``."""
    env = os.environ.get("L2BN_DATA")
    if env:
        if Path(env).exists() and not Path(env).is_dir():
            raise DataError(f"L2BN_DATA: {env} is not a folder; set it to the folder for downloads "
                            "and results, or unset it to use the repository's data/")
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    return repo / "data" if (repo / "pyproject.toml").exists() else Path("data").resolve()


@dataclass
class Dataset:
    """Images as uint8 NCHW tensors and labels as int64, split into train / validation / test."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    checksum: str  # sha256 of the full source arrays, before subsetting

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset with every tensor on ``device``."""
        moved = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return Dataset(name=self.name, checksum=self.checksum, **moved)

    @property
    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation of the training images (0–255 scale)."""
        x = self.x_train.float()
        return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))

    def check(self) -> None:
        """``DatasetError('dataset: ...')`` unless training can use these images: at least one
        training image, the same (C, H, W) in every split and, in the training images, every channel
        varying (training divides each channel by its standard deviation, so a constant channel
        would make every input NaN and every model 'diverge' for reasons of the data)."""
        if len(self.x_train) == 0:
            raise DatasetError(f"dataset: {self.name} has no training images; give n_train ≥ 1")
        shapes = {k: tuple(getattr(self, k).shape[1:]) for k in ("x_train", "x_val", "x_test")}
        if len(set(shapes.values())) > 1:
            raise DatasetError(f"dataset: the splits of {self.name} have images of different shapes "
                               f"(C, H, W) {shapes}; every split needs the same image size")
        lo, hi = self.x_train.amin(dim=(0, 2, 3)), self.x_train.amax(dim=(0, 2, 3))
        flat = [c for c in range(len(lo)) if lo[c] == hi[c]]
        if flat:
            raise DatasetError(
                f"dataset: channel {flat[0]} of the {len(self.x_train)} training images of "
                f"{self.name} is constant (every pixel {int(lo[flat[0]])}); training standardises "
                "each channel by its standard deviation, so the pixels must vary"
            )


# ---------------------------------------------------------------------------------------------
# Augmentation, on whatever device the images are
# ---------------------------------------------------------------------------------------------


def translate_flip(
    x: torch.Tensor, shift: int, generator: torch.Generator, flip: bool = True
) -> torch.Tensor:
    """Shift each image by its own random offset in [-shift, shift]² (zero fill), and mirror it
    horizontally with probability ½ when ``flip``. One gather does both."""
    return shift_flip(x, shift, *random_shifts(len(x), shift, generator, flip, x.device))


def random_shifts(
    b: int, shift: int, generator: torch.Generator, flip: bool = True, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``translate_flip``'s draws for ``b`` images: the offsets (dy, dx) in [0, 2 shift], each
    (b, 1), and whether each image is mirrored (None without ``flip``)."""
    dy = torch.randint(0, 2 * shift + 1, (b, 1), generator=generator, device=device)
    dx = torch.randint(0, 2 * shift + 1, (b, 1), generator=generator, device=device)
    mirrored = torch.rand(b, 1, generator=generator, device=device) < 0.5 if flip else None
    return dy, dx, mirrored


def shift_flip(x: torch.Tensor, shift: int, dy: torch.Tensor, dx: torch.Tensor,
               mirrored: torch.Tensor | None) -> torch.Tensor:
    """The images ``x`` shifted and mirrored as ``random_shifts`` drew."""
    _, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (shift, shift, shift, shift))
    rows = dy + torch.arange(h, device=dev)
    cols = dx + torch.arange(w, device=dev)
    if mirrored is not None:
        cols = torch.where(mirrored, cols.flip(1), cols)
    batch = torch.arange(len(x), device=dev)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------
# Synthetic data with CIFAR-10's shapes
# ---------------------------------------------------------------------------------------------


def make_synthetic(
    n_train: int = 50000, n_test: int = 10000, seed: int = SYNTHETIC_SEED
) -> dict[str, np.ndarray]:
    """Ten classes of 3×32×32 uint8 images, learnable by a small convnet but not trivially.

    Each class owns four smooth random colour patterns. An image is one of its class's patterns,
    placed at a random offset, with random contrast, blended with a pattern of another class and
    covered in smooth and pixel noise; 5% of labels are replaced at random. The noise levels set the
    difficulty (the quick profile ends between roughly 10% and 40% test error).
    """
    g = torch.Generator().manual_seed(seed)
    k = 4
    protos = F.interpolate(torch.randn(N_CLASSES * k, 3, 6, 6, generator=g), size=32,
                           mode="bicubic", align_corners=False)
    protos = (protos - protos.mean(dim=(1, 2, 3), keepdim=True)) / protos.std(
        dim=(1, 2, 3), keepdim=True
    )
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = torch.arange(n) % N_CLASSES
        y = y[torch.randperm(n, generator=g)]
        chunks = []
        for lo in range(0, n, 10000):
            yc = y[lo : lo + 10000]
            m = len(yc)
            own = yc * k + torch.randint(0, k, (m,), generator=g)
            other_cls = (yc + torch.randint(1, N_CLASSES, (m,), generator=g)) % N_CLASSES
            other = other_cls * k + torch.randint(0, k, (m,), generator=g)
            contrast = 0.6 + 0.8 * torch.rand(m, 1, 1, 1, generator=g)
            coarse = torch.randn(m, 3, 8, 8, generator=g)
            shifts = random_shifts(m, 4, g)
            noise = torch.randn(m, 3, 32, 32, generator=g)
            # The arithmetic in pieces that stay in the cache: each image's pixels are computed
            # exactly as for the whole chunk at once, twice as fast (measured).
            for a in range(0, m, 500):
                s = slice(a, a + 500)
                smooth = F.interpolate(coarse[s], size=32, mode="bilinear", align_corners=False)
                img = contrast[s] * protos[own[s]] + 0.6 * protos[other[s]] + 0.8 * smooth
                img = shift_flip(img, 4, *(t[s] for t in shifts)) + 0.8 * noise[s]
                chunks.append((128 + 40 * img).round().clamp(0, 255).to(torch.uint8))
        noisy = torch.rand(n, generator=g) < 0.05
        y = torch.where(noisy, torch.randint(0, N_CLASSES, (n,), generator=g), y)
        out[f"x_{split}"] = torch.cat(chunks).numpy()
        out[f"y_{split}"] = y.numpy()
    return out


# ---------------------------------------------------------------------------------------------
# CIFAR-10 through torchvision's download and md5 code
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CifarSource:
    """Where a CIFAR-format archive comes from and the md5 of the archive and of each batch file."""

    url: str
    archive_md5: str
    file_md5s: tuple[tuple[str, str], ...]
    folder: str = "cifar-10-batches-py"


def cifar10_source() -> CifarSource:
    """The official CIFAR-10 archive, with the checksums torchvision ships."""
    from torchvision.datasets import CIFAR10

    files = tuple((name, md5) for name, md5 in CIFAR10.train_list + CIFAR10.test_list)
    return CifarSource(CIFAR10.url, CIFAR10.tgz_md5, files, CIFAR10.base_folder)


def _refetch_hint(root: Path, source: CifarSource) -> str:
    return (
        f"delete {root / source.folder} and run `l2bn info --fetch-cifar10` (needs internet), "
        "or build offline with DATASET=synthetic"
    )


def fetch_cifar10(root: Path, source: CifarSource | None = None) -> Path:
    """Download and unpack the archive into ``root`` unless it is already there.

    The archive is downloaded and md5-checked by torchvision, unpacked in a temporary folder and
    moved into place in one rename, so a failed or corrupted download leaves nothing behind.
    """
    from torchvision.datasets.utils import download_url, extract_archive

    source = source or cifar10_source()
    dest = root / source.folder
    if dest.exists():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    filename = source.url.rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        try:
            # No md5 here: torchvision would report a mismatch as a failed download; it is checked
            # below, with a message that says so.
            download_url(source.url, tmp, filename)
        except Exception as err:  # urllib and torchvision raise many kinds
            raise DatasetError(
                f"dataset: could not download CIFAR-10 from {source.url} ({err}). Without internet, "
                "build offline with DATASET=synthetic (make) or --dataset synthetic (l2bn)"
            ) from err
        from torchvision.datasets.utils import check_integrity

        if not check_integrity(os.path.join(tmp, filename), source.archive_md5):
            raise DatasetError(
                f"dataset: the CIFAR-10 archive from {source.url} failed its md5 check; "
                "nothing was kept. Try again, or build offline with DATASET=synthetic"
            )
        extract_archive(os.path.join(tmp, filename), os.path.join(tmp, "x"))
        os.replace(os.path.join(tmp, "x", source.folder), dest)
    return dest


def load_cifar10(root: Path, source: CifarSource | None = None) -> dict[str, np.ndarray]:
    """CIFAR-10 as uint8 NCHW arrays, each batch file md5-checked before it is read."""
    from torchvision.datasets.utils import check_integrity

    source = source or cifar10_source()
    folder = fetch_cifar10(root, source)
    parts: dict[str, list] = {"train": [], "test": []}
    for name, md5 in source.file_md5s:
        path = folder / name
        if not check_integrity(str(path), md5):
            raise DatasetError(
                f"dataset: CIFAR-10 file {path} is missing or corrupted (md5 mismatch); "
                + _refetch_hint(root, source)
            )
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        split = "test" if name.startswith("test") else "train"
        parts[split].append((np.asarray(batch["data"], np.uint8), np.asarray(batch["labels"])))
    out = {}
    for split, batches in parts.items():
        out[f"x_{split}"] = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32)
        out[f"y_{split}"] = np.concatenate([b[1] for b in batches]).astype(np.int64)
    return out


# ---------------------------------------------------------------------------------------------
# Arrays from an .npz file
# ---------------------------------------------------------------------------------------------

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays ``x_train, y_train, x_test, y_test`` from ``path``: uint8 images NHWC or NCHW with 3
    channels, integer labels in [0, 10). Images come back NCHW."""
    arrays = _npz_arrays(Path(path))
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8:
            raise DatasetError(f"dataset: x_{split} in {path} has dtype {x.dtype}; it must be uint8")
        if x.ndim != 4 or 3 not in (x.shape[1], x.shape[3]):
            raise DatasetError(
                f"dataset: x_{split} in {path} has shape {x.shape}; it must be (N, H, W, 3) "
                "or (N, 3, H, W)"
            )
        if x.shape[1] != 3:
            x = x.transpose(0, 3, 1, 2)
        if min(x.shape[2:]) < 8:
            raise DatasetError(f"dataset: images in {path} are {x.shape[2:]}; at least 8×8 needed")
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(
                f"dataset: y_{split} in {path} must be a 1-d integer array of length {len(x)}"
            )
        if len(y) and (y.min() < 0 or y.max() >= N_CLASSES):
            raise DatasetError(f"dataset: labels y_{split} in {path} must lie in [0, {N_CLASSES})")
        out[f"x_{split}"] = np.ascontiguousarray(x)
        out[f"y_{split}"] = y.astype(np.int64)
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise DatasetError(
            f"dataset: in {path} the training images are {out['x_train'].shape[1:]} and the test "
            f"images {out['x_test'].shape[1:]} (C, H, W); both splits need the same image size"
        )
    return out


def _check_is_file(path: Path) -> None:
    if not path.is_file():
        what = "is a folder, not an .npz file" if path.is_dir() else "does not exist"
        raise DatasetError(f"dataset: npz file {path} {what}")


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive at ``path`` (pickled objects refused), or a ``DatasetError`` that
    says what the file is instead."""
    _check_is_file(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":  # np.load would hand back a bare array
            raise DatasetError(
                f"dataset: {path} is a .npy array, not an .npz archive; save the four arrays in one "
                f"file with np.savez(path, {'=..., '.join(NPZ_KEYS)}=...)"
            )
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except DatasetError:
        raise
    except Exception as err:  # zipfile, numpy and the OS raise many kinds
        reason = " ".join(str(err).split())  # one line, whatever the library wrote
        raise DatasetError(f"dataset: {path} is not a readable .npz file ({reason})") from err
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise DatasetError(f"dataset: {path} lacks arrays {missing}; it needs {list(NPZ_KEYS)}")
    return arrays


# ---------------------------------------------------------------------------------------------
# One entry point
# ---------------------------------------------------------------------------------------------


def dataset_names() -> str:
    return "synthetic, cifar10, npz:PATH"


def check_dataset_name(name: str) -> None:
    """Raise ``ValueError`` for a name that is none of ``synthetic``, ``cifar10``, ``npz:PATH``."""
    if name not in ("synthetic", "cifar10") and not (name.startswith("npz:") and len(name) > 4):
        raise ValueError(f"dataset: unknown dataset {name!r}; choose one of {dataset_names()}")


def dataset_fingerprint(name: str) -> str:
    """A cheap identity of the data behind ``name``, for cache keys (no images are loaded)."""
    check_dataset_name(name)
    if name == "synthetic":
        return f"synthetic-seed{SYNTHETIC_SEED}"
    if name == "cifar10":
        return "cifar10-" + cifar10_source().archive_md5
    path = Path(name[4:])
    _check_is_file(path)
    return "npz-" + store.sha256_file(path)


def _cached_synthetic(root: Path) -> dict[str, np.ndarray]:
    """``make_synthetic()``, kept in ``root`` after the first call; the file name carries a hash of
    the generator's source, so editing the generator never reuses old images."""
    tag = hashlib.sha256(inspect.getsource(make_synthetic).encode()).hexdigest()[:12]
    path = root / f"synthetic-seed{SYNTHETIC_SEED}-{tag}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in NPZ_KEYS}
        except Exception:  # a damaged cache file is regenerated, never trusted
            path.unlink(missing_ok=True)
    arrays = make_synthetic()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    store.atomic_write(path, buf.getvalue())  # side-by-side workers may write it at the same time
    return arrays


def _raw_arrays(name: str, root: Path) -> dict[str, np.ndarray]:
    check_dataset_name(name)
    if name == "synthetic":
        return _cached_synthetic(root)
    if name == "cifar10":
        return load_cifar10(root)
    return load_npz(name[4:])


def load_dataset(
    name: str, n_train: int, n_val: int, n_test: int, root: Path | None = None
) -> Dataset:
    """Load ``name`` and cut it into ``n_train`` training, ``n_val`` validation (held out of the
    training set) and ``n_test`` test images. The cut is fixed: it depends on nothing but the sizes.
    """
    arrays = _raw_arrays(name, root or data_root())
    h = hashlib.sha256()
    for key in NPZ_KEYS:
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    n_avail, t_avail = len(arrays["x_train"]), len(arrays["x_test"])
    if n_train + n_val > n_avail:
        raise DatasetError(
            f"dataset: {name} has {n_avail} training images; n_train + n_val = {n_train + n_val}"
        )
    if n_test > t_avail:
        raise DatasetError(f"dataset: {name} has {t_avail} test images; n_test = {n_test}")
    # The validation images are the last n_val of a fixed shuffle, so n_train can grow without
    # moving them.
    order = np.random.default_rng(12345).permutation(n_avail)
    val_idx, train_idx = order[n_avail - n_val :], order[:n_train]
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    data = Dataset(
        name=name,
        x_train=t["x_train"][train_idx],
        y_train=t["y_train"][train_idx],
        x_val=t["x_train"][val_idx],
        y_val=t["y_train"][val_idx],
        x_test=t["x_test"][:n_test],
        y_test=t["y_test"][:n_test],
        checksum=h.hexdigest(),
    )
    data.check()
    return data
