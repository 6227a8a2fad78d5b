"""The pure training loop: one trial on one process, or on several under torch.distributed.

No Ray here. `study` builds a `TrialSpec` (trainables/trial.py); `trainables.ray_train` runs `train` inside Ray Train
workers; tests run it directly.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from trainables.augment import apply as apply_augmentation
from trainables.augment import sample_draws
from trainables.data import (
    CropFlip,
    Dataset,
    Normalizer,
    Split,
    class_balanced_subset,
    crop_flip,
    derived_seed,
    global_batches,
    load_dataset,
    worker_slice,
)
from trainables.flops import mfu, peak_flops, train_flops_per_image
from trainables.lr import LRSchedule
from trainables.mixup import MixedBatch, mixed_cross_entropy
from trainables.models import build_model
from trainables.optim import build_optimizer
from trainables.sharpness import noise_scale, pooled_grad_sq
from trainables.trial import EpochMetrics, Status, TrialSpec

CROP_PADDING = 4
# Independent random streams derived from (seed, epoch, stream).
STREAM_AUGMENT, STREAM_MIXUP, STREAM_PROBE = 1, 2, 3
NOISE_BLOCKS_PER_EPOCH = 8  # multi-worker noise-scale units per epoch: blocks of steps, for the bootstrap


@dataclass(frozen=True)
class Runtime:
    """Where this process trains: its device and its place among the data-parallel workers."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


EpochCallback = Callable[[EpochMetrics, Callable[[], dict[str, Any]]], None]


