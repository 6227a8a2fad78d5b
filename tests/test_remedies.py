"""The large-batch remedies as study keys: optimizer, ghost batch, train longer, label smoothing, extra grids."""

from __future__ import annotations

import math

import pytest
import torch

from study.config import ConfigError, load_study, parse_study
from study.plan import format_plan, plan_study
from trainables.lr import training_regime
from trainables.mixup import MixedBatch, mixed_cross_entropy

MINIMAL = "name: r\n"


def test_studies_planned_before_these_keys_keep_their_trial_ids() -> None:
    """A store written before optimizer, ghost_batch, budget and label_smoothing existed: its records lack
    them (and the ids of that planner hashed the data folder), yet each planned trial finds its own."""
    import json

    import pandas as pd

    from study.plan import with_stored_ids

    study = parse_study("name: ids\nsweep: {batch_size: [128, 8192], mixup_alpha: [0.0, 1.0]}")
    then = ["b128-a0-none-s0-999188", "b128-a1-none-s0-aec5a1", "b8192-a0-none-s0-36834a", "b8192-a1-none-s0-8ee0f0"]
    added = ("optimizer", "ghost_batch", "budget", "label_smoothing", "trust_coefficient", "decayed")
    records = [
        {k: v for k, v in {**t.to_dict(), "data_root": "/home/then/.cache/lbstudy/data"}.items() if k not in added}
        for t in plan_study(study)
    ]
    stored = pd.DataFrame({"trial_id": then[::-1], "spec": [json.dumps(r) for r in records[::-1]]})
    assert [t.trial_id for t in with_stored_ids(plan_study(study), stored)] == then
    # A trial that differs in a key added since (here LARS) is another training: it keeps its own id.
    lars = parse_study("name: ids\nsweep: {batch_size: [128], mixup_alpha: [0.0], optimizer: [lars]}")
    assert not {t.trial_id for t in with_stored_ids(plan_study(lars), stored)} & set(then)


def test_each_remedy_is_a_sweep_key_with_a_readable_id() -> None:
    study = parse_study(
        MINIMAL + "sweep: {batch_size: [8192], mixup_alpha: [0.0], optimizer: [sgd, lars], ghost_batch: [null, 128],"
        " budget: [epochs, steps], label_smoothing: [0.0, 0.1]}"
    )
    trials = plan_study(study)
    assert len(trials) == 16 and len({t.trial_id for t in trials}) == 16
    lars = next(t for t in trials if t.optimizer == "lars" and t.ghost_batch == 128 and t.budget == "steps")
    assert "-lars-ghost128-long" in lars.trial_id
    assert {t.bn_batch_size for t in trials} == {8192, 128}  # the effective BatchNorm batch
    assert all(t.bn_batch_size == (t.ghost_batch or t.micro_batch) for t in trials)


