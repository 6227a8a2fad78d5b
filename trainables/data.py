"""Dataset registry and the device-resident input pipeline.

Every dataset loads once into uint8 tensors (N, 3, 32, 32) and int64 labels. Training never
goes through a DataLoader: the whole split lives on the training device, each epoch draws one
permutation that every worker agrees on, and crop/flip/normalize run batched on the device.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import tarfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from trainables.catalog import (
    DATASET_NAMES,
    SYNTHETIC_CLASSES,
    SYNTHETIC_TEST,
    SYNTHETIC_TRAIN,
    cache_dir,
    check_registered,
)

IMAGE_SIZE = 32
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm")


class DataError(ValueError):
    """A dataset cannot be loaded for a reason the user can fix (path, download, corrupt file)."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, 3, 32, 32)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]
    mean: tuple[float, float, float]  # per channel, of the full training split, in [0, 1]
    std: tuple[float, float, float]
    changed: str = ""  # what loading changed in the images (resized, converted), said once by the driver

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> str:
        """What the trials train and test on, by content: a digest of the images and labels of both splits
        (after subsetting) and the class names; the same wherever the files lie and whatever holds them."""
        digest = hashlib.sha1(json.dumps([self.name, list(self.classes)]).encode())
        for split in (self.train, self.test):
            for tensor in (split.images, split.labels):
                digest.update(str(tuple(tensor.shape)).encode())
                digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class RawArrays:
    train_images: np.ndarray  # uint8 (N, 3, 32, 32)
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    changed: str = ""  # e.g. "12 of 60 images resized to 32x32 (bilinear), 3 converted from L to RGB"


_ARRAY_FIELDS = ("train_images", "train_labels", "test_images", "test_labels")

Loader = Callable[[Path, bool], RawArrays]
DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    check_registered("dataset", name, DATASET_NAMES)

    def add(loader: Loader) -> Loader:
        DATASETS[name] = loader
        return loader

    return add


def load_dataset(
    name: str,
    root: str | os.PathLike[str],
    *,
    train_subset: int | None = None,
    test_subset: int | None = None,
    download: bool = True,
) -> Dataset:
    """Load `name` from `root` (downloading where the dataset allows it) and take class-balanced subsets."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    raw = DATASETS[name](Path(os.path.expanduser(str(root))), download)
    train = Split(
        torch.from_numpy(np.ascontiguousarray(raw.train_images)), torch.from_numpy(raw.train_labels.astype(np.int64))
    )
    test = Split(
        torch.from_numpy(np.ascontiguousarray(raw.test_images)), torch.from_numpy(raw.test_labels.astype(np.int64))
    )
    mean, std = channel_stats(train.images)
    num_classes = len(raw.classes)
    if num_classes < 2:
        raise DataError(
            f"{name}: {root} has {num_classes} class ({', '.join(raw.classes) or 'none'}); a classifier needs at "
            "least two: add a second class folder under train/ and test/"
        )
    if train_subset is not None:
        train = train.take(class_balanced_subset(train.labels, train_subset, num_classes, "data.train_subset"))
    if test_subset is not None:
        test = test.take(class_balanced_subset(test.labels, test_subset, num_classes, "data.test_subset"))
    return Dataset(name, train, test, raw.classes, mean, std, raw.changed)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Exact per-channel mean and std in [0, 1] units, from 256-bin histograms (fast on uint8)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).double()
        mean = float((counts * values).sum() / counts.sum())
        means.append(mean)
        stds.append(float(((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt()))
    return tuple(means), tuple(stds)  # type: ignore[return-value]


def class_balanced_subset(labels: torch.Tensor, n: int, num_classes: int, key: str = "subset") -> torch.Tensor:
    """`n` indices, as equal a share per class as the data allows, the same on every run and machine
    (`key`: the setting that asked for them, which an error names)."""
    if n > len(labels):
        raise DataError(f"{key}: {n} images asked for, but the split has only {len(labels)}; lower {key}")
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(labels), generator=generator)
    by_class = [order[labels[order] == c] for c in range(num_classes)]
    quota = [n // num_classes + (1 if c < n % num_classes else 0) for c in range(num_classes)]
    # A class with too few images gives its shortfall to the others, in class order.
    short = sum(max(0, q - len(members)) for q, members in zip(quota, by_class))
    quota = [min(q, len(members)) for q, members in zip(quota, by_class)]
    for c, members in enumerate(by_class):
        extra = min(short, len(members) - quota[c])
        quota[c] += extra
        short -= extra
    chosen = torch.cat([members[:q] for q, members in zip(quota, by_class)])
    return chosen.sort().values


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: the python pickles torchvision downloads (cifar-10-batches-py, ...).


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR's batch files are pickles of dicts of bytes, lists, ints and numpy arrays; nothing else may be
    built from them, so a file under data.root cannot run code however it was made (pickle.load would
    call anything the file names)."""

    ALLOWED = {
        (module, name)
        for package in ("numpy.core", "numpy._core")
        for module, name in ((f"{package}.multiarray", "_reconstruct"), (f"{package}.numeric", "_frombuffer"))
    } | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch file")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[bytes, object]:
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DataError(f"{path} is not a CIFAR batch file ({error}); delete it and download again") from None


