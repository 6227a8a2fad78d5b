"""The platform's benchmark, on whatever device this machine has.

    python -m study.bench [--model M] [--width W]          # what --dry-run prices a study with: ~2 min on 2 CPUs
    python -m study.bench --full                            # the whole table below: ~25 min on 2 CPUs

By default it measures what `run_sweep --dry-run` turns a study's images into hours with, and saves each
rate the moment it is measured (a run cut short keeps them): evaluation images/s, the training loop's
images/s at each batch size (5 steps an epoch on a CPU), and the measurement phase's rates (Hessian-vector
products, loss-and-gradient steps; landscape points at the evaluation rate). `--full` is the table:
(1) training images/s and MFU of VGG9 at three batch sizes: our bare loop, the same trial through a
    one-trial Ray sweep (ratio), and a plain PyTorch loop on the same model and batch (ratio);
(2) the input pipeline versus torchvision's DataLoader + PIL;
(3) 1-D landscape points/s with 1 and 2 Ray workers;
(4) the per-trial Ray start-up: seconds from a trial's start to its first optimizer step, for a
    one-worker trial (trained in the Tune trial) and a two-worker TorchTrainer trial;
(5) evaluation images/s, and what (1) and (5) project for the paper on this device: one 300-epoch
    CIFAR-10 trial (50,000 training images per epoch, 10,000 train + 10,000 test images evaluated
    per epoch) at the smallest and largest batch, and its four trials (batch 128 and 8192, with and
    without mixup) one after another, measurements not included;
(6) the CLI's fast answers;
(7) the measurement phase: Hessian-vector products/s, loss-and-gradient steps/s and landscape points
    (3) in images/s, as one measurement task computes them (what --dry-run prices measurements with).
On a CPU it uses small sizes (VGG9 width 0.25); on a GPU full sizes (width 1, batches 128 / 1024 / 8192,
CIFAR-10 or random images of its size and format). Each number is printed as it is measured (`bench|
...`), then the whole table.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from analysis.words import counted
from study.bench_data import SHARED_CIFAR, write_cifar10_format
from study.config import parse_study
from study.plan import plan_one, write_bench_record
from trainables.data import Normalizer, load_dataset
from trainables.flops import forward_flops_per_image, peak_flops, train_flops_per_image
from trainables.loop import (
    Runtime,
    autocast,
    build_model_and_optimizer,
    compiled,
    device_dataset,
    evaluate,
    train,
)
from trainables.models import build_model
from trainables.trial import TrialSpec

# Every epoch of the training bench has this many optimizer steps, at every batch size: with fewer,
# per-epoch work (evaluation, checkpoint, rows) dominates what is meant to be a per-step rate. The default
# run on a CPU takes fewer (a batch-2048 epoch of 20 steps is two minutes on 2 cores): the rate is of the
# fastest epoch's steps alone, which 5 steps already time to a few percent.
STEPS_PER_EPOCH, QUICK_STEPS_PER_EPOCH = 20, 5


@dataclasses.dataclass(frozen=True)
class Setting:
    device: torch.device
    width: float
    dataset: str
    root: str
    test_subset: int
    batch_sizes: tuple[int, ...]
    epochs: int
    data_note: str
    model: str = "vgg9"
    steps_per_epoch: int = STEPS_PER_EPOCH

    def train_images(self, batch: int) -> int:
        return self.steps_per_epoch * batch


def setting(full: bool, scratch: Path, model: str = "vgg9", width: float | None = None) -> Setting:
    """Small sizes on a CPU (VGG9 width 0.25; QUICK_STEPS_PER_EPOCH unless `full`), the paper's on a GPU;
    CIFAR-10 where this machine has enough of it for an epoch at the largest batch, otherwise random
    images of its size and format written to `scratch` (no download; speed does not depend on the pixels)."""
    on_gpu = torch.cuda.is_available()
    batches = (128, 1024, 8192) if on_gpu else (128, 512, 2048)
    steps = STEPS_PER_EPOCH if on_gpu or full else QUICK_STEPS_PER_EPOCH
    dataset, root, note = full_size_data(scratch, images=steps * max(batches))
    if on_gpu:
        return Setting(torch.device("cuda"), width or 1.0, dataset, root, 10_000, batches, 3, note, model, steps)
    return Setting(torch.device("cpu"), width or 0.25, dataset, root, 1000, batches, 2, note, model, steps)


def full_size_data(
    scratch: Path, images: int, shared: Path = SHARED_CIFAR, cache: Path = Path("~/.cache/lbstudy/data")
) -> tuple[str, str, str]:
    """(dataset, root, description) of at least `images` CIFAR-10-sized training images, without downloading."""
    if images <= 50_000:
        if shared.exists():
            return "imagefolder", str(shared), f"CIFAR-10 JPEGs from {shared}"
        cache = cache.expanduser()
        if (cache / "cifar-10-batches-py").exists():
            return "cifar10", str(cache), f"CIFAR-10 from {cache}"
    per_batch = max(10_000, -(-images // 5))
    write_cifar10_format(scratch, per_batch=per_batch)
    return "cifar10", str(scratch), f"{5 * per_batch:,} random images in CIFAR-10's size and format"


# Training on a CPU is compared at one thread per trial, as studies run by default (cpus_per_worker: 1):
# with every core in one trial, Ray's own threads in the worker process compete with torch's. Measured
# on 2 cores at batch 2048, the bare loop inside a plain Ray task ran at 632-656 images/s against
# 737-762 outside Ray with 2 threads, and at 434-436 against 424-427 with 1 thread.
TRAIN_THREADS_ON_CPU = 1

# The paper's trial, for the projection in (5).
PAPER_TRAIN_IMAGES, PAPER_EVAL_IMAGES, PAPER_EPOCHS, PAPER_BATCHES = 50_000, 20_000, 300, (128, 8192)


def spec_for(s: Setting, batch: int) -> TrialSpec:
    return plan_one(
        f"bench-b{batch}",
        data={
            "dataset": s.dataset,
            "root": s.root,
            "train_subset": s.train_images(batch),
            "test_subset": s.test_subset,
        },
        model={"arch": s.model, "width": s.width},
        sweep={"batch_size": batch, "mixup_alpha": 1.0},
        schedule={"epochs": s.epochs, "decay": "constant", "milestones": []},
        resources={"max_micro_batch": batch},
        eval={"train_eval_samples": 1000},
    )


def fastest_epoch(epochs: list[dict]) -> dict:
    """The fastest epoch after the first (which holds compilation and warm-up). On a shared machine
    noise only ever slows a run down, so the fastest epoch is the least disturbed estimate."""
    return max(epochs[1:] or epochs, key=lambda m: m["images_per_s"])


def bare_loop(spec: TrialSpec, device: torch.device) -> tuple[dict[str, float], float]:
    """(the fastest epoch after the first, per-epoch overhead in seconds): the loop without Ray. The
    overhead is wall time outside the timed steps (evaluation, the epoch's host sync) per epoch."""
    rows: list[dict] = []
    outcome = train(spec, Runtime(device), on_epoch=lambda m, _: rows.append(m.to_dict()))
    wall = time.time() - (outcome.ready_at or time.time())
    return fastest_epoch(rows), (wall - sum(m["epoch_time_s"] for m in rows)) / len(rows)


def plain_loop(spec: TrialSpec, device: torch.device, train_images: int) -> float:
    """A plain PyTorch loop: same model, batch and optimizer; pre-normalized tensors, no augmentation.
    Timed like the loop: rounds of one epoch's steps after a warm-up, the fastest round."""
    data = device_dataset(spec, device)
    model, optimizer = build_model_and_optimizer(spec, data.num_classes, device)
    step_model = compiled(model, spec, device)
    images = (data.train.images[: spec.batch_size].float() / 255 - 0.5) / 0.25
    labels = data.train.labels[: spec.batch_size]
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = torch.nn.functional.cross_entropy(step_model(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    steps, rates = max(1, train_images // spec.batch_size), []
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(steps * spec.batch_size / (time.perf_counter() - started))
    return max(rates)


def eval_images_per_second(spec: TrialSpec, device: torch.device, repeats: int = 3) -> float:
    """The loop's own evaluation (batches of 1024, no gradients) over the test split, after a warm-up."""
    data = device_dataset(spec, device)
    model, _ = build_model_and_optimizer(spec, data.num_classes, device)
    normalize, runtime = Normalizer(data.mean, data.std, device), Runtime(device)
    evaluate(model, data.test, normalize, runtime)
    started = time.perf_counter()
    for _ in range(repeats):
        evaluate(model, data.test, normalize, runtime)  # ends in a host read: nothing left queued
    return repeats * len(data.test) / (time.perf_counter() - started)


def trial_minutes(train_images_per_s: float, eval_images_per_s: float) -> float:
    """One paper trial at these rates: training plus the per-epoch evaluation, no start-up."""
    epoch_s = PAPER_TRAIN_IMAGES / train_images_per_s + PAPER_EVAL_IMAGES / eval_images_per_s
    return PAPER_EPOCHS * epoch_s / 60


def projection(rates: dict[int, float], eval_rate: float) -> list[str]:
    """Lines for (5); batches the bench did not run borrow the nearest measured rate (said so)."""
    lines, total = [], 0.0
    for batch in PAPER_BATCHES:
        nearest = min(rates, key=lambda b: abs(math.log2(b) - math.log2(batch)))
        minutes = trial_minutes(rates[nearest], eval_rate)
        total += 2 * minutes  # with and without mixup: the same cost
        borrowed = "" if nearest == batch else f" (rate of batch {nearest}: {batch} not run here)"
        lines.append(f"  one 300-epoch trial at batch {batch}: {minutes:.1f} min{borrowed}")
    lines.append(f"  the paper's 4 trials one after another: {total:.1f} min (training and evaluation only)")
    return lines


def wait_until_quiet(busy_percent: float = 25.0, at_most_s: float = 60.0) -> None:
    """Return once the machine's CPUs are mostly idle: Ray's agents start up for seconds after
    ray.init, and on a small machine they would share the first trial's cores."""
    import psutil  # a dependency of Ray

    deadline = time.monotonic() + at_most_s
    while psutil.cpu_percent(interval=1.0) > busy_percent and time.monotonic() < deadline:
        pass


def through_ray(s: Setting, batch: int, storage: str, workers: int = 1) -> tuple[dict, dict]:
    """(the trial's row, its fastest epoch after the first) from a one-trial sweep."""
    from analysis.store import ResultsStore
    from study.sweep import run_study

    cpus_per_worker = 1  # one thread per worker on a CPU, as in the bare loop (see TRAIN_THREADS_ON_CPU)
    text = f"""
name: bench-b{batch}-w{workers}
storage: {storage}
data: {{dataset: {s.dataset}, root: "{s.root}", train_subset: {s.train_images(batch)}, test_subset: {s.test_subset}}}
model: {{width: {s.width}}}
schedule: {{epochs: {s.epochs}, decay: constant, milestones: []}}
sweep: {{batch_size: [{batch}], mixup_alpha: [1.0]}}
resources: {{workers: {workers}, cpus_per_worker: {cpus_per_worker}}}
eval: {{train_eval_samples: 1000}}
"""
    result = run_study(parse_study(text))
    epochs = ResultsStore.for_study(storage, result.study.name).read("epochs").sort_values("epoch")
    return result.trials[0], fastest_epoch(epochs.to_dict("records"))


def epoch_overhead(row: dict) -> float:
    """A swept trial's wall time outside its timed steps, per epoch: evaluation, checkpoint, rows, reports."""
    return (row["wall_time_s"] - row["data_ready_s"] - row["train_time_s"]) / row["epochs_completed"]


def startup_parts(row: dict) -> str:
    """A trial's start-up, trial start to first step, in its parts."""
    parts = []
    if row.get("workers_ready_s") == row.get("workers_ready_s") and row.get("workers_ready_s") is not None:
        parts.append(f"placement + worker start + process group {row['workers_ready_s']:.1f} s")
        data_from = row["workers_ready_s"]
    else:
        data_from = 0.0
    parts.append(f"data load + model build {row['data_ready_s'] - data_from:.1f} s")
    parts.append(f"first step {row['startup_s'] - row['data_ready_s']:.1f} s")
    return f"{row['startup_s']:.1f} s = " + " + ".join(parts)


class Table:
    """The bench's lines: printed as measured, so a run cut short keeps what it measured; whole at the end."""

    def __init__(self, header: str) -> None:
        self.header, self.lines = header, []
        print(header, flush=True)

    def add(self, *new: str) -> None:
        self.lines.extend(new)
        for line in new:
            print(f"bench| {line}", flush=True)

    def print(self) -> None:
        print("\n".join(["", self.header, *self.lines]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m study.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="the whole table: also plain PyTorch and the trial through Ray (their via-Ray rates price --dry-run "
        "best), the input pipeline, landscape workers, start-up and the CLI; about 25 minutes on 2 CPU cores",
    )
    parser.add_argument("--model", default="vgg9", help="the model to measure (a study's model.arch; default vgg9)")
    parser.add_argument(
        "--width", type=float, default=None, help="its width (a study's model.width; default 0.25 on a CPU, 1 on a GPU)"
    )
    args = parser.parse_args(argv)
    from trainables.catalog import MODEL_NAMES

    if args.model not in MODEL_NAMES:
        parser.error(f"--model: unknown {args.model!r}; known: {', '.join(MODEL_NAMES)}")
    if args.width is not None and not 0 < args.width <= 16:
        parser.error("--width: a channel multiplier in (0, 16]")
    import ray

    from trainables.ray_train import device_name

    scratch = tempfile.TemporaryDirectory()
    s = setting(args.full, Path(scratch.name), args.model, args.width)
    name = device_name(s.device)
    table = Table(
        f"device: {name}; torch {torch.__version__}; ray {ray.__version__}; {os.cpu_count()} CPUs; "
        f"{s.model} width {s.width:g}; data: {s.data_note}; {s.epochs} epochs of {s.steps_per_epoch} steps per run, "
        "the fastest after the first"
        + (f"; training at {TRAIN_THREADS_ON_CPU} thread per trial" if s.device.type == "cpu" else "")
    )
    record = Record(name, s)
    record.eval_rate = eval_images_per_second(spec_for(s, s.batch_sizes[0]), s.device)
    table.add(f"evaluation {record.eval_rate:,.0f} images/s")
    # The loops without Ray first, before Ray's own processes share the machine: the baseline the
    # swept trial is held to is the loop on a quiet machine.
    bare = bare_loops(s, record, compare=args.full, table=table)
    if args.full:
        full_table(s, name, bare, record, table)
    samples = 500 if s.device.type == "cpu" else 5000
    record.measure.update(measurement_rates(s, samples))
    record.measure.setdefault("points", record.eval_rate)  # a landscape point is forward passes, as evaluation
    path = record.save()
    table.add(
        "",
        f"(7) measurements, one task, {s.model} width {s.width:g}, {samples} images: Hessian-vector products "
        f"{record.measure['products'] / samples:.2f}/s ({record.measure['products']:,.0f} images/s); "
        f"loss-and-gradient steps {record.measure['steps'] / samples:.2f}/s ({record.measure['steps']:,.0f} "
        f"images/s); landscape points {record.measure['points']:,.0f} images/s"
        + ("" if args.full else " (the evaluation rate; --full times them through Ray)"),
    )
    table.add("", f"rates recorded in {path} (run_sweep --dry-run turns a study's images into hours with them)")
    table.print()
    scratch.cleanup()


@dataclasses.dataclass
class Record:
    """What this run has measured so far, saved to the bench record each time something is added (`save`)."""

    device: str
    s: Setting
    eval_rate: float = math.nan
    train: dict[int, float] = dataclasses.field(default_factory=dict)
    via_ray: dict[int, float] = dataclasses.field(default_factory=dict)
    measure: dict[str, float] = dataclasses.field(default_factory=dict)

    def save(self) -> Path:
        return write_bench_record(
            self.device, self.s.width, self.train, self.eval_rate, self.measure, self.via_ray, self.s.model
        )


def full_table(s: Setting, name: str, bare: dict[int, tuple[dict, float, float]], record: Record, table: Table) -> None:
    """(1)-(6) of the module's table: the trial through Ray beside the loops, the input pipeline, landscape
    workers, start-up, the paper's projection and the CLI's answers."""
    import ray

    from study.cluster import TRIAL_RESOURCE, TRIAL_RESOURCE_AMOUNT, quiet_token_notice

    quiet_token_notice()
    ray.init(
        address="local", resources={TRIAL_RESOURCE: TRIAL_RESOURCE_AMOUNT}, include_dashboard=False, log_to_driver=False
    )
    wait_until_quiet()
    startups = training_through_ray(s, bare, table, record)
    input_pipeline(s, table)
    record.measure["points"] = landscape(s, table)
    record.save()
    table.add(
        "", "(4) per-trial start-up, trial start to first optimizer step", *[f"  {k}: {v}" for k, v in startups.items()]
    )
    table.add(
        "",
        f"(5) evaluation {record.eval_rate:,.0f} images/s; projected for the paper on this device "
        f"({s.model} width {s.width:g}; {PAPER_EPOCHS} epochs of {PAPER_TRAIN_IMAGES:,} images, "
        f"{PAPER_EVAL_IMAGES:,} evaluated per epoch):",
        *projection(record.train, record.eval_rate),
    )
    if s.device.type != "cuda" or peak_flops(name) is None:
        model = build_model(s.model, width=s.width)
        table.add(
            "",
            f"MFU: no peak FLOP/s known for {name}; FLOPs per image: forward "
            f"{forward_flops_per_image(model):.3g}, training (forward + backward) {train_flops_per_image(model):.3g}",
        )
    ray.shutdown()
    table.add("", "(6) the CLI's fast answers", *cli_timings())


def bare_loops(s: Setting, record: Record, compare: bool, table: Table) -> dict[int, tuple[dict, float, float]]:
    """Per batch size: the loop's best epoch without Ray, its per-epoch overhead, and (`compare`) plain
    torch's images/s (NaN without); each rate saved to the record as it is measured."""
    threads = torch.get_num_threads()
    if s.device.type == "cpu":
        torch.set_num_threads(TRAIN_THREADS_ON_CPU)
    bare = {}
    for batch in s.batch_sizes:
        epoch, overhead = bare_loop(spec_for(s, batch), s.device)
        plain = plain_loop(spec_for(s, batch), s.device, s.train_images(batch)) if compare else math.nan
        bare[batch] = (epoch, overhead, plain)
        record.train[batch] = epoch["images_per_s"]
        record.save()
        said = f", plain torch {plain:,.0f} images/s" if compare else ""
        table.add(f"batch {batch}: training loop {epoch['images_per_s']:,.0f} images/s{said}")
    torch.set_num_threads(threads)
    return bare


def training_through_ray(
    s: Setting, bare: dict[int, tuple[dict, float, float]], table: Table, record: Record
) -> dict[str, str]:
    """(1) the swept trial through Ray beside the bare loop and plain torch; returns the start-up times seen.
    The via-Ray images/s per batch (what --dry-run's hours use) go to the record as they are measured."""
    table.add(
        "",
        f"(1) training: {s.steps_per_epoch} steps per epoch; images/s over the steps (MFU where the device's peak "
        "is known); per-epoch overhead: seconds per epoch outside the steps (evaluation; via Ray also the "
        "checkpoint, the rows and the reports)",
        f"{'batch':>6} {'bare loop':>10} {'MFU':>6} {'via Ray':>10} {'Ray/bare':>9} {'epoch+ bare':>11} "
        f"{'epoch+ Ray':>10} {'plain torch':>11} {'ours/plain':>10}",
    )
    startups: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as storage:
        for batch in s.batch_sizes:
            (epoch, overhead, plain), (row, ray_epoch) = bare[batch], through_ray(s, batch, storage)
            startups.setdefault("1 worker (in the Tune trial)", startup_parts(row))
            loop_rate, ray_rate = epoch["images_per_s"], ray_epoch["images_per_s"]
            record.via_ray[batch] = ray_rate
            record.save()
            mfu_text = f"{100 * epoch['mfu']:.1f}%" if epoch.get("mfu") else "-"
            table.add(
                f"{batch:>6} {loop_rate:>10,.0f} {mfu_text:>6} {ray_rate:>10,.0f} {ray_rate / loop_rate:>9.2f} "
                f"{overhead:>10.2f}s {epoch_overhead(row):>9.2f}s {plain:>11,.0f} {loop_rate / plain:>10.2f}"
            )
        if s.device.type == "cpu":
            two, _ = through_ray(s, s.batch_sizes[0], storage, workers=2)
            startups["2 workers (TorchTrainer)"] = startup_parts(two)
    return startups


def input_pipeline(s: Setting, table: Table) -> None:
    """(2) our device-resident pipeline against a DataLoader with PIL, on the real images where present."""
    from study.bench_data import bench_dataloader, bench_device_pipeline

    data = (
        load_dataset("imagefolder", SHARED_CIFAR, train_subset=10_000)
        if SHARED_CIFAR.exists()
        else load_dataset("synthetic", "", train_subset=4096)
    )
    ours = bench_device_pipeline(data, 128, 1.0, s.device)
    dataloader = bench_dataloader(data, 128, os.cpu_count() or 1, 1.0)
    table.add(
        "",
        "(2) input pipeline, batch 128, crop + flip + normalize + mixup",
        f"  device pipeline {ours:,.0f} images/s; DataLoader + PIL ({os.cpu_count()} workers) "
        f"{dataloader:,.0f} images/s; ratio {ours / dataloader:.1f}x",
    )


def measurement_rates(s: Setting, samples: int, repeats: int = 3) -> dict[str, float]:
    """Images/s of a Hessian-vector product and of a loss-and-gradient step (eps-sharpness) on `samples`
    images, as a measurement task computes them: BatchNorm in eval mode, one thread on a CPU (a task holds
    one CPU) in pieces of CPU_BATCH images, the fastest of `repeats` after a warm-up. Random weights: the
    cost does not depend on them."""
    from study.measures.common import CPU_BATCH
    from trainables.sharpness import hessian_vector_product

    threads = torch.get_num_threads()
    if s.device.type == "cpu":
        torch.set_num_threads(1)
    model = build_model(s.model, width=s.width).to(s.device).eval()
    piece = CPU_BATCH if s.device.type == "cpu" else 512
    images = torch.randn(samples, 3, 32, 32, device=s.device)
    labels = torch.randint(0, 10, (samples,), device=s.device)
    batches = [(images[i : i + piece], labels[i : i + piece]) for i in range(0, samples, piece)]
    params = [p for p in model.parameters() if p.requires_grad]
    vector = [torch.randn_like(p) for p in params]

    def loss(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])

    def step() -> None:
        for batch in batches:
            torch.autograd.grad(loss(batch) * len(batch[1]) / samples, params)

    def fastest(work: Any) -> float:
        work()
        times = []
        for _ in range(repeats):
            if s.device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            work()
            if s.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        return samples / min(times)

    rates = {
        "products": fastest(lambda: hessian_vector_product(loss, batches, params, vector)),
        "steps": fastest(step),
    }
    torch.set_num_threads(threads)
    return rates


def landscape(s: Setting, table: Table) -> float:
    """(3) 1-D interpolation points/s on one worker and on all (one per CPU here, one per GPU there: a
    second worker on a single GPU would only queue)."""
    from study.bench_landscape import points_per_second

    most = 2 if s.device.type == "cpu" else torch.cuda.device_count()
    counts = [1, most] if most > 1 else [1]
    samples = 2000 if s.device.type == "cpu" else 10_000
    rates = points_per_second(s.width, samples, 8, counts, s.model)
    table.add(
        "",
        f"(3) 1-D landscape, {samples} images per point",
        "  "
        + "; ".join(f"{counted(n, 'worker')} {rate:.3f} points/s" for n, rate in rates.items())
        + (f"; speed-up {rates[most] / rates[1]:.2f}x" if most > 1 else ""),
    )
    return rates[1] * samples  # images/s of one worker's points


def cli_timings(repeats: int = 3) -> list[str]:
    """Seconds for `run_sweep --help` and `--dry-run` (the fastest of a few runs, in fresh interpreters)."""
    lines = []
    for what, args in (("--help", ["--help"]), ("--dry-run", ["studies/smoke.yaml", "--dry-run"])):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "study.run_sweep", *args], capture_output=True, check=True)
            times.append(time.perf_counter() - started)
        lines.append(f"  run_sweep {what}: {min(times):.2f} s")
    return lines


if __name__ == "__main__":
    main()
