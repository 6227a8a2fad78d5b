"""Input-pipeline benchmark: our device pipeline versus torchvision's PIL transforms in a DataLoader.

    python -m study.bench_data [--images 20000] [--batch-size 128] [--loader-workers 2]

Both sides produce the same thing from the same uint8 images: random crop (pad 4), horizontal flip,
normalization and mixup, batch by batch. Prints images/s of each and their ratio, with the conditions.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import time
from pathlib import Path

import numpy as np
import torch

from study.plan import plan_one
from trainables.data import Dataset, Normalizer, global_batches, load_dataset
from trainables.loop import Runtime, worker_micro_batches
from trainables.mixup import mix, sample_lambda

# The workspace copy of CIFAR-10 as JPEGs (../shared/data beside the project), where there is one.
SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_cifar10_format(root: Path, per_batch: int, seed: int = 0) -> np.ndarray:
    """Random images in the exact on-disk format torchvision downloads (root/cifar-10-batches-py):
    five training batches and one test batch of `per_batch` images each. For tests, and for
    benchmarks on machines that cannot download CIFAR-10 (speed does not depend on the pixels).
    Returns the first training batch's rows (3072 bytes per image: red, green, blue planes)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        first = data if first is None else first
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"data": data,
            b"filenames": [f"{i}.png".encode() for i in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {
                b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                b"num_cases_per_batch": per_batch,
                b"num_vis": 3072,
            },
            f,
        )
    return first  # type: ignore[return-value]


class PILCifar(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: HWC uint8 -> PIL image -> transforms."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]):
        from torchvision import transforms

        self.images, self.labels = images_hwc, labels
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def bench_dataloader(data: Dataset, batch_size: int, loader_workers: int, alpha: float) -> float:
    dataset = PILCifar(data.train.images.permute(0, 2, 3, 1).numpy(), data.train.labels.numpy(), data.mean, data.std)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=loader_workers,
        persistent_workers=False,
    )
    rng = np.random.default_rng(0)
    started, seen = time.perf_counter(), 0
    for images, labels in loader:
        # Mixup on the collated batch, as facebookresearch/mixup-cifar10 does.
        batch = mix(images, labels, sample_lambda(alpha, rng), torch.randperm(len(labels)))
        seen += len(batch.labels_a)
    return seen / (time.perf_counter() - started)


def bench_device_pipeline(data: Dataset, batch_size: int, alpha: float, device: torch.device) -> float:
    spec = plan_one(sweep={"batch_size": batch_size, "mixup_alpha": alpha}, resources={"max_micro_batch": batch_size})
    runtime = Runtime(device)
    train = data.train.to(device)
    normalize = Normalizer(data.mean, data.std, device)
    generator = torch.Generator(device=device).manual_seed(0)
    rng = np.random.default_rng(0)
    started, seen = time.perf_counter(), 0
    for index in global_batches(len(train), batch_size, seed=0, epoch=0, device=device):
        for batch in worker_micro_batches(train, normalize, index, spec, runtime, generator, rng):
            seen += len(batch.labels_a)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000, help="training images to push through each pipeline")
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch")
    parser.add_argument(
        "--loader-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="DataLoader worker processes for the PIL baseline (default: all cores)",
    )
    parser.add_argument("--alpha", type=float, default=1.0, help="mixup alpha for both pipelines")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if SHARED_CIFAR.exists():
        data, source = load_dataset("imagefolder", SHARED_CIFAR, train_subset=args.images), "CIFAR-10 JPEGs (shared)"
    else:
        data, source = load_dataset("synthetic", "", train_subset=min(args.images, 4096)), "synthetic"
    device = torch.device(args.device)
    ours = bench_device_pipeline(data, args.batch_size, args.alpha, device)
    baseline = bench_dataloader(data, args.batch_size, args.loader_workers, args.alpha)
    print(f"data: {source}, {len(data.train)} images, batch {args.batch_size}, mixup alpha {args.alpha}")
    print(
        f"conditions: device {device}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}, one run"
    )
    print(f"DataLoader + PIL ({args.loader_workers} workers): {baseline:12,.0f} images/s")
    print(f"device pipeline ({device.type}):            {ours:12,.0f} images/s")
    print(f"ratio: {ours / baseline:.1f}x")


if __name__ == "__main__":
    main()
