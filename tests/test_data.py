import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from study.bench_data import write_cifar10_format
from trainables.catalog import split_global_batch
from trainables.data import (
    CropFlip,
    DataError,
    Normalizer,
    class_balanced_subset,
    crop_flip,
    global_batches,
    imagefolder_cache,
    load_dataset,
    worker_slice,
)


def reference_crop_flip(images: torch.Tensor, params: CropFlip, padding: int = 4) -> torch.Tensor:
    """Slow per-image reference: pad, crop, flip, one image at a time."""
    out = []
    for i, image in enumerate(images):
        padded = F.pad(image, (padding,) * 4)
        top, left = int(params.top[i]), int(params.left[i])
        crop = padded[:, top : top + image.shape[1], left : left + image.shape[2]]
        out.append(torch.flip(crop, dims=[2]) if params.flip[i] else crop)
    return torch.stack(out)


def test_batched_crop_flip_equals_per_image_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=generator)
    params = CropFlip.sample(64, 4, generator)
    assert params.flip.any() and (~params.flip).any() and params.top.max() == 8
    assert torch.equal(crop_flip(images, params), reference_crop_flip(images, params))


def test_normalizer_standardizes_per_channel() -> None:
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = Normalizer((0.5, 0.5, 0.5), (0.25, 0.5, 1.0), "cpu")(images)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))


def test_epoch_permutation_is_shared_and_covers_every_example_once() -> None:
    n, batch, world = 1000, 100, 4
    batches_by_worker = [global_batches(n, batch, seed=3, epoch=7) for _ in range(world)]
    # Every (simulated) worker computes the same global batches...
    for other in batches_by_worker[1:]:
        assert all(torch.equal(a, b) for a, b in zip(batches_by_worker[0], other))
    # ...takes disjoint slices of each, and together they see every example exactly once.
    seen = torch.cat([worker_slice(b, r, world) for b in batches_by_worker[0] for r in range(world)])
    assert torch.equal(seen.sort().values, torch.arange(n))
    assert not torch.equal(global_batches(n, batch, 3, 8)[0], batches_by_worker[0][0])  # new epoch, new order


def test_last_partial_batch_is_dropped() -> None:
    batches = global_batches(1050, 100, 0, 0)
    assert len(batches) == 10 and all(len(b) == 100 for b in batches)


@pytest.mark.parametrize(
    "batch,workers,max_micro,expected",
    [
        (128, 1, 8192, (128, 1)),
        (8192, 2, 1024, (1024, 4)),
        (8192, 4, 8192, (2048, 1)),
        (384, 1, 256, (192, 2)),
    ],
)
def test_split_global_batch(batch: int, workers: int, max_micro: int, expected: tuple[int, int]) -> None:
    micro, accumulation = split_global_batch(batch, workers, max_micro)
    assert (micro, accumulation) == expected and workers * micro * accumulation == batch


def test_split_global_batch_rejects_uneven_split() -> None:
    with pytest.raises(ValueError, match="does not split"):
        split_global_batch(130, 4, 8192)


def test_class_balanced_subset_is_balanced_and_stable() -> None:
    labels = torch.arange(1000) % 10
    a = class_balanced_subset(labels, 105, 10)
    assert torch.equal(a, class_balanced_subset(labels, 105, 10))
    counts = labels[a].bincount(minlength=10)
    assert counts.sum() == 105 and counts.max() - counts.min() <= 1


def test_synthetic_is_deterministic_with_train_and_test() -> None:
    a = load_dataset("synthetic", "unused", train_subset=500)
    b = load_dataset("synthetic", "unused", train_subset=500)
    assert torch.equal(a.train.images, b.train.images) and len(a.train) == 500 and len(a.test) == 1024
    assert a.train.labels.bincount().tolist() == [50] * 10


def test_cifar10_reads_torchvision_on_disk_format(tmp_path: Path) -> None:
    first = write_cifar10_format(tmp_path, per_batch=20)
    ds = load_dataset("cifar10", tmp_path, download=False)
    assert ds.train.images.shape == (100, 3, 32, 32) and ds.test.images.shape == (20, 3, 32, 32)
    assert ds.classes[0] == "airplane" and ds.num_classes == 10
    # Row-major 3072 bytes per image: 1024 red, then green, then blue.
    assert torch.equal(ds.train.images[0], torch.from_numpy(first[0].reshape(3, 32, 32)))