def _published_md5(tv_class: str) -> dict[str, str]:
    """CIFAR's files and their published md5s, as torchvision lists them."""
    import torchvision

    dataset = getattr(torchvision.datasets, tv_class)
    return dict([*dataset.train_list, *dataset.test_list, [dataset.meta["filename"], dataset.meta["md5"]]])


def _cifar_arrays(
    folder: Path, train_files: list[str], test_files: list[str], label_key: bytes, meta_file: str, names_key: bytes
) -> RawArrays:
    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for name in files:
            batch = _unpickle(folder / name)
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        return np.concatenate(images), np.concatenate(labels)

    train_x, train_y = read(train_files)
    test_x, test_y = read(test_files)
    names = _unpickle(folder / meta_file)[names_key]
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)  # type: ignore[union-attr]
    return RawArrays(train_x, train_y, test_x, test_y, classes)


def _ensure_torchvision_download(root: Path, folder: Path, download: bool, name: str, tv_class: str) -> None:
    """Download through torchvision (which verifies checksums) unless the extracted folder exists; an
    existing folder's files are checked against the published md5s (a mismatch is said, once per load:
    such files are read with the restricted unpickler, as every file is)."""
    if root.exists() and not root.is_dir():  # an image archive given to cifar10: mkdir would fail deep inside
        archive = root.name.endswith((".tar", ".tar.gz", ".tgz"))
        raise DataError(
            f"data.root: {root} is a file; {name} wants a folder (holding {folder.name}/, or to download into)"
            + (f"; for an archive of images: --set data.dataset=imagefolder --set data.root={root}" if archive else "")
        )
    if folder.is_dir():
        published = _published_md5(tv_class)
        missing = [n for n in published if not (folder / n).is_file()]
        if missing:
            raise DataError(f"{name}: {folder} lacks {', '.join(missing)}; delete the folder to download it again")
        changed = [n for n, md5 in published.items() if hashlib.md5((folder / n).read_bytes()).hexdigest() != md5]
        if changed:
            print(
                f"warning: {name}: {', '.join(changed)} in {folder} differ from the published CIFAR files (md5); "
                "read as plain arrays, but results are not on the original data",
                file=sys.stderr,
                flush=True,
            )
        return
    if not download:
        raise DataError(f"{name}: {folder} not found; set data.root to a folder holding it, or allow download")
    import filelock
    import torchvision

    root.mkdir(parents=True, exist_ok=True)
    # Several workers of one node may start at once; one downloads, the others wait.
    with filelock.FileLock(str(root / f".{name}.download.lock")):
        if not folder.is_dir():
            try:
                getattr(torchvision.datasets, tv_class)(str(root), train=True, download=True)
            except Exception as error:  # network errors come in many types
                raise DataError(
                    f"{name}: download into {root} failed ({error}); copy {folder.name}/ there or set data.root "
                    "to a local copy; offline with the images as a .tar.gz of train/<class>/ and test/<class>/: "
                    "--set data.dataset=imagefolder --set data.root=<the archive>"
                ) from error


