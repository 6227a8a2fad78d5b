import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from study.plan import plan_one
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.loop import (
    Runtime,
    build_model_and_optimizer,
    divergence,
    gradient_buffer,
    optimizer_step,
    train,
)
from trainables.mixup import MixedBatch
from trainables.trial import TrialSpec

CPU = Runtime(torch.device("cpu"))
TINY = plan_one(
    "tiny",
    data={"dataset": "synthetic", "train_subset": 512, "test_subset": 256},
    model={"width": 0.25},
    sweep={"batch_size": 64, "mixup_alpha": 1.0},
    optim={"base_lr": 0.05},
    schedule={"epochs": 2, "decay": "constant"},
    eval={"train_eval_samples": 256},
)


def test_accumulating_two_micro_batches_equals_one_big_step_without_batchnorm() -> None:
    torch.manual_seed(0)
    images, labels = torch.randn(128, 3, 4, 4), torch.randint(0, 10, (128,))

    def step(split: list[slice]) -> list[torch.Tensor]:
        torch.manual_seed(1)
        model = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
        batches = [MixedBatch(images[s], labels[s], labels.roll(1)[s], 0.7) for s in split]
        optimizer_step(model, optimizer, batches, 0.5, CPU, gradient_buffer(model))
        return [p.detach().clone() for p in model.parameters()]

    one = step([slice(0, 128)])
    two = step([slice(0, 64), slice(64, 128)])
    for a, b in zip(one, two):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(one[0], step([slice(0, 64)])[0], atol=1e-6)  # the test can tell a difference