def build_model_and_optimizer(
    spec: TrialSpec, num_classes: int, device: torch.device
) -> tuple[nn.Module, torch.optim.Optimizer]:
    # The same seed on every worker gives every replica the same initial weights.
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, width=spec.width, num_classes=num_classes, ghost_batch=spec.ghost_batch).to(device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution once
    optimizer = build_optimizer(
        spec.optimizer,
        model,
        lr=spec.peak_lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov,
        weight_decay=spec.weight_decay,
        trust_coefficient=spec.trust_coefficient,
        decayed=spec.decayed,
    )
    return model, optimizer


def compiled(model: nn.Module, spec: TrialSpec, device: torch.device) -> nn.Module:
    """The module the training step runs: torch.compile'd where asked (default: on CUDA only).

    Small micro-batches are launch-bound, so they get CUDA graphs (mode reduce-overhead); large ones
    the default mode. Evaluation runs the plain module, which shares the parameters.
    """
    use = spec.compile if spec.compile is not None else device.type == "cuda"
    if not use:
        return model
    mode = "reduce-overhead" if device.type == "cuda" and spec.micro_batch <= 256 else "default"
    # Tune reuses a trial's process for the next trial: each trial compiles afresh, so an earlier trial's
    # shapes neither count toward dynamo's recompile limit nor turn this trial's shapes dynamic.
    torch.compiler.reset()
    return torch.compile(model, mode=mode)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    # bf16 on CUDA (BatchNorm stays float32 under autocast); float32 on CPU and on GPUs without bf16
    # (V100, T4), where bf16 autocast would raise. fp16 would need loss scaling, whose overflow
    # check reads a flag on the host every step.
    if device.type == "cuda" and _native_bf16(device.index):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@functools.cache
def _native_bf16(device_index: int | None) -> bool:  # asked once, not on every micro-batch
    with torch.cuda.device(device_index):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def gradient_buffer(model: nn.Module) -> torch.Tensor:
    """One zeroed buffer holding every parameter's gradient; each `.grad` becomes a view of it.

    Each view has its parameter's strides (channels_last included), as fused optimizers require.
    The buffer lives for the whole trial: a step zeroes it with one kernel and all-reduces it in one
    call without copies, and `.grad` is never allocated inside a CUDA graph (compile's
    reduce-overhead mode would overwrite such gradients between accumulated micro-batches).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=params[0].dtype)
    offset = 0
    for p in params:
        p.grad = flat.as_strided(p.shape, p.stride(), offset)
        offset += p.numel()
    return flat


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[MixedBatch],
    lr: float,
    runtime: Runtime,
    grads: torch.Tensor,
    label_smoothing: float = 0.0,
) -> dict[str, torch.Tensor]:
    """One optimizer step over this worker's micro-batches; gradients averaged over all workers.

    `grads` is the model's `gradient_buffer`. Returns device tensors (no host sync): the mean loss,
    the squared norm of a worker's gradient (averaged over workers) and that of the all-reduced one;
    the two feed the gradient noise scale.
    """
    grads.zero_()
    loss_sum = torch.zeros((), device=runtime.device)
    for batch in micro_batches:
        with autocast(runtime.device):
            loss = mixed_cross_entropy(model(batch.images), batch, label_smoothing) / len(micro_batches)
        loss.backward()
        loss_sum += loss.detach().float()
    local_grad_sq = grad_sq = grads.square().sum()  # one worker: the local gradient is the gradient
    if runtime.distributed:
        dist.all_reduce(grads)
        grads /= runtime.world_size
        scalars = torch.stack([loss_sum, local_grad_sq])  # one all-reduce for both means
        dist.all_reduce(scalars)
        loss_sum, local_grad_sq = scalars / runtime.world_size
        grad_sq = grads.square().sum()  # before the step: an optimizer may update gradients in place
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    return {"loss": loss_sum, "local_grad_sq": local_grad_sq, "grad_sq": grad_sq}


def worker_micro_batches(
    split: Split,
    normalize: Normalizer,
    batch_index: torch.Tensor,
    spec: TrialSpec,
    runtime: Runtime,
    augment_gen: torch.Generator,
    rng: np.random.Generator,
) -> list[MixedBatch]:
    """This worker's micro-batches of one global batch: crop/flip, normalize, then the batch augmentation.

    Random draws are made for the whole global batch on every worker and then sliced, so the
    result does not depend on how the batch is split into workers x accumulation steps.
    """
    device = runtime.device
    mine = worker_slice(batch_index, runtime.rank, runtime.world_size).to(device)  # a no-op in train()
    images = split.images[mine]
    if spec.augment:
        params = CropFlip.sample(spec.batch_size, CROP_PADDING, augment_gen)
        per_worker = spec.batch_size // spec.workers
        images = crop_flip(
            images, params.select(slice(runtime.rank * per_worker, (runtime.rank + 1) * per_worker)), CROP_PADDING
        )
    images = normalize(images)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    labels = split.labels[mine]
    aug = spec.augment_batch
    draws = sample_draws(
        aug,
        spec.batch_size,
        spec.workers * spec.accumulation_steps,
        spec.micro_batch,
        (images.shape[2], images.shape[3]),
        augment_gen,
        rng,
    )
    batches = []
    for a in range(spec.accumulation_steps):
        rows = slice(a * spec.micro_batch, (a + 1) * spec.micro_batch)
        m = runtime.rank * spec.accumulation_steps + a  # this micro-batch's index in the global batch
        global_rows = slice(m * spec.micro_batch, (m + 1) * spec.micro_batch)
        batches.append(apply_augmentation(aug, images[rows], labels[rows], draws, m, global_rows))
    return batches


# Images per evaluation forward pass: large batches feed a GPU; a CPU runs VGG9 width 0.25 ~2x faster in
# batches of 128 than of 1024 (the activations stay in cache; 2,329 against 1,026 images/s on one thread).
EVAL_BATCH = {"cuda": 1024, "cpu": 128}


@torch.no_grad()
def evaluate(
    model: nn.Module, split: Split, normalize: Normalizer, runtime: Runtime, batch_size: int | None = None
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in eval mode, no augmentation; shards over workers when distributed."""
    batch_size = batch_size or EVAL_BATCH.get(runtime.device.type, 1024)
    was_training = model.training
    model.eval()
    n = len(split)
    start, stop = runtime.rank * n // runtime.world_size, (runtime.rank + 1) * n // runtime.world_size
    totals = torch.zeros(3, device=runtime.device, dtype=torch.float64)
    for i in range(start, stop, batch_size):
        j = min(i + batch_size, stop)
        images = normalize(split.images[i:j])
        if runtime.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(runtime.device):
            logits = model(images).float()
        labels = split.labels[i:j]
        totals[0] += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
        totals[1] += (logits.argmax(dim=1) == labels).sum()
        totals[2] += j - i
    if runtime.distributed:
        dist.all_reduce(totals)
    model.train(was_training)
    loss, correct, count = totals.tolist()
    return loss / max(count, 1), correct / max(count, 1)


def noise_probe(
    model: nn.Module,
    split: Split,
    normalize: Normalizer,
    pairs: int,
    size: int,
    generator: torch.Generator,
    device: torch.device,
) -> list[tuple[float, float]]:
    """Squared gradient norms at batch `size` and `2 size`, one (small, big) per random batch pair.

    For one-worker trials, where per-worker and all-reduced gradients coincide. Each pair is 2 size
    distinct images (without replacement from the split, which `noise_scale` corrects for); small is
    the mean over its two halves. Runs in train mode (BatchNorm as in training) and restores the
    BatchNorm statistics afterwards; no optimizer step.
    """
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    params = [p for p in model.parameters() if p.requires_grad]
    units = []
    for _ in range(pairs):
        index = torch.randperm(len(split), generator=generator, device=generator.device)[: 2 * size].to(device)
        grads = []
        for half in (index[:size], index[size:]):
            with autocast(device):
                loss = nn.functional.cross_entropy(model(normalize(split.images[half])).float(), split.labels[half])
            grads.append(torch.cat([g.reshape(-1).float() for g in torch.autograd.grad(loss, params)]))
        units.append(
            (
                float((grads[0].square().sum() + grads[1].square().sum()) / 2),
                float(((grads[0] + grads[1]) / 2).square().sum()),
            )
        )
    model.load_state_dict({**model.state_dict(), **buffers})
    return units


def sync_buffers(model: nn.Module, runtime: Runtime) -> None:
    """Average the BatchNorm running statistics over workers before evaluating or saving.

    Each worker's statistics saw only its own micro-batches; the average uses all of the data
    (DDP instead copies rank 0's, which sees 1/world of it).
    """
    if runtime.distributed:
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= runtime.world_size


def parameter_norm(model: nn.Module) -> float:
    return float(torch.linalg.vector_norm(torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])))


