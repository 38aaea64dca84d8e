"""DiffusionNFT on diffusers flow-matching pipelines: the objective, advantages and generator access.

DiffusionNFT (Zheng et al., 2025) does RL on the forward process: sample K images per prompt with
the old policy and a deterministic ODE sampler, score them, turn group-relative advantages into
an optimality probability ``r`` in [0, 1], then regress the SAME clean samples with flow
matching, contrasting an implicit positive policy ``v+ = (1-b) v_old + b v`` (pulled to the
data where ``r`` is high) with an implicit negative policy ``v- = (1+b) v_old - b v`` (pulled to
the data where ``r`` is low). No likelihoods, no CFG, any sampler. See docs/rl_trainer.md for the
exact objective.

This module has two halves:

* the algorithm on plain tensors and lists (:func:`group_advantages`, :func:`optimality`,
  :func:`solved_groups`, :func:`nft_loss`, :func:`sample_train_sigmas`, :func:`ode_sample`,
  LoRA adapter helpers);
* generator access through a pipeline's own components (:class:`FlowFamily` and its Flux,
  Flux-Kontext and SD3 implementations, picked by :func:`family_for`).

torch and diffusers are imported by the functions that need them (and by type checkers only), so
importing this module stays cheap.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

NAN = float("nan")


# -- advantages ---------------------------------------------------------------------------------
def _is_nan(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def group_advantages(
    rewards: Sequence[float],
    group_keys: Sequence[Hashable],
    *,
    std: str = "global",
    clip: float = 5.0,
    eps: float = 1e-4,
) -> list[float]:
    """Group-relative advantages, NaN where the reward is missing.

    ``A_i = (R_i - mean of R in i's group) / s`` with ``s`` the population std of ALL valid
    rewards of the batch (``std="global"``) or of i's own group (``std="group"``), plus ``eps``;
    then clipped to ``[-clip, clip]``. Groups are keyed by whatever identifies a conditioning
    (the trainer uses prompt + source-image content), never by prompt text alone. Missing
    rewards (NaN/None) take no part in any statistic; a group with a single valid reward has
    advantage 0 (it has nothing to be compared with).
    """
    if len(rewards) != len(group_keys):
        raise ValueError(f"{len(rewards)} rewards but {len(group_keys)} group keys")
    if std not in ("global", "group"):
        raise ValueError(f"std must be 'global' or 'group', not {std!r}")
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(group_keys):
        if not _is_nan(rewards[i]):
            members.setdefault(key, []).append(i)
    valid = [float(rewards[i]) for idx in members.values() for i in idx]
    global_std = statistics.pstdev(valid) if len(valid) > 1 else 0.0
    out = [NAN] * len(rewards)
    for idx in members.values():
        values = [float(rewards[i]) for i in idx]
        mean = statistics.fmean(values)
        scale = (statistics.pstdev(values) if len(values) > 1 else 0.0) if std == "group" else global_std
        for i, value in zip(idx, values, strict=True):
            # Exactly 0 for equal rewards: float noise over eps must not become a signal.
            adv = 0.0 if len(idx) < 2 or value == mean else (value - mean) / (scale + eps)
            out[i] = max(-clip, min(clip, adv))
    return out


def optimality(advantages: Sequence[float], adv_clip_max: float = 5.0) -> list[float]:
    """Optimality probability ``r = clip(A / adv_clip_max, -1, 1) / 2 + 1/2`` (NaN stays NaN)."""
    out = []
    for a in advantages:
        if _is_nan(a):
            out.append(NAN)
        else:
            out.append(max(-1.0, min(1.0, float(a) / adv_clip_max)) / 2 + 0.5)
    return out


def solved_groups(
    rewards: Sequence[float],
    group_keys: Sequence[Hashable],
    *,
    max_std: float = 0.05,
    min_mean: float = 0.9,
    min_valid: int = 2,
) -> list[Hashable]:
    """Groups the policy has solved: every sample valid, at least ``min_valid`` of them, reward
    std below ``max_std`` and mean above ``min_mean`` (rewards on the [0, 1] scale). They carry
    no learning signal any more; the trainer stops sampling them."""
    groups: dict[Hashable, list[float]] = {}
    broken: set[Hashable] = set()
    for r, key in zip(rewards, group_keys, strict=True):
        if _is_nan(r):
            broken.add(key)
        else:
            groups.setdefault(key, []).append(float(r))
    out = []
    for key, values in groups.items():
        if key in broken or len(values) < min_valid:
            continue
        if statistics.pstdev(values) < max_std and statistics.fmean(values) > min_mean:
            out.append(key)
    return out


# -- the objective --------------------------------------------------------------------------------
@dataclass
class NFTLoss:
    """One DiffusionNFT loss evaluation: ``loss`` carries the graph, the rest are detached floats."""

    loss: torch.Tensor
    policy_loss: float
    kl: float
    positive: float
    negative: float
    n_used: int


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1)


def nft_loss(
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    r: torch.Tensor,
    *,
    beta: float = 1.0,
    weighting: str = "adaptive",
    v_ref: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    mask: torch.Tensor | None = None,
) -> NFTLoss:
    """The DiffusionNFT objective for a batch of forward-process points.

    Args:
        v_theta: velocity of the policy being trained at ``x_t = (1 - sigma) x0 + sigma noise``.
        v_old: velocity of the old (sampling) policy at the same point (no gradient).
        x0, noise: the clean sample and the noise that made ``x_t``; the flow-matching target
            is ``noise - x0`` (diffusers' convention: ``x_{s'} = x_s + (s' - s) v``).
        sigma: ``(B,)`` noise levels in (0, 1].
        r: ``(B,)`` optimality probabilities in [0, 1].
        beta: implicit-policy strength.
        weighting: ``velocity``: squared velocity error; ``adaptive``: the equivalent error on
            the x0 prediction ``x_t - sigma v``, divided by its own detached mean absolute value
            (per sample), which keeps every noise level's contribution O(1).
        v_ref, kl_coef: add ``kl_coef * ||v_theta - v_ref||^2`` (a KL-like pull to the frozen
            reference model) when both are given.
        mask: ``(B,)`` bool, False for samples without a valid reward (they are left out).

    Returns:
        :class:`NFTLoss`, whose ``loss`` is the mean over used samples of
        ``(r * L+ + (1 - r) * L-) / beta  (+ kl_coef * KL)``. With no usable sample the loss is
        ``0 * v_theta.sum()`` (keeps every process of a distributed run in the same graph).
    """
    import torch

    if weighting not in ("adaptive", "velocity"):
        raise ValueError(f"weighting must be 'adaptive' or 'velocity', not {weighting!r}")
    b = v_theta.shape[0]
    v_theta_f = v_theta.float()
    v_old_f = v_old.detach().float()
    target = (noise - x0).float()
    v_pos = (1.0 - beta) * v_old_f + beta * v_theta_f
    v_neg = (1.0 + beta) * v_old_f - beta * v_theta_f
    if weighting == "velocity":
        pos = _per_sample_mean((v_pos - target) ** 2)
        neg = _per_sample_mean((v_neg - target) ** 2)
    else:
        # x0_hat - x0 = -sigma (v - target): the x0-space error, scale-normalised per sample.
        s = sigma.float().reshape(b, *([1] * (v_theta.dim() - 1)))
        err_pos = s * (v_pos - target)
        err_neg = s * (v_neg - target)
        w_pos = _per_sample_mean(err_pos.detach().abs()).clamp_min(1e-5)
        w_neg = _per_sample_mean(err_neg.detach().abs()).clamp_min(1e-5)
        pos = _per_sample_mean(err_pos**2) / w_pos
        neg = _per_sample_mean(err_neg**2) / w_neg
    r = r.float().to(pos.device)
    r_safe = torch.where(torch.isnan(r), torch.full_like(r, 0.5), r)
    per_sample = (r_safe * pos + (1.0 - r_safe) * neg) / beta
    kl_per = torch.zeros_like(per_sample)
    if v_ref is not None and kl_coef > 0:
        kl_per = _per_sample_mean((v_theta_f - v_ref.detach().float()) ** 2)
    used = ~torch.isnan(r)
    if mask is not None:
        used = used & mask.to(used.device).bool()
    n_used = int(used.sum().item())
    if n_used == 0:
        zero = 0.0 * v_theta_f.sum()
        return NFTLoss(zero, 0.0, 0.0, 0.0, 0.0, 0)
    weights = used.float() / n_used
    policy = (per_sample * weights).sum()
    kl = (kl_per * weights).sum()
    total = policy + kl_coef * kl if kl_coef > 0 else policy
    return NFTLoss(
        loss=total,
        policy_loss=float(policy.detach()),
        kl=float(kl.detach()),
        positive=float((pos.detach() * weights).sum()),
        negative=float((neg.detach() * weights).sum()),
        n_used=n_used,
    )


def sample_train_sigmas(
    n: int,
    generator: torch.Generator,
    *,
    t_min: float = 0.0,
    t_max: float = 1.0,
    sampling: str = "uniform",
    shift: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``n`` forward-process noise levels: ``u ~ U(t_min, t_max)`` (or a logit-normal), warped by
    ``shift`` (the scheduler's time shift), kept inside [1e-3, 1 - 1e-3] (both ends carry no
    training signal and the adaptive weighting divides by the error scale)."""
    import torch

    if sampling == "logit-normal":
        u = torch.sigmoid(torch.randn(n, generator=generator))
        u = t_min + (t_max - t_min) * u
    elif sampling == "uniform":
        u = t_min + (t_max - t_min) * torch.rand(n, generator=generator)
    else:
        raise ValueError(f"unknown timestep sampling {sampling!r}")
    if shift is not None:
        u = shift(u)
    return u.clamp(1e-3, 1.0 - 1e-3)


# LoRA helpers, generator access and sampling live in their own modules; these names stay importable from here.
from .families import FAMILIES, Cond, FlowFamily, family_for, register_family  # noqa: E402
from .families.flux import FluxFamily, FluxKontextFamily  # noqa: E402
from .families.sd3 import SD3Family  # noqa: E402
from .lora import OLD, POLICY, activate, adapter_params, add_lora_adapters, copy_into, lerp_into, snapshot  # noqa: E402
from .sampling import chunks, ode_sample  # noqa: E402

__all__ = [
    "FAMILIES", "OLD", "POLICY", "Cond", "FlowFamily", "FluxFamily", "FluxKontextFamily", "NFTLoss", "SD3Family",
    "activate", "adapter_params", "add_lora_adapters", "chunks", "copy_into", "family_for", "group_advantages",
    "lerp_into", "nft_loss", "ode_sample", "optimality", "register_family", "sample_train_sigmas", "snapshot",
    "solved_groups",
]
