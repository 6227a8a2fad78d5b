"""Optimizers by name: SGD (torch's), LARS (You et al. 2017) and LAMB (You et al. 2019).

The two layer-wise ones apply the trust ratio to the weights of convolutions and linear layers only;
BatchNorm parameters and biases (every parameter with fewer than 2 dimensions) take the plain step, as
in You et al.'s setups. Which parameters weight decay applies to is one setting for every optimizer
(`decayed`): "all" (torch's SGD, Li et al.'s and the seed paper's training) or "weights" (conv and
linear weights only, You et al.'s and Goyal et al.'s large-batch recipe), so that comparing two
optimizers changes one thing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

import torch
from torch import nn

from trainables.catalog import OPTIMIZER_NAMES, check_registered

# LAMB's published defaults (You et al. 2019, Algorithm 2 and its experiments).
LAMB_BETAS = (0.9, 0.999)
LAMB_EPS = 1.0e-6


def wide(tensor: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision tensors (norms and moments need the range); float32/64 as they are."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


DECAYED = ("all", "weights")  # which parameters weight decay applies to (trainables/trial.py: decayed)


def adapted(param: torch.Tensor) -> bool:
    """Whether a parameter is a conv or linear weight (the trust ratio's layers), not a BN parameter or bias."""
    return param.ndim >= 2


def decay_groups(model: nn.Module, weight_decay: float, decayed: str) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: every parameter decayed ("all"), or only conv and linear weights
    ("weights"; BatchNorm parameters and biases in a group of weight decay 0)."""
    if decayed not in DECAYED:
        raise ValueError(f"decayed must be one of {DECAYED}, not {decayed!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if decayed == "all":
        return [{"params": params, "weight_decay": weight_decay}]
    groups = [
        {"params": [p for p in params if adapted(p)], "weight_decay": weight_decay},
        {"params": [p for p in params if not adapted(p)], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def trust_ratio(weight_norm: torch.Tensor, update_norm: torch.Tensor, coefficient: float) -> torch.Tensor:
    """coefficient x ||w|| / ||update||, and 1 where either norm is 0 (a zero layer, or no gradient):
    computed on the device, so a step never waits for the host."""
    ratio = coefficient * weight_norm / update_norm.clamp_min(torch.finfo(update_norm.dtype).tiny)
    return torch.where((weight_norm > 0) & (update_norm > 0), ratio, torch.ones_like(ratio))


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017, Algorithm 1).

    For an adapted layer with weights w and gradient g: local rate l = eta ||w|| / (||g|| + wd ||w||),
    v = m v + lr l (g + wd w), w -= v; the global rate lr sits inside the momentum as in the paper
    (torch-style implementations, timm's among them, put it outside: v = m v + l (g + wd w), w -= lr v;
    the two differ only while lr changes). With Nesterov: w -= m v + lr l (g + wd w). Other parameters
    (BN, biases): the same with l = 1, and wd their group's (0 unless every parameter is decayed).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
    ):
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, trust_coefficient=trust_coefficient
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, momentum, wd, eta = group["lr"], group["momentum"], group["weight_decay"], group["trust_coefficient"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                w, d = wide(p), wide(p.grad)
                if adapted(p):
                    w_norm, g_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(d)
                    d = (d + wd * w) * (lr * trust_ratio(w_norm, g_norm + wd * w_norm, eta))
                else:
                    d = (d + wd * w) * lr if wd else d * lr
                if momentum > 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(d)
                    buf = state["momentum_buffer"]
                    d = d + momentum * buf if group["nesterov"] else buf
                p.sub_(d.to(p.dtype))
        return loss


class LAMB(torch.optim.Optimizer):
    """Layer-wise adaptive moments for batch training (You et al. 2019, Algorithm 2).

    m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, both bias-corrected; r = m_hat / (sqrt(v_hat) + eps);
    for an adapted layer u = r + wd w and w -= lr (||w|| / ||u||) u (phi the identity); other parameters
    take w -= lr (r + wd w), wd their group's (0 unless every parameter is decayed): no trust ratio.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = LAMB_BETAS,
        eps: float = LAMB_EPS,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            (beta1, beta2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = wide(p.grad)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(g)
                    state["exp_avg_sq"] = torch.zeros_like(g)
                state["step"] += 1
                t = state["step"]
                state["exp_avg"].mul_(beta1).add_(g, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = state["exp_avg"] / (1 - beta1**t)
                v_hat = state["exp_avg_sq"] / (1 - beta2**t)
                update = m_hat / (v_hat.sqrt() + eps)
                if wd:
                    update = update + wd * wide(p)
                if adapted(p):
                    update = update * trust_ratio(
                        torch.linalg.vector_norm(wide(p)), torch.linalg.vector_norm(update), 1.0
                    )
                p.add_(update.to(p.dtype), alpha=-group["lr"])
        return loss


def make_sgd(
    model: nn.Module, lr: float, momentum: float, nesterov: bool, weight_decay: float, decayed: str, **_: Any
) -> torch.optim.SGD:
    on_cuda = next(model.parameters()).device.type == "cuda"
    return torch.optim.SGD(
        decay_groups(model, weight_decay, decayed),
        lr=lr,
        momentum=momentum,
        nesterov=nesterov and momentum > 0,
        fused=on_cuda or None,  # one kernel for the whole update on CUDA
    )


def make_lars(
    model: nn.Module,
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    decayed: str,
    trust_coefficient: float,
) -> LARS:
    return LARS(
        decay_groups(model, weight_decay, decayed),
        lr=lr,
        momentum=momentum,
        nesterov=nesterov and momentum > 0,
        trust_coefficient=trust_coefficient,
    )


def make_lamb(model: nn.Module, lr: float, weight_decay: float, decayed: str, **_: Any) -> LAMB:
    # momentum and nesterov are SGD's; LAMB's moments are its published betas.
    return LAMB(decay_groups(model, weight_decay, decayed), lr=lr)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"sgd": make_sgd, "lars": make_lars, "lamb": make_lamb}
for _name in OPTIMIZERS:
    check_registered("optimizer", _name, OPTIMIZER_NAMES)


def build_optimizer(
    name: str,
    model: nn.Module,
    *,
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    trust_coefficient: float,
    decayed: str = "all",
) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise KeyError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](
        model,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        decayed=decayed,
        trust_coefficient=trust_coefficient,
    )