def test_train_longer_scales_epochs_and_milestones_with_the_batch() -> None:
    assert training_regime(300, (150, 225), "epochs", 8192, 128) == (300, (150, 225))
    assert training_regime(300, (150, 225), "steps", 8192, 128) == (19200, (9600, 14400))
    assert training_regime(300, (150, 225), "steps", 64, 128) == (150, (75, 112))  # round(112.5) = 112
    assert training_regime(3, (), "steps", 16, 128) == (1, ())  # at least one epoch
    study = parse_study(
        MINIMAL + "schedule: {epochs: 10, milestones: [5]}\nsweep: {batch_size: [128, 512], mixup_alpha: [0.0],"
        " budget: [epochs, steps]}"
    )
    trials = {(t.batch_size, t.budget): t for t in plan_study(study)}
    assert (trials[512, "steps"].epochs, trials[512, "steps"].milestones) == (40, (20,))
    assert (trials[512, "epochs"].epochs, trials[128, "steps"].epochs) == (10, 10)
    # The same number of optimizer steps, up to the rounding of epochs x images / batch.
    steps = {k: t.epochs * (50_000 // t.batch_size) for k, t in trials.items()}
    assert steps[512, "steps"] == pytest.approx(steps[128, "steps"], rel=0.01)
    plan = format_plan(study, plan_study(study))
    assert "4 trials x 10-40 epochs" in plan.splitlines()[0]


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "sweep: {batch_size: [256], ghost_batch: [100]}",
            "sweep.ghost_batch: 100 does not divide the micro-batch 256",
        ),
        ("model: {ghost_batch: 0}", r"model.ghost_batch: 0 must be in \[1, 2,147,483,648\]"),
        ("sweep: {optimizer: [adam]}", "sweep.optimizer: unknown 'adam'; choose one of lamb, lars, sgd"),
        ("optim: {optimizer: lbfgs}", "optim.optimizer: unknown 'lbfgs'"),
        ("optim: {trust_coefficient: 0}", "optim.trust_coefficient: 0.0 must be in "),
        ("sweep: {label_smoothing: [1.0]}", r"sweep.label_smoothing\[0\]: 1.0 must be in "),
        ("sweep: {budget: [forever]}", "sweep.budget"),
        ("schedule: {epochs: 2000}\nsweep: {batch_size: [8192], budget: [steps]}", "more than 100,000"),
        (
            "schedule: {epochs: 10, milestones: [1, 2]}\nsweep: {batch_size: [16], budget: [steps]}",
            "space the milestones",
        ),
        ("sweep: {also: [{batch_size: [3000000]}]}", r"sweep\.also\[0\]: sweep\.batch_size: 3000000 exceeds"),
        ("sweep: {also: [{also: []}]}", r"sweep\.also\[0\]: an extra grid cannot have its own also"),
        ("sweep: {also: 5}", "sweep.also: expected a list of mappings"),
        (
            "sweep: {budget: [steps]}\nsearch: {space: {base_lr: {loguniform: [0.01, 1.0]}}}",
            "cannot be searched yet",
        ),
    ],
)
def test_mistakes_in_remedy_keys_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(") if "\\" not in message else message):
        parse_study(MINIMAL + text)


def test_extra_grids_add_trials_and_share_interpolation_pairs() -> None:
    study = parse_study(
        MINIMAL + "sweep:\n  batch_size: [8192]\n  optimizer: [sgd, lars]\n  mixup_alpha: [0.0, 1.0]\n"
        "  also:\n    - {batch_size: [128], optimizer: [sgd]}\n    - {batch_size: [8192], optimizer: [sgd]}\n"
        "measure: {interpolate: {between: batch_size, pairs: [[128, 8192]]}}\n"
    )
    trials = plan_study(study)
    # 2 x 2 at 8192, plus 2 at 128; the second extra grid repeats trials of the first: not twice.
    assert len(trials) == 6 and len({t.trial_id for t in trials}) == 6
    assert sorted((t.batch_size, t.optimizer) for t in trials).count((128, "sgd")) == 2
    # An entry spelling the augmentation axis differently replaces the main grid's spelling.
    mixed = parse_study(MINIMAL + "sweep: {mixup_alpha: [0.0], also: [{augmentation: [cutout]}]}")
    assert {t.augmentation for t in plan_study(mixed)} == {"none", "cutout"}


def test_label_smoothing_smooths_each_mixed_target() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 3, dtype=torch.float64)
    a, b = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2])
    batch = MixedBatch(torch.empty(0), a, b, 0.7)
    eps = 0.1
    # By hand: the target is 0.7 smooth(a) + 0.3 smooth(b), smooth(y) = (1 - eps) onehot(y) + eps / 3.
    target = 0.7 * ((1 - eps) * torch.eye(3, dtype=torch.float64)[a] + eps / 3)
    target += 0.3 * ((1 - eps) * torch.eye(3, dtype=torch.float64)[b] + eps / 3)
    expected = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    assert math.isclose(float(mixed_cross_entropy(logits, batch, eps)), float(expected), rel_tol=1e-12)
    assert float(mixed_cross_entropy(logits, batch, 0.0)) < float(expected)  # smoothing costs confident logits