@register_dataset("cifar10")
def load_cifar10(root: Path, download: bool) -> RawArrays:
    folder = root / "cifar-10-batches-py"
    _ensure_torchvision_download(root, folder, download, "cifar10", "CIFAR10")
    return _cifar_arrays(
        folder, [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", "batches.meta", b"label_names"
    )


@register_dataset("cifar100")
def load_cifar100(root: Path, download: bool) -> RawArrays:
    folder = root / "cifar-100-python"
    _ensure_torchvision_download(root, folder, download, "cifar100", "CIFAR100")
    return _cifar_arrays(folder, ["train"], ["test"], b"fine_labels", "meta", b"fine_label_names")


# ---------------------------------------------------------------------------------------------
# Image folders: root/train/<class>/*, root/test/<class>/*, or a .tar/.tar.gz holding that tree.


def _decode(data: bytes, name: str) -> tuple[np.ndarray, str, bool]:
    """(the image as uint8 (3, 32, 32), its mode before conversion to RGB, whether it was resized)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            mode, resized = image.mode, image.size != (IMAGE_SIZE, IMAGE_SIZE)
            image = image.convert("RGB")
            if resized:
                image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1), mode, resized
    except Image.DecompressionBombError as error:
        raise DataError(f"image file {name} is too large to decode safely ({error}); delete or shrink it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"corrupt image file {name}: {error}; delete or replace it") from None


def _split_class_file(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """('x', 'train', 'cat', '1.jpg') -> ('train', 'cat'); None for anything else."""
    if len(parts) >= 3 and parts[-3] in ("train", "test") and parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return parts[-3], parts[-2]
    return None


def _iter_image_files(root: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """(split, class, name, encoded bytes) for every image under a folder or inside a tar archive."""
    if root.is_file():
        yield from _iter_archive(root)
        return
    for path in sorted(root.rglob("*")):
        key = _split_class_file(path.relative_to(root).parts) if path.is_file() else None
        if key:
            yield key[0], key[1], str(path), path.read_bytes()


class _ArchiveCut(Exception):
    """A header after the first that tarfile would take as the end of the archive."""


class _StrictTarInfo(tarfile.TarInfo):
    """Headers read strictly: tarfile ends iteration quietly at a corrupt, truncated or missing header
    in the middle of an archive; here that is an error (only zero blocks, the end marker, end it)."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.EOFHeaderError:
            raise
        except tarfile.HeaderError as error:
            if tarfile_.offset == 0:
                raise  # not a tar at all: tarfile.open tries the next compression, then says so
            raise _ArchiveCut(f"{error} at byte {tarfile_.offset}") from None


def _iter_archive(root: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """The images of a .tar/.tar.gz, all of them or a DataError: an archive that ends early or has a corrupt
    header is an error, never a smaller dataset."""
    try:
        with tarfile.open(root, "r:*", tarinfo=_StrictTarInfo) as archive:
            for member in archive:
                key = _split_class_file(Path(member.name).parts) if member.isfile() else None
                if key:
                    data = archive.extractfile(member)
                    assert data is not None
                    yield key[0], key[1], member.name, data.read()
    except _ArchiveCut as error:
        raise DataError(f"imagefolder: {root} is corrupt or cut short ({error}); replace the archive") from None
    except tarfile.ReadError as error:
        first = str(error).splitlines()[0].rstrip(":")
        raise DataError(f"imagefolder: {root} is not a readable .tar/.tar.gz archive ({first}); replace it") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(
            f"imagefolder: {root} is corrupt or ends early ({type(error).__name__}: {error}); replace the archive"
        ) from None


DECODE_PROGRESS_EVERY_S = 10.0  # a first run decodes CIFAR-10's 60,000 JPEGs for about a minute: said as it goes


def _decode_image_tree(root: Path) -> RawArrays:
    started = time.perf_counter()
    files = sorted(_iter_image_files(root), key=lambda item: (item[0], item[1], item[2]))
    print(f"imagefolder: read {len(files):,} images in {time.perf_counter() - started:.0f} s; decoding", flush=True)
    said_at = time.perf_counter()
    classes = tuple(sorted({cls for split, cls, _, _ in files if split == "train"}))
    if not classes or not any(split == "test" for split, *_ in files):
        raise DataError(
            f"imagefolder: no images under {root}/train/<class>/ and {root}/test/<class>/; "
            "point data.root at a folder (or .tar/.tar.gz) with that layout"
        )
    index = {c: i for i, c in enumerate(classes)}
    arrays: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), "test": ([], [])}
    resized, converted = 0, Counter()
    for split, cls, name, data in files:
        if cls not in index:
            raise DataError(f"imagefolder: test class {cls!r} ({name}) has no training images")
        image, mode, was_resized = _decode(data, name)
        arrays[split][0].append(image)
        arrays[split][1].append(index[cls])
        resized += was_resized
        converted.update([mode] if mode != "RGB" else [])
        if time.perf_counter() - said_at >= DECODE_PROGRESS_EVERY_S:
            done = sum(len(x) for x, _ in arrays.values())
            print(
                f"imagefolder: decoded {done:,}/{len(files):,} images ({done / len(files):.0%}), "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            said_at = time.perf_counter()
    stacked = {s: (np.stack(x), np.asarray(y, dtype=np.int64)) for s, (x, y) in arrays.items()}
    return RawArrays(*stacked["train"], *stacked["test"], classes, _changes(len(files), resized, converted))


def _changes(images: int, resized: int, converted: Counter) -> str:
    """What decoding changed, in words ("" for nothing): the model sees 32x32 RGB images only."""
    said = [f"{resized} resized to {IMAGE_SIZE}x{IMAGE_SIZE} (bilinear)"] if resized else []
    said += [f"{count} converted from {mode} to RGB" for mode, count in sorted(converted.items())]
    return f"{', '.join(said)}, of {images} images" if said else ""


def imagefolder_cache(root: Path) -> Path:
    """Where the decoded arrays of `root` are cached: keyed by its path and, for an archive, its size and
    modification time; for a folder, the name, size and modification time of every file in it (an image
    replaced, added or removed in a class folder changes the key; the folder's own time would not).

    Decoding JPEGs takes tens of seconds; the cached .npy files read back in a fraction of a second.
    """
    digest = hashlib.sha1(str(root.resolve()).encode())
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.relative_to(root) if path != root else ''}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return cache_dir() / f"imagefolder-{digest.hexdigest()[:16]}"