def training_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, spec: TrialSpec, epoch: int, step: int
) -> dict[str, Any]:
    """What a checkpoint holds. Data order and augmentation derive from (seed, epoch), so resuming at an
    epoch boundary repeats them exactly; torch's global RNG state is kept for anything else."""
    return {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "epoch": epoch,
        "step": step,
        "spec": spec.to_dict(),
        "torch_rng": torch.get_rng_state(),
    }


def device_dataset(spec: TrialSpec, device: torch.device, dataset: Dataset | None = None) -> Dataset:
    dataset = dataset or load_dataset(
        spec.dataset, spec.data_root, train_subset=spec.train_subset, test_subset=spec.test_subset
    )
    return dataclasses.replace(dataset, train=dataset.train.to(device), test=dataset.test.to(device))


def noise_metrics(
    units: list[tuple[float, float, float]], small_batch: int, big_batch: int, population: int
) -> dict[str, Any]:
    """Squared gradient norms at two batch sizes and the epoch's B_simple (McCandlish et al. 2018).

    Under data parallelism the pair is free: one worker's gradient (batch / workers) and the
    all-reduced one (batch), both drawn without replacement from the `population` training images.
    A one-worker trial gets its pairs from `noise_probe`. `units` are (small, big, weight) as
    `trainables.sharpness.noise_scale_interval` takes them; they are kept so that the trial's value
    can carry a bootstrap interval.
    """
    if small_batch >= big_batch or not units:
        return {
            "noise_small_batch": math.nan,
            "noise_small_grad_sq": math.nan,
            "noise_big_batch": math.nan,
            "noise_big_grad_sq": math.nan,
            "noise_scale": math.nan,
            "noise_population": None,
            "noise_units": None,
        }
    small_sq, big_sq = pooled_grad_sq(units)
    estimate = noise_scale(small_batch, small_sq, big_batch, big_sq, population)
    return {
        "noise_small_batch": small_batch,
        "noise_small_grad_sq": small_sq,
        "noise_big_batch": big_batch,
        "noise_big_grad_sq": big_sq,
        "noise_scale": estimate["b_simple"],
        "noise_population": population,
        "noise_units": json.dumps([list(u) for u in units]),
    }


def step_blocks(
    local_grad_sq: torch.Tensor, grad_sq: torch.Tensor, blocks: int = NOISE_BLOCKS_PER_EPOCH
) -> list[tuple[float, float, float]]:
    """Per-step squared norms of an epoch as at most `blocks` (small mean, big mean, steps) units."""
    units = []
    for small, big in zip(local_grad_sq.double().tensor_split(blocks), grad_sq.double().tensor_split(blocks)):
        if len(small):
            units.append((float(small.mean()), float(big.mean()), float(len(small))))
    return units