def test_shipped_remedies_and_depth_studies_plan_what_the_issue_asks() -> None:
    remedies = plan_study(load_study("studies/remedies.yaml"))
    big = [t for t in remedies if t.batch_size == 8192]
    conditions = {(t.optimizer, t.ghost_batch, t.augmentation) for t in big}
    assert conditions == {(o, g, a) for o in ("sgd", "lars") for g in (None, 128) for a in ("none", "mixup")}
    assert {(t.optimizer, t.ghost_batch) for t in remedies if t.batch_size == 128} == {("sgd", None)}
    assert {t.seed for t in remedies} == {0, 1, 2} and len(remedies) == (8 + 2) * 3
    assert {t.peak_lr for t in big if t.optimizer == "lars"} == {6.4}
    depth = plan_study(load_study("studies/depth.yaml"))
    assert {t.model for t in depth} == {"vgg9", "resnet20", "resnet56", "preact_resnet18_mixup"}
    assert {(t.batch_size, t.mixup_alpha) for t in depth} == {(b, a) for b in (128, 8192) for a in (0.0, 1.0)}


@pytest.mark.parametrize("optimizer", ["lars", "lamb"])
def test_a_remedy_trial_trains_and_resumes_bit_identically(optimizer: str, tmp_path) -> None:  # noqa: ANN001
    from study.plan import plan_one
    from trainables.checkpoint import load_checkpoint, save_checkpoint
    from trainables.loop import Runtime, build_model_and_optimizer, train
    from trainables.models import GhostBatchNorm2d
    from trainables.optim import LAMB, LARS

    spec = plan_one(
        "remedy",
        data={"dataset": "synthetic", "train_subset": 512, "test_subset": 256},
        model={"width": 0.25},
        sweep={
            "batch_size": 128,
            "mixup_alpha": 1.0,
            "optimizer": optimizer,
            "ghost_batch": 32,
            "label_smoothing": 0.1,
            "budget": "steps",
        },
        optim={"base_lr": 2.0 if optimizer == "lars" else 0.002, "base_batch_size": 64},
        schedule={"epochs": 1, "decay": "constant"},
        eval={"train_eval_samples": 256},
    )
    assert spec.epochs == 2 and spec.bn_batch_size == 32  # 1 epoch at batch 64 -> 2 at 128: the same steps
    model, opt = build_model_and_optimizer(spec, 10, torch.device("cpu"))
    assert isinstance(opt, {"lars": LARS, "lamb": LAMB}[optimizer])
    assert all(m.ghost_batch == 32 for m in model.modules() if isinstance(m, GhostBatchNorm2d))
    cpu = Runtime(torch.device("cpu"))
    checkpoints: dict[int, dict] = {}
    rows = []
    train(spec, cpu, on_epoch=lambda m, make: (checkpoints.update({m.epoch: make()}), rows.append(m)))
    assert [r.epoch for r in rows] == [1, 2] and all(math.isfinite(r.train_loss) for r in rows)
    # synthetic data: learnable. Chance is 0.1 +- 0.019 on 256 test images; 8 steps reach 0.19 (lars) and
    # 0.21 (lamb) here, so 0.15 (2.6 standard errors above chance) says it learned without a coin's margin.
    assert rows[-1].test_acc > 0.15
    final: dict[str, dict] = {}
    train(
        spec,
        cpu,
        resume=load_checkpoint(save_checkpoint(checkpoints[1], str(tmp_path), 1)),
        on_epoch=lambda m, make: final.update(state=make()),
    )
    for key, value in checkpoints[2]["model"].items():
        assert torch.equal(value, final["state"]["model"][key]), key