@register_dataset("imagefolder")
def load_imagefolder(root: Path, download: bool) -> RawArrays:
    if not root.exists():
        raise DataError(
            f"imagefolder: {root} does not exist; set data.root to a folder or .tar.gz "
            "with train/<class>/ and test/<class>/ images"
        )
    cached = imagefolder_cache(root)
    if (cached / "classes.json").exists():
        arrays = [np.load(cached / f"{field}.npy") for field in _ARRAY_FIELDS]
        changed = (cached / "changed.txt").read_text() if (cached / "changed.txt").exists() else ""
        return RawArrays(*arrays, tuple(json.loads((cached / "classes.json").read_text())), changed)
    print(f"imagefolder: decoding {root} (new, or changed since it was decoded); cached for the next run", flush=True)
    raw = _decode_image_tree(root)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
    partial.mkdir(parents=True, exist_ok=True)
    for field in _ARRAY_FIELDS:
        np.save(partial / f"{field}.npy", getattr(raw, field))
    (partial / "changed.txt").write_text(raw.changed)
    (partial / "classes.json").write_text(json.dumps(list(raw.classes)))
    try:
        partial.rename(cached)  # atomic: concurrent loaders never see half a cache
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(partial, ignore_errors=True)
    return raw


# ---------------------------------------------------------------------------------------------
# Synthetic: deterministic and learnable, for tests; no files.