def test_missing_cifar_without_download_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.root"):
        load_dataset("cifar10", tmp_path / "nowhere", download=False)


@pytest.mark.slow
def test_an_image_archive_given_to_cifar10_is_one_line_with_the_whole_fix(tmp_path: Path) -> None:
    """The offline path the download error suggests used to end in a 24-line FileExistsError."""
    import subprocess
    import sys

    from conftest import ROOT

    archive = tmp_path / "cifar10-jpeg.tar.gz"
    archive.write_bytes(b"not read")
    with pytest.raises(DataError, match="--set data.dataset=imagefolder --set data.root=") as raised:
        load_dataset("cifar10", archive, download=True)
    assert "is a file" in str(raised.value) and "\n" not in str(raised.value)
    run = subprocess.run(
        [sys.executable, "-m", "study.run_sweep", "studies/smoke.yaml", "--storage", str(tmp_path / "out")]
        + ["--set", f"data.root={archive}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0, run.stderr[-2000:]
    assert "data.dataset=imagefolder" in run.stderr
    assert not (tmp_path / "out").exists()  # the failed check left no empty study folder behind


def write_image_tree(root: Path, per_class: int = 3) -> None:
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


def test_imagefolder_from_folder_and_tar_agree_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LBSTUDY_CACHE", str(tmp_path / "cache"))
    tree = tmp_path / "tree" / "mydata"
    write_image_tree(tree)
    archive = tmp_path / "mydata.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="mydata")
    from_folder = load_dataset("imagefolder", tree)
    from_tar = load_dataset("imagefolder", archive)
    assert from_folder.classes == ("cat", "dog") and len(from_folder.train) == 6
    assert torch.equal(from_folder.train.images, from_tar.train.images)
    expected = np.array(Image.open(tree / "train" / "cat" / "0.png")).transpose(2, 0, 1)
    assert torch.equal(from_folder.train.images[0], torch.from_numpy(expected))
    # The second load reads the decoded cache, not the images: alter the cache and see it come back.
    cache = imagefolder_cache(archive)
    marked = np.load(cache / "test_images.npy")
    marked[0, 0, 0, 0] = 255 - marked[0, 0, 0, 0]
    np.save(cache / "test_images.npy", marked)
    assert torch.equal(load_dataset("imagefolder", archive).test.images, torch.from_numpy(marked))


def test_imagefolder_names_a_corrupt_file(tmp_path: Path) -> None:
    write_image_tree(tmp_path)
    (tmp_path / "train" / "dog" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="bad.jpg"):
        load_dataset("imagefolder", tmp_path)


def test_imagefolder_missing_or_empty_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("imagefolder", tmp_path / "absent")
    with pytest.raises(DataError, match="no images"):
        load_dataset("imagefolder", tmp_path)


@pytest.mark.slow
def test_shared_cifar10_jpegs_decode_to_the_full_dataset(shared_cifar: Path) -> None:
    ds = load_dataset("imagefolder", shared_cifar)
    assert len(ds.train) == 50_000 and len(ds.test) == 10_000
    assert ds.classes[:3] == ("airplane", "automobile", "bird")
    assert ds.train.labels.bincount().tolist() == [5000] * 10
    assert imagefolder_cache(shared_cifar).exists()


def test_decoding_an_image_folder_says_how_far_it_is(tmp_path: Path, monkeypatch, capsys) -> None:
    """A first run decoded CIFAR-10's archive for a silent minute; now it says how far it is."""
    import trainables.data as data

    write_image_tree(tmp_path / "images", per_class=3)
    monkeypatch.setenv("LBSTUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DECODE_PROGRESS_EVERY_S", 0.0)
    load_dataset("imagefolder", tmp_path / "images")
    out = capsys.readouterr().out
    assert "imagefolder: read 12 images in" in out and "imagefolder: decoded 1/12 images (8%)" in out