# An epoch's mean training loss above this many times ln(classes) (the loss of a uniform guess) has
# exploded: such a trial is diverged even while its loss is finite (peak lr 6400 gave 1.3e11).
EXPLODED_LOSS_FACTOR = 10.0


def divergence(train_loss: float, num_classes: int) -> str | None:
    """Why an epoch's mean training loss means divergence, or None when it does not."""
    if not math.isfinite(train_loss):
        return f"train loss {train_loss} is not finite"
    limit = EXPLODED_LOSS_FACTOR * math.log(num_classes)
    if train_loss > limit:
        return f"train loss {train_loss:.4g} exceeds {limit:.3g} = 10 ln({num_classes} classes): it exploded"
    return None


@dataclass(frozen=True)
class TrialOutcome:
    status: Status  # completed | diverged (| failed, set by the Ray adapter when the data cannot load)
    epochs: int
    steps: int
    first_step_at: float | None = None  # time.time() when this run's first optimizer step returned
    ready_at: float | None = None  # time.time() when the data was on the device and the model built


@dataclass
class Training:
    """One trial set up to train: its data on the device, model, optimizer and schedule, and where it is."""

    spec: TrialSpec
    runtime: Runtime
    data: Dataset
    normalize: Normalizer
    eval_train: Any  # the fixed subset clean train metrics are measured on
    model: nn.Module
    train_model: Callable[..., Any]  # the model as the training step calls it (compiled where asked)
    optimizer: torch.optim.Optimizer
    grads: Any  # the flat gradient buffer steps accumulate into
    schedule: LRSchedule
    steps_per_epoch: int
    flops_per_image: float
    peak_flops: float | None
    start_epoch: int
    step: int  # optimizer steps taken so far


def set_up(spec: TrialSpec, runtime: Runtime, dataset: Dataset | None, resume: dict[str, Any] | None) -> Training:
    """The data on the device, the model and optimizer (from `resume` where given), the LR schedule."""
    device = runtime.device
    data = device_dataset(spec, device, dataset)
    if len(data.train) < spec.batch_size:
        raise ValueError(
            f"{spec.trial_id}: batch size {spec.batch_size} exceeds the {len(data.train)} "
            "training images; lower sweep.batch_size or raise data.train_subset"
        )
    eval_train = data.train
    if spec.train_eval_samples is not None and spec.train_eval_samples < len(data.train):
        eval_train = data.train.take(
            class_balanced_subset(data.train.labels.cpu(), spec.train_eval_samples, data.num_classes).to(device)
        )
    model, optimizer = build_model_and_optimizer(spec, data.num_classes, device)
    start_epoch, step = 0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        start_epoch, step = int(resume["epoch"]), int(resume["step"])
        torch.set_rng_state(resume["torch_rng"])
    steps_per_epoch = len(data.train) // spec.batch_size
    schedule = LRSchedule.from_epochs(
        peak_lr=spec.peak_lr,
        steps_per_epoch=steps_per_epoch,
        epochs=spec.epochs,
        warmup_epochs=spec.warmup_epochs,
        decay=spec.decay,
        milestones=spec.milestones,
        gamma=spec.gamma,
    )
    return Training(
        spec,
        runtime,
        data,
        Normalizer(data.mean, data.std, device),
        eval_train,
        model,
        compiled(model, spec, device),
        optimizer,
        gradient_buffer(model),
        schedule,
        steps_per_epoch,
        train_flops_per_image(model),
        peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None,
        start_epoch,
        step,
    )


