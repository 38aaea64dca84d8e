"""The two LoRA adapters of DiffusionNFT on one transformer: the trained policy and the old
(sampling) policy, switched in place, plus the EMA / copy helpers on their weights."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

POLICY = "default"
OLD = "old"


def add_lora_adapters(transformer: Any, *, rank: int, alpha: int, target_modules: Sequence[str],
                      dropout: float = 0.0) -> list[torch.nn.Parameter]:
    """Add the trained adapter (``default``) and the old-policy adapter (``old``, a frozen copy)
    to a diffusers transformer; return the trainable parameters (float32)."""
    import torch
    from peft import LoraConfig

    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                     init_lora_weights=True)
    transformer.add_adapter(cfg, adapter_name=POLICY)
    with warnings.catch_warnings():
        # peft warns that a second adapter is unusual; two adapters is the point here.
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")
        transformer.add_adapter(cfg, adapter_name=OLD)
    policy = adapter_params(transformer, POLICY)
    if not policy:
        raise ValueError(f"no LoRA layer was created: none of {list(target_modules)} names a module of "
                         f"{type(transformer).__name__}")
    old = adapter_params(transformer, OLD)
    with torch.no_grad():
        for key, p in policy.items():
            p.data = p.data.float()
            old[key].data = p.data.clone()
    activate(transformer, POLICY)
    return list(policy.values())


def adapter_params(transformer: Any, name: str) -> dict[str, torch.nn.Parameter]:
    """The LoRA parameters of adapter ``name``, keyed by their name with the adapter name removed
    (so two adapters' dicts line up key by key)."""
    out = {}
    tag = f".{name}."
    for pname, p in transformer.named_parameters():
        if ".lora_" in pname and tag in pname:
            out[pname.replace(tag, ".")] = p
    return out


def activate(transformer: Any, name: str) -> None:
    """Make adapter ``name`` the one used by forward passes; only the policy adapter ever trains."""
    transformer.set_adapter(name)
    for p in adapter_params(transformer, POLICY).values():
        p.requires_grad_(True)
    for p in adapter_params(transformer, OLD).values():
        p.requires_grad_(False)


def snapshot(params: dict[str, torch.nn.Parameter] | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached float32 copies (for EMA, checkpoints and swaps)."""
    return {k: v.detach().float().clone() for k, v in params.items()}


def copy_into(target: dict[str, Any], source: dict[str, Any]) -> None:
    """``target[k] <- source[k]`` in place for every key (shapes must match)."""
    import torch

    missing = sorted(set(target) ^ set(source))
    if missing:
        raise ValueError(f"adapter keys differ ({len(missing)}), e.g. {missing[0]!r}")
    with torch.no_grad():
        for key, t in target.items():
            t.copy_(source[key].to(device=t.device, dtype=t.dtype))


def lerp_into(target: dict[str, Any], source: dict[str, Any], decay: float) -> None:
    """``target <- decay * target + (1 - decay) * source`` in place (an EMA step)."""
    import torch

    with torch.no_grad():
        for key, t in target.items():
            s = source[key].to(device=t.device, dtype=t.dtype)
            if decay == 0.0:
                t.copy_(s)
            else:
                t.mul_(decay).add_(s, alpha=1.0 - decay)
