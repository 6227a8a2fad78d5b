"""The platform's benchmark: one table, on whatever device this machine has.

    python -m study.bench [--quick]

(1) training images/s and MFU of VGG9 at three batch sizes: our bare loop, the same trial through a
    one-trial Ray sweep (ratio), and a plain PyTorch loop on the same model and batch (ratio);
(2) the input pipeline versus torchvision's DataLoader + PIL;
(3) 1-D landscape points/s with 1 and 2 Ray workers;
(4) the per-trial Ray start-up: seconds from a trial's start to its first optimizer step, for a
    one-worker trial (trained in the Tune trial) and a two-worker TorchTrainer trial.
On a CPU it uses small sizes (VGG9 width 0.25, synthetic data) and takes a few minutes; on a GPU
full sizes (width 1, CIFAR-10, batches 128 / 1024 / 8192).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import torch

from study.config import parse_study
from trainables.bench_data import SHARED_CIFAR
from trainables.data import load_dataset
from trainables.flops import TRAIN_FLOPS_PER_FORWARD, forward_flops_per_image, peak_flops
from trainables.loop import Runtime, TrialSpec, build_model_and_optimizer, compiled, device_dataset, train



@dataclasses.dataclass(frozen=True)
class Setting:
    device: torch.device
    width: float
    dataset: str
    root: str
    train_subset: int | None
    batch_sizes: tuple[int, ...]
    epochs: int


def setting(quick: bool) -> Setting:
    if torch.cuda.is_available():
        if SHARED_CIFAR.exists():
            return Setting(torch.device("cuda"), 1.0, "imagefolder", str(SHARED_CIFAR), None, (128, 1024, 8192), 3)
        return Setting(torch.device("cuda"), 1.0, "cifar10", "~/.cache/lbstudy/data", None, (128, 1024, 8192), 3)
    return Setting(torch.device("cpu"), 0.25, "synthetic", "", 2048 if quick else 4096,
                   (128, 512) if quick else (128, 512, 2048), 2)


def spec_for(s: Setting, batch: int) -> TrialSpec:
    return TrialSpec(f"bench-b{batch}", dataset=s.dataset, data_root=s.root, train_subset=s.train_subset,
                     test_subset=1000, width=s.width, batch_size=batch, micro_batch=batch, epochs=s.epochs,
                     augmentation="mixup", augmentation_alpha=1.0, train_eval_samples=1000, decay="constant")


def bare_loop(spec: TrialSpec, device: torch.device) -> dict[str, float]:
    rows: list[dict] = []
    train(spec, Runtime(device), on_epoch=lambda m, _: rows.append(m))
    return rows[-1]  # the last epoch: compilation and warm-up are behind it


def plain_loop(spec: TrialSpec, device: torch.device, steps: int = 20) -> float:
    """A plain PyTorch loop: same model, batch and optimizer; pre-normalized tensors, no augmentation."""
    data = device_dataset(spec, device)
    model, optimizer = build_model_and_optimizer(spec, data.num_classes, device)
    step_model = compiled(model, spec, device)
    images = (data.train.images[: spec.batch_size].float() / 255 - 0.5) / 0.25
    labels = data.train.labels[: spec.batch_size]
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(step_model(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * spec.batch_size / (time.perf_counter() - started)


def through_ray(s: Setting, batch: int, storage: str, workers: int = 1) -> dict:
    from study.run_sweep import run_study

    # On a CPU the trial gets every core, as the bare loop has (a worker uses cpus_per_worker threads).
    cpus_per_worker = (os.cpu_count() or 1) // workers if s.device.type == "cpu" else 1
    text = f"""