@register_dataset("synthetic")
def load_synthetic(root: Path, download: bool) -> RawArrays:
    """Each class is a smooth random colour pattern; images are that pattern, shifted, plus noise."""
    generator = torch.Generator().manual_seed(1234)
    coarse = torch.randn(SYNTHETIC_CLASSES, 3, 4, 4, generator=generator)
    templates = torch.nn.functional.interpolate(
        coarse, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
    )

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = torch.arange(n) % SYNTHETIC_CLASSES
        shifts = torch.randint(-3, 4, (n, 2), generator=generator)
        images = templates[labels]
        images = torch.stack(
            [torch.roll(img, (int(dy), int(dx)), dims=(1, 2)) for img, (dy, dx) in zip(images, shifts)]
        )
        images = 128 + 45 * images + 40 * torch.randn(images.shape, generator=generator)
        return images.clamp(0, 255).round().to(torch.uint8).numpy(), labels.numpy()

    train_x, train_y = make(SYNTHETIC_TRAIN)
    test_x, test_y = make(SYNTHETIC_TEST)
    return RawArrays(train_x, train_y, test_x, test_y, tuple(f"class{c}" for c in range(SYNTHETIC_CLASSES)))


# ---------------------------------------------------------------------------------------------
# The device pipeline.


def derived_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (seed, epoch, stream...), the same on every machine."""
    return int(np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of one epoch; identical on every worker because it depends only on (seed, epoch)."""
    return torch.randperm(num_examples, generator=torch.Generator().manual_seed(derived_seed(seed, epoch, 0)))


def global_batches(
    num_examples: int, global_batch_size: int, seed: int, epoch: int, device: torch.device | str = "cpu"
) -> list[torch.Tensor]:
    """Index tensors of each global batch, on `device`; the last partial batch is dropped so every step
    has the same size.

    The order is drawn on the CPU (the same on every kind of device) and moved once per epoch: a copy
    per step from pageable host memory would make the host wait for the GPU's queue every step.
    """
    order = epoch_permutation(num_examples, seed, epoch).to(device)
    steps = num_examples // global_batch_size
    return [order[i * global_batch_size : (i + 1) * global_batch_size] for i in range(steps)]


def worker_slice(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Worker `rank`'s contiguous share of a global batch (dim 0)."""
    per_worker = batch.shape[0] // world_size
    return batch[rank * per_worker : (rank + 1) * per_worker]


@dataclass(frozen=True)
class CropFlip:
    """Per-image random crop offsets (after zero padding) and horizontal-flip flags."""

    top: torch.Tensor  # int64 (B,), in [0, 2 * padding]
    left: torch.Tensor
    flip: torch.Tensor  # bool (B,)

    @classmethod
    def sample(cls, batch: int, padding: int, generator: torch.Generator) -> "CropFlip":
        device = generator.device
        offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=device)
        flip = torch.randint(0, 2, (batch,), generator=generator, device=device).bool()
        return cls(offsets[0], offsets[1], flip)

    def select(self, rows: slice) -> "CropFlip":
        return replace(self, top=self.top[rows], left=self.left[rows], flip=self.flip[rows])


def crop_flip(images: torch.Tensor, params: CropFlip, padding: int = 4) -> torch.Tensor:
    """Random crop from a zero-padded image plus horizontal flip, as one batched gather."""
    batch, channels, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    ar_h = torch.arange(height, device=images.device)
    ar_w = torch.arange(width, device=images.device)
    rows = params.top.to(images.device)[:, None] + ar_h  # (B, H)
    # A flipped image reads its columns right to left.
    cols = params.left.to(images.device)[:, None] + torch.where(
        params.flip.to(images.device)[:, None], width - 1 - ar_w, ar_w
    )  # (B, W)
    b = torch.arange(batch, device=images.device)[:, None, None, None]
    c = torch.arange(channels, device=images.device)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]


class Normalizer:
    """uint8 images -> float32 standardized per channel, on the device of the images."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str):
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, -1, 1, 1)
        self.shift = (torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.scale - self.shift
