"""Known answers for LARS and LAMB: steps computed by hand on a 2-weight layer and its bias."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from trainables.optim import LAMB, LARS, build_optimizer, decay_groups


def layer() -> nn.Linear:
    """w = [3, 4] (norm 5), b = [1]: numbers that make the trust ratio easy to do by hand."""
    model = nn.Linear(2, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
        model.bias.copy_(torch.tensor([1.0]))
    return model


def set_grads(model: nn.Linear, weight: list[float], bias: float) -> None:
    model.weight.grad = torch.tensor([weight], dtype=torch.float64)
    model.bias.grad = torch.tensor([bias], dtype=torch.float64)


def test_lars_two_steps_match_the_paper_by_hand() -> None:
    model = layer()
    opt = LARS(decay_groups(model, 0.2, "weights"), lr=0.5, momentum=0.9, trust_coefficient=0.1)
    # Step 1: ||w|| 5, ||g|| 1: local rate 0.1 x 5 / (1 + 0.2 x 5) = 0.25; g + wd w = [1.2, 1.6];
    # v = 0.5 x 0.25 x [1.2, 1.6] = [0.15, 0.2]; the bias: v = 0.5 x 0.5 = 0.25, no decay, no ratio.
    set_grads(model, [0.6, 0.8], 0.5)
    opt.step()
    assert model.weight.tolist()[0] == pytest.approx([2.85, 3.8], abs=1e-12)
    assert model.bias.tolist() == pytest.approx([0.75], abs=1e-12)
    # Step 2 at lr 1.0: ||w|| = sqrt(2.85^2 + 3.8^2) = 4.75, ||g|| 0.5: rate 0.475 / 1.45;
    # g + wd w = [0.57, 1.26]; v = 0.9 [0.15, 0.2] + rate [0.57, 1.26]; the bias: v = 0.9 x 0.25 + 0.1.
    set_grads(model, [0.0, 0.5], 0.1)
    for group in opt.param_groups:
        group["lr"] = 1.0
    opt.step()
    rate = 0.475 / 1.45
    v = [0.9 * 0.15 + rate * 0.57, 0.9 * 0.2 + rate * 1.26]
    assert model.weight.tolist()[0] == pytest.approx([2.85 - v[0], 3.8 - v[1]], abs=1e-12)
    assert model.bias.tolist() == pytest.approx([0.75 - 0.325], abs=1e-12)


def test_lars_nesterov_and_a_zero_layer() -> None:
    model = layer()
    opt = LARS(decay_groups(model, 0.2, "weights"), lr=0.5, momentum=0.9, nesterov=True, trust_coefficient=0.1)
    set_grads(model, [0.6, 0.8], 0.5)
    opt.step()  # Nesterov's first step: u + 0.9 u with u = [0.15, 0.2]
    assert model.weight.tolist()[0] == pytest.approx([3 - 1.9 * 0.15, 4 - 1.9 * 0.2], abs=1e-12)
    # A layer of zeros has no scale to trust: the ratio is 1 (plain SGD with weight decay).
    zero = nn.Linear(2, 1, bias=False).double()
    nn.init.zeros_(zero.weight)
    zero.weight.grad = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    LARS(zero.parameters(), lr=0.1, momentum=0.0, weight_decay=0.2, trust_coefficient=0.001).step()
    assert zero.weight.tolist()[0] == pytest.approx([-0.1, 0.2], abs=1e-12)


def test_lamb_two_steps_match_the_paper_by_hand() -> None:
    model = layer()
    opt = LAMB(decay_groups(model, 0.1, "weights"), lr=0.01)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-6  # the published defaults
    w, b = [3.0, 4.0], 1.0
    m, v, mb, vb = [0.0, 0.0], [0.0, 0.0], 0.0, 0.0
    for t, (g, gb, lr) in enumerate([([0.6, 0.8], 0.5, 0.01), ([-0.3, 0.2], 0.25, 0.02)], start=1):
        set_grads(model, g, gb)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        # By hand: Adam's moments, bias-corrected; the weight's update gets weight decay and the trust
        # ratio ||w|| / ||update||; the bias neither.
        m = [0.9 * mi + 0.1 * gi for mi, gi in zip(m, g)]
        v = [0.999 * vi + 0.001 * gi * gi for vi, gi in zip(v, g)]
        r = [(mi / (1 - 0.9**t)) / (math.sqrt(vi / (1 - 0.999**t)) + 1e-6) for mi, vi in zip(m, v)]
        u = [ri + 0.1 * wi for ri, wi in zip(r, w)]
        trust = math.hypot(*w) / math.hypot(*u)
        w = [wi - lr * trust * ui for wi, ui in zip(w, u)]
        mb, vb = 0.9 * mb + 0.1 * gb, 0.999 * vb + 0.001 * gb * gb
        b -= lr * (mb / (1 - 0.9**t)) / (math.sqrt(vb / (1 - 0.999**t)) + 1e-6)
        assert model.weight.tolist()[0] == pytest.approx(w, abs=1e-12)
        assert model.bias.tolist() == pytest.approx([b], abs=1e-12)

    # Whatever the gradient's scale, the trust ratio makes a weight's step lr x ||w|| long.
    model = layer()
    set_grads(model, [600.0, 800.0], 0.0)
    LAMB(model.parameters(), lr=0.01, weight_decay=0.1).step()
    step = model.weight.detach()[0] - torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert float(torch.linalg.vector_norm(step)) == pytest.approx(0.01 * 5.0, rel=1e-12)


@pytest.mark.parametrize("decayed", ["weights", "all"])
def test_which_parameters_are_decayed_is_one_setting_for_every_optimizer(decayed: str) -> None:
    """ "weights": only conv and linear weights decay, BN parameters and biases not; "all": every one, for
    SGD, LARS and LAMB alike (SGD used to decay everything and the other two only weights)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        model[1].weight.fill_(1.5)
        model[1].bias.fill_(0.5)
    expected = {"0.weight"} if decayed == "weights" else {n for n, _ in model.named_parameters()}
    for name in ("sgd", "lars", "lamb"):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = build_optimizer(
            name,
            model,
            lr=0.1,
            momentum=0.0,
            nesterov=False,
            weight_decay=0.5,
            trust_coefficient=0.001,
            decayed=decayed,
        )
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()  # zero gradients: only weight decay could move a parameter
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert moved == expected, (name, moved)
        if decayed == "all":  # a BN weight w takes the plain decayed step w - lr wd w, no trust ratio
            assert torch.allclose(model[1].weight.detach(), before["1.weight"] * (1 - 0.1 * 0.5))
    with pytest.raises(KeyError, match="unknown optimizer"):
        build_optimizer("adamw", model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0, trust_coefficient=0.001)
    with pytest.raises(ValueError, match="decayed must be one of"):
        decay_groups(model, 0.1, "biases")


def test_lars_state_survives_a_checkpoint() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = build_optimizer(
        "lars", model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, trust_coefficient=0.001
    )
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    copy_model = nn.Linear(4, 3)
    copy_model.load_state_dict(model.state_dict())
    copy_opt = build_optimizer(
        "lars", copy_model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, trust_coefficient=0.001
    )
    copy_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # as training_state saves it
    grads = [torch.randn_like(p) for p in model.parameters()]
    for m, o in ((model, opt), (copy_model, copy_opt)):
        for p, g in zip(m.parameters(), grads):
            p.grad = g.clone()
        o.step()
    for a, b in zip(model.parameters(), copy_model.parameters()):
        assert torch.equal(a, b)