def test_synthetic_is_learnable_and_metrics_are_complete() -> None:
    rows: list[dict] = []
    outcome = train(TINY, CPU, on_epoch=lambda m, _: rows.append(m.to_dict()))
    assert outcome.status == "completed" and outcome.epochs == 2 and outcome.steps == 2 * (512 // 64)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["test_acc"] > 0.5  # chance is 0.1
    for key in (
        "lr",
        "train_loss",
        "clean_train_loss",
        "clean_train_acc",
        "test_loss",
        "test_acc",
        "epoch_time_s",
        "images_per_s",
        "grad_norm_rms",
        "param_norm",
    ):
        assert rows[-1][key] == rows[-1][key], key  # present and not NaN
    assert 0 <= rows[-1]["clean_train_acc"] <= 1


def test_checkpoint_resume_continues_bit_identically(tmp_path: Path) -> None:
    checkpoints: dict[int, dict] = {}
    train(TINY, CPU, on_epoch=lambda m, make: checkpoints.update({m.epoch: make()}))
    path = save_checkpoint(checkpoints[1], str(tmp_path), 1)
    resumed_rows: list[dict] = []
    final: dict[str, dict] = {}

    def on_epoch(metrics: dict, make) -> None:  # noqa: ANN001
        resumed_rows.append(metrics.to_dict())
        final["state"] = make()

    outcome = train(TINY, CPU, resume=load_checkpoint(path), on_epoch=on_epoch)
    assert outcome.epochs == 2 and [r["epoch"] for r in resumed_rows] == [2]
    for key, value in checkpoints[2]["model"].items():
        assert torch.equal(value, final["state"]["model"][key]), key
    assert final["state"]["step"] == checkpoints[2]["step"]


def test_non_finite_loss_ends_the_trial_as_diverged() -> None:
    rows: list[dict] = []
    spec = dataclasses.replace(TINY, peak_lr=1e8, epochs=3, augmentation="none", augmentation_alpha=0.0)
    outcome = train(spec, CPU, on_epoch=lambda m, _: rows.append(m.to_dict()))
    assert outcome.status == "diverged" and outcome.epochs == 1 and len(rows) == 1 and rows[0]["diverged"]


def test_a_finite_but_exploded_loss_is_divergence_too() -> None:
    """Peak lr 30: the loss is 1.6e10, finite; main recorded such trials as completed at chance accuracy."""
    rows: list[dict] = []
    spec = dataclasses.replace(TINY, peak_lr=30.0, epochs=3, augmentation="none", augmentation_alpha=0.0)
    outcome = train(spec, CPU, on_epoch=lambda m, _: rows.append(m.to_dict()))
    assert math.isfinite(rows[0]["train_loss"]) and rows[0]["train_loss"] > 1e6
    assert outcome.status == "diverged" and outcome.epochs == 1 and "exploded" in rows[0]["diverged_reason"]


def test_divergence_rule() -> None:
    assert divergence(2.3, 10) is None and divergence(23.0, 10) is None  # 10 ln 10 = 23.03
    assert "exploded" in divergence(23.1, 10) and "not finite" in divergence(float("inf"), 10)
    assert divergence(46.0, 100) is None and "exploded" in divergence(46.1, 100)  # 10 ln 100 = 46.05


def test_batch_larger_than_the_training_set_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        train(dataclasses.replace(TINY, batch_size=1024, micro_batch=1024), CPU)


def _distributed_worker(rank: int, world_size: int, init_file: str, spec: TrialSpec, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    states: dict = {}
    train(spec, Runtime(torch.device("cpu"), rank, world_size), on_epoch=lambda m, make: states.update(s=make()))
    if rank == 0:
        torch.save(states["s"]["model"], out)
    dist.barrier()  # leave together: a rank exiting while gloo still serves the other aborts (SIGABRT)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_workers_equal_one_worker_with_two_accumulation_steps(tmp_path: Path) -> None:
    base = dataclasses.replace(TINY, train_subset=256, epochs=1, batch_size=64)
    two_workers = dataclasses.replace(base, workers=2, micro_batch=32, accumulation_steps=1)
    one_worker = dataclasses.replace(base, workers=1, micro_batch=32, accumulation_steps=2)
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), two_workers, out), nprocs=2, join=True)
    distributed = torch.load(out, weights_only=True)
    single: dict = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same reduction order in every conv as in the workers
    try:
        train(one_worker, CPU, on_epoch=lambda m, make: single.update(s=make()))
    finally:
        torch.set_num_threads(threads)
    initial, _ = build_model_and_optimizer(one_worker, 10, torch.device("cpu"))

    def relative_difference(state: dict) -> float:
        # |theta_a - theta_b| / |theta_b - theta_init| over the weights: 0 up to float summation order;
        # a wrong shard, gradient average or LR is of order 1.
        names = [n for n, _ in initial.named_parameters()]
        gap = torch.cat([(state[n] - distributed[n]).reshape(-1) for n in names]).norm()
        moved = torch.cat([(state[n] - initial.state_dict()[n]).reshape(-1) for n in names]).norm()
        return float(gap / moved)

    assert relative_difference(single["s"]["model"]) < 1e-5
    # Half the LR (as a wrong gradient average would give) is caught.
    halved: dict = {}
    train(
        dataclasses.replace(one_worker, peak_lr=one_worker.peak_lr / 2),
        CPU,
        on_epoch=lambda m, make: halved.update(s=make()),
    )
    assert relative_difference(halved["s"]["model"]) > 0.1


def test_two_checkpoints_are_kept_and_an_unreadable_newest_falls_back_to_the_one_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainables.checkpoint import epoch_files, latest_checkpoint

    folder = str(tmp_path / "checkpoints" / "t0")
    assert latest_checkpoint(folder) is None  # nothing yet: start from scratch
    for epoch in (1, 2, 3):
        save_checkpoint({"epoch": epoch, "w": torch.full((3,), float(epoch))}, folder, epoch)
    assert list(epoch_files(folder)) == [2, 3]  # the newest two
    path, state = latest_checkpoint(folder)
    assert state["epoch"] == 3 and path.endswith("epoch-0003.pt")
    newest = Path(path)
    newest.write_bytes(newest.read_bytes()[:50])  # a truncated upload
    path, state = latest_checkpoint(folder)
    assert state["epoch"] == 2 and torch.equal(state["w"], torch.full((3,), 2.0))
    assert "epoch-0003.pt cannot be read" in capsys.readouterr().err