def train_epoch(t: Training, epoch: int) -> tuple[EpochMetrics, float | None]:
    """One epoch of optimizer steps, then its evaluation and noise-scale units: (its metrics, the time
    its first step returned)."""
    spec, device = t.spec, t.runtime.device
    started = time.perf_counter()
    first_step_at: float | None = None
    augment_gen = torch.Generator(device=device).manual_seed(derived_seed(spec.seed, epoch, STREAM_AUGMENT))
    rng = np.random.default_rng(derived_seed(spec.seed, epoch, STREAM_MIXUP))
    per_step: dict[str, list[torch.Tensor]] = {"loss": [], "local_grad_sq": [], "grad_sq": []}
    lr = t.schedule(t.step)
    for batch_index in global_batches(len(t.data.train), spec.batch_size, spec.seed, epoch, device):
        micro = worker_micro_batches(t.data.train, t.normalize, batch_index, spec, t.runtime, augment_gen, rng)
        lr = t.schedule(t.step)
        result = optimizer_step(t.train_model, t.optimizer, micro, lr, t.runtime, t.grads, spec.label_smoothing)
        for key, value in result.items():
            per_step[key].append(value)
        t.step += 1
        if first_step_at is None:
            first_step_at = time.time()
    steps = {k: torch.stack(v).cpu() for k, v in per_step.items()}  # the one host sync of the epoch
    means = {k: float(v.mean()) for k, v in steps.items()}
    train_time = time.perf_counter() - started
    sync_buffers(t.model, t.runtime)
    diverged_reason = divergence(means["loss"], t.data.num_classes)
    images_per_s = t.steps_per_epoch * spec.batch_size / train_time
    metrics: dict[str, Any] = {
        "epoch": epoch + 1,
        "step": t.step,
        "lr": lr,
        "train_loss": means["loss"],
        "grad_norm_rms": math.sqrt(means["grad_sq"]) if math.isfinite(means["grad_sq"]) else math.nan,
        "local_grad_sq": means["local_grad_sq"],
        "grad_sq": means["grad_sq"],
        "param_norm": parameter_norm(t.model),
        "epoch_time_s": train_time,
        "images_per_s": images_per_s,
        "mfu": mfu(images_per_s, t.flops_per_image, t.peak_flops),
        **evaluation(t, epoch, diverged=diverged_reason is not None),
        **noise_metrics(
            step_blocks(steps["local_grad_sq"], steps["grad_sq"]),
            spec.batch_size // spec.workers,
            spec.batch_size,
            len(t.data.train),
        ),
    }
    if spec.noise_probes > 0 and spec.workers == 1 and diverged_reason is None:
        # Capped: the estimate is unbiased at any pair of sizes (finite-population corrected), and
        # large probes would cost more than a large-batch epoch itself.
        size = min(spec.micro_batch, spec.noise_probe_batch, len(t.data.train) // 2)
        probe_gen = torch.Generator(device=device).manual_seed(derived_seed(spec.seed, epoch, STREAM_PROBE))
        pairs = noise_probe(t.model, t.data.train, t.normalize, spec.noise_probes, size, probe_gen, device)
        metrics.update(noise_metrics([(s, b, 1.0) for s, b in pairs], size, 2 * size, len(t.data.train)))
    record = EpochMetrics(**metrics, diverged=diverged_reason is not None, diverged_reason=diverged_reason)
    return record, first_step_at


def evaluation(t: Training, epoch: int, *, diverged: bool) -> dict[str, float]:
    """Clean train and test loss and accuracy, on evaluated epochs (every eval_every_epochs and the last);
    NaN on the others and after divergence."""
    last = epoch + 1 == t.spec.epochs
    if diverged or not (last or (epoch + 1) % t.spec.eval_every_epochs == 0):
        return {"clean_train_loss": math.nan, "clean_train_acc": math.nan, "test_loss": math.nan, "test_acc": math.nan}
    clean_loss, clean_acc = evaluate(t.model, t.eval_train, t.normalize, t.runtime)
    test_loss, test_acc = evaluate(t.model, t.data.test, t.normalize, t.runtime)
    return {"clean_train_loss": clean_loss, "clean_train_acc": clean_acc, "test_loss": test_loss, "test_acc": test_acc}


def train(
    spec: TrialSpec,
    runtime: Runtime,
    *,
    dataset: Dataset | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrialOutcome:
    """Train one trial from scratch or from `resume`; call `on_epoch(metrics, make_checkpoint)` each epoch."""
    t = set_up(spec, runtime, dataset, resume)
    t.model.train()
    first_step_at: float | None = None
    ready_at = time.time()
    for epoch in range(t.start_epoch, spec.epochs):
        record, first = train_epoch(t, epoch)
        first_step_at = first_step_at or first
        if on_epoch is not None:
            on_epoch(record, functools.partial(training_state, t.model, t.optimizer, spec, epoch + 1, t.step))
        if record.diverged:
            return TrialOutcome(Status.DIVERGED, epoch + 1, t.step, first_step_at, ready_at)
    return TrialOutcome(Status.COMPLETED, spec.epochs, t.step, first_step_at, ready_at)
