from pathlib import Path

import pytest
import torch

from study.plan import plan_one
from trainables.loop import Runtime, train


@pytest.mark.slow
def test_vgg9_learns_real_cifar10(shared_cifar: Path) -> None:
    """5,000 class-balanced CIFAR-10 training images, a few epochs at batch 128: well above chance (10%)."""
    spec = plan_one(
        "real",
        data={"dataset": "imagefolder", "root": str(shared_cifar), "train_subset": 5000, "test_subset": 1000},
        model={"width": 0.25},
        sweep={"batch_size": 128, "mixup_alpha": 0.0},
        optim={"base_lr": 0.05},
        schedule={"epochs": 4, "decay": "constant"},
        eval={"train_eval_samples": 1000},
    )
    rows: list[dict] = []
    outcome = train(spec, Runtime(torch.device("cpu")), on_epoch=lambda m, _: rows.append(m.to_dict()))
    print([(r["epoch"], round(r["test_acc"], 3), round(r["epoch_time_s"], 1)) for r in rows])
    assert outcome.status == "completed"
    assert rows[-1]["test_acc"] >= 0.30
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