name: bench-b{batch}-w{workers}
storage: {storage}
data: {{dataset: {s.dataset}, root: "{s.root or '.'}", train_subset: {s.train_subset or 'null'}, test_subset: 1000}}
model: {{width: {s.width}}}
schedule: {{epochs: {s.epochs}, decay: constant, milestones: []}}
sweep: {{batch_size: [{batch}], mixup_alpha: [1.0]}}
resources: {{workers: {workers}, cpus_per_worker: {cpus_per_worker}}}
eval: {{train_eval_samples: 1000}}
"""
    return run_study(parse_study(text)).trials[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m study.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (CPU only), for a first look")
    args = parser.parse_args(argv)
    import ray

    from study.bench_landscape import points_per_second
    from study.run_sweep import TRIAL_RESOURCE, TRIAL_RESOURCE_AMOUNT
    from trainables.bench_data import bench_dataloader, bench_device_pipeline
    from trainables.ray_train import device_name

    s = setting(args.quick)
    name = device_name(s.device)
    peak = peak_flops(name) if s.device.type == "cuda" else None
    print(f"device: {name}; torch {torch.__version__}; ray {ray.__version__}; {os.cpu_count()} CPUs; "
          f"vgg9 width {s.width:g}; data {s.dataset}; one run per number")
    ray.init(resources={TRIAL_RESOURCE: TRIAL_RESOURCE_AMOUNT}, include_dashboard=False, log_to_driver=False)
    lines = ["", "(1) training, images/s (MFU where the device's peak is known)",
             f"{'batch':>6} {'bare loop':>12} {'MFU':>6} {'via Ray':>12} {'Ray/bare':>9} {'plain torch':>12} "
             f"{'ours/plain':>10}"]
    startups: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as storage:
        for batch in s.batch_sizes:
            spec = spec_for(s, batch)
            bare = bare_loop(spec, s.device)
            row = through_ray(s, batch, storage)
            plain = plain_loop(spec, s.device)
            startups.setdefault("1 worker (in the Tune trial)", row["startup_s"])
            mfu_text = f"{100 * bare['mfu']:.1f}%" if bare.get("mfu") else "-"
            lines.append(f"{batch:>6} {bare['images_per_s']:>12,.0f} {mfu_text:>6} {row['images_per_s']:>12,.0f} "
                         f"{row['images_per_s'] / bare['images_per_s']:>9.2f} {plain:>12,.0f} "
                         f"{bare['images_per_s'] / plain:>10.2f}")
        if s.device.type == "cpu":
            two = through_ray(s, s.batch_sizes[0], storage, workers=2)
            startups["2 workers (TorchTrainer)"] = two["startup_s"]
    data = load_dataset("imagefolder", SHARED_CIFAR, train_subset=10_000) if SHARED_CIFAR.exists() else \
        load_dataset("synthetic", "", train_subset=4096)
    ours = bench_device_pipeline(data, 128, 1.0, s.device)
    dataloader = bench_dataloader(data, 128, os.cpu_count() or 1, 1.0)
    lines += ["", "(2) input pipeline, batch 128, crop + flip + normalize + mixup",
              f"  device pipeline {ours:,.0f} images/s; DataLoader + PIL ({os.cpu_count()} workers) "
              f"{dataloader:,.0f} images/s; ratio {ours / dataloader:.1f}x"]
    rates = points_per_second(s.width, 2000 if s.device.type == "cpu" else 10_000, 4 if args.quick else 8, [1, 2])
    lines += ["", f"(3) 1-D landscape, {2000 if s.device.type == 'cpu' else 10_000} images per point",
              f"  1 worker {rates[1]:.3f} points/s; 2 workers {rates[2]:.3f} points/s; "
              f"speed-up {rates[2] / rates[1]:.2f}x"]
    lines += ["", "(4) per-trial start-up, trial start to first optimizer step"]
    lines += [f"  {k}: {v:.1f} s" for k, v in startups.items()]
    if peak is None:
        lines.append(f"\nMFU: no peak FLOP/s known for {name}; flops/image {forward_flops_per_image_of(s):.3g} "
                     f"x {TRAIN_FLOPS_PER_FORWARD} per training image")
    print("\n".join(lines))
    ray.shutdown()


def forward_flops_per_image_of(s: Setting) -> float:
    from trainables.models import build_model

    return forward_flops_per_image(build_model("vgg9", width=s.width))


if __name__ == "__main__":
    main()
