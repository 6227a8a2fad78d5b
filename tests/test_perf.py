"""The performance pieces that are checkable anywhere, and the CUDA fast path where CUDA is present."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from study.bench_data import write_cifar10_format
from study.plan import plan_one
from trainables.data import Normalizer, global_batches, load_dataset
from trainables.flops import forward_flops_per_image, mfu, peak_flops, train_flops_per_image
from trainables.loop import (
    Runtime,
    build_model_and_optimizer,
    compiled,
    gradient_buffer,
    optimizer_step,
    train,
    worker_micro_batches,
)
from trainables.mixup import MixedBatch
from trainables.models import build_model, vgg9

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TINY = plan_one(
    "perf",
    data={"dataset": "synthetic", "train_subset": 512, "test_subset": 256},
    model={"width": 0.25},
    sweep={"batch_size": 128, "mixup_alpha": 0.0},
    schedule={"epochs": 1, "decay": "constant"},
    eval={"train_eval_samples": 256},
)


def test_vgg9_forward_flops_match_the_hand_count() -> None:
    # convs at 32x32: 3->64, 64->64; at 16x16: 64->128, 128->128; at 8x8: 128->256, 256->256 x2; two linears
    by_hand = 2 * 9 * (
        3 * 64 * 1024 + 64 * 64 * 1024 + 64 * 128 * 256 + 128 * 128 * 256 + 128 * 256 * 64 + 2 * 256 * 256 * 64
    ) + 2 * (4096 * 256 + 256 * 10)
    assert forward_flops_per_image(vgg9()) == by_hand == 383_128_576  # the 0.383 GFLOP
    # Backward: input and weight gradients of every layer but the first conv's input: 3x less that one.
    first_conv_input_grad = 2 * 9 * 3 * 64 * 1024
    assert train_flops_per_image(vgg9()) == 3 * by_hand - first_conv_input_grad


def test_flop_counting_leaves_the_model_untouched() -> None:
    model = vgg9(width=0.25).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_flops_per_image(model)
    forward_flops_per_image(model)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_peak_table_and_mfu() -> None:
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A10G") == 70e12 and peak_flops("Some Future GPU") is None
    assert mfu(100_000, 3 * 383e6, 989e12) == pytest.approx(100_000 * 3 * 383e6 / 989e12)
    assert mfu(100_000, 383e6, None) is None


def test_cpu_run_records_no_mfu_and_does_not_compile() -> None:
    rows: list[dict] = []
    train(TINY, Runtime(torch.device("cpu")), on_epoch=lambda m, _: rows.append(m.to_dict()))
    assert rows[-1]["mfu"] is None
    model, _ = build_model_and_optimizer(TINY, 10, torch.device("cpu"))
    assert compiled(model, TINY, torch.device("cpu")) is model


def test_compile_switch_is_honoured_on_cpu() -> None:
    spec = dataclasses.replace(TINY, compile=True)
    model, _ = build_model_and_optimizer(spec, 10, torch.device("cpu"))
    assert compiled(model, spec, torch.device("cpu")) is not model


def test_gradient_buffer_views_keep_each_parameters_layout_for_fused_sgd() -> None:
    # The CUDA layout (channels_last) and optimizer (fused SGD) on the CPU, against a plain contiguous
    # model whose gradients autograd allocates: two steps of two accumulated micro-batches each.
    torch.manual_seed(0)
    images, labels = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    batches = [MixedBatch(images[s], labels[s], labels.roll(1)[s], 0.6) for s in (slice(0, 16), slice(16, 32))]

    def trained(fast: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(1)
        model = build_model("vgg9", width=0.25)
        if fast:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=fast or None
        )
        if fast:
            grads = gradient_buffer(model)
            assert all(
                p.grad.stride() == p.stride() and p.grad.data_ptr() >= grads.data_ptr() for p in model.parameters()
            )
            assert model.features[0].weight.grad.stride() != model.features[0].weight.grad.contiguous().stride()
            for _ in range(2):
                optimizer_step(
                    model,
                    optimizer,
                    [
                        MixedBatch(
                            b.images.contiguous(memory_format=torch.channels_last), b.labels_a, b.labels_b, b.lam
                        )
                        for b in batches
                    ],
                    0.1,
                    Runtime(torch.device("cpu")),
                    grads,
                )
        else:
            for _ in range(2):
                optimizer.zero_grad(set_to_none=True)
                for b in batches:
                    out = model(b.images)
                    loss = (
                        b.lam * torch.nn.functional.cross_entropy(out, b.labels_a)
                        + (1 - b.lam) * torch.nn.functional.cross_entropy(out, b.labels_b)
                    ) / 2
                    loss.backward()
                optimizer.step()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    fast, plain = trained(True), trained(False)
    for key in plain:
        assert torch.allclose(fast[key].float(), plain[key].float(), rtol=1e-4, atol=1e-5), key


@pytest.mark.slow
def test_compiled_training_matches_eager_on_cpu() -> None:
    # torch.compile (inductor, the C++ backend here) through the whole loop, with gradient accumulation:
    # the same trajectory as eager up to float reordering (~30 s, mostly compilation).
    spec = plan_one(
        "compiled",
        data={"dataset": "synthetic", "train_subset": 512, "test_subset": 256},
        model={"width": 0.25},
        sweep={"batch_size": 64, "mixup_alpha": 1.0},
        optim={"base_lr": 0.05},
        schedule={"epochs": 2, "decay": "constant"},
        resources={"max_micro_batch": 32},
        eval={"train_eval_samples": 256},
    )
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for use_compile in runs:
        train(
            dataclasses.replace(spec, compile=use_compile),
            Runtime(torch.device("cpu")),
            on_epoch=lambda m, _, rows=runs[use_compile]: rows.append(m.to_dict()),
        )
    for eager, comp in zip(runs[False], runs[True]):
        assert comp["train_loss"] == pytest.approx(eager["train_loss"], rel=5e-3)
        assert comp["param_norm"] == pytest.approx(eager["param_norm"], rel=1e-4)
        assert abs(comp["test_acc"] - eager["test_acc"]) <= 0.05
    assert runs[True][-1]["test_acc"] > 0.5  # learned: chance is 0.1


@CUDA
def test_cuda_step_never_waits_for_the_device() -> None:
    # No host synchronization between optimizer steps: metrics stay on the device, batch indices are
    # moved once per epoch. CUDA's sync debug mode raises on any synchronizing call.
    device, spec = torch.device("cuda"), dataclasses.replace(TINY, augmentation="cutmix", augmentation_alpha=1.0)
    data = load_dataset("synthetic", "", train_subset=512, test_subset=256)
    train_split = data.train.to(device)
    normalize = Normalizer(data.mean, data.std, device)
    model, optimizer = build_model_and_optimizer(spec, 10, device)
    grads, runtime = gradient_buffer(model), Runtime(device)
    generator, rng = torch.Generator(device=device).manual_seed(0), np.random.default_rng(0)
    batches = global_batches(len(train_split), spec.batch_size, 0, 0, device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        total = torch.zeros((), device=device)
        for index in batches:
            micro = worker_micro_batches(train_split, normalize, index, spec, runtime, generator, rng)
            total += optimizer_step(model, optimizer, micro, 0.05, runtime, grads)["loss"]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(total)


@CUDA
def test_cuda_graphs_with_gradient_accumulation() -> None:
    # reduce-overhead (micro-batch <= 256) with accumulation: gradients must outlive each graph replay.
    spec = dataclasses.replace(TINY, train_subset=1024, batch_size=256, micro_batch=64, accumulation_steps=4, epochs=2)
    rows: list[dict] = []
    outcome = train(spec, Runtime(torch.device("cuda")), on_epoch=lambda m, _: rows.append(m.to_dict()))
    eager: list[dict] = []
    train(
        dataclasses.replace(spec, compile=False),
        Runtime(torch.device("cuda")),
        on_epoch=lambda m, _: eager.append(m.to_dict()),
    )
    assert outcome.status == "completed"
    assert rows[-1]["param_norm"] == pytest.approx(eager[-1]["param_norm"], rel=1e-2)
    assert rows[-1]["train_loss"] == pytest.approx(eager[-1]["train_loss"], rel=0.05)


@CUDA
def test_cuda_fast_path_trains_with_bf16_channels_last_fused_sgd_and_compile() -> None:
    device = torch.device("cuda")
    model, optimizer = build_model_and_optimizer(TINY, 10, device)
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert optimizer.defaults["fused"] and torch.backends.cudnn.benchmark
    rows: list[dict] = []
    outcome = train(
        dataclasses.replace(TINY, epochs=2), Runtime(device), on_epoch=lambda m, _: rows.append(m.to_dict())
    )
    assert outcome.status == "completed" and rows[-1]["test_acc"] > 0.3
    if peak_flops(torch.cuda.get_device_name()) is not None:
        assert 0 < rows[-1]["mfu"] < 1


def test_bench_projects_the_papers_trials_from_measured_rates() -> None:
    from study.bench import projection, trial_minutes

    # 300 epochs x (50,000 / 100k + 20,000 / 1M) s = 156 s
    assert trial_minutes(100_000, 1_000_000) == pytest.approx(2.6)
    lines = projection({128: 100_000, 2048: 200_000}, 1_000_000)
    assert "batch 128: 2.6 min" in lines[0] and "(rate of batch 2048: 8192 not run here)" in lines[1]
    assert lines[2].endswith(
        f"{2 * 2.6 + 2 * trial_minutes(200_000, 1_000_000):.1f} min (training and evaluation only)"
    )


def test_bench_finds_full_size_data_offline(tmp_path: Path) -> None:
    from study.bench import full_size_data

    cache = tmp_path / "cache"
    absent = tmp_path / "absent.tar.gz"
    dataset, root, note = full_size_data(tmp_path / "scratch", 40_960, shared=absent, cache=cache)
    assert dataset == "cifar10" and "random images" in note
    data = load_dataset(dataset, root, download=False)
    assert (len(data.train), len(data.test)) == (50_000, 10_000)
    write_cifar10_format(cache, per_batch=2)  # a real download's folder is preferred to random images
    assert full_size_data(tmp_path / "scratch2", 40_960, shared=absent, cache=cache)[:2] == ("cifar10", str(cache))
    (tmp_path / "cifar.tar.gz").touch()
    assert full_size_data(tmp_path / "scratch3", 40_960, shared=tmp_path / "cifar.tar.gz", cache=cache)[0] == (
        "imagefolder"
    )
