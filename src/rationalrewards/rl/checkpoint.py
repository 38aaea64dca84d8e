"""Checkpoints of the RL trainer: atomic save, exact resume, LoRA export.

A checkpoint ``checkpoints/step-NNNNNN`` holds both LoRA adapters and the EMA, the optimiser,
every process's generator state and the :class:`TrainState`; formats are in
:mod:`rationalrewards.rl.safe_state` (nothing is ever unpickled). :class:`CheckpointMixin` gives
the trainer its ``save_checkpoint`` / ``find_checkpoint`` / ``load_checkpoint`` / ``export_lora``
methods; it reads the trainer's ``cfg``, ``accelerator``, ``rank``, ``world``, ``out_dir``,
``policy``, ``old``, ``ema``, ``optimizer``, ``state``, ``monitor``, ``last_eval``,
``transformer`` and ``pipe``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_text
from . import nft, safe_state
from .config import ConfigError

CHECKPOINT_PREFIX = "step-"


@dataclass
class TrainState:
    """Everything besides tensors that a resume needs."""

    step: int = 0
    epoch: int = 0
    cursor: int = 0
    retired: set[str] = field(default_factory=set)
    failed_streak: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "cursor": self.cursor, "retired": sorted(self.retired),
                "failed_streak": self.failed_streak}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainState:
        return cls(int(d["step"]), int(d["epoch"]), int(d["cursor"]), set(d.get("retired", [])),
                   int(d.get("failed_streak", 0)))



class CheckpointMixin:
    """Checkpoint and export methods of :class:`~rationalrewards.rl.trainer.NFTTrainer`."""

    cfg: Any
    accelerator: Any
    rank: int
    world: int
    out_dir: Path
    policy: dict[str, Any]
    old: dict[str, Any]
    ema: dict[str, Any] | None
    optimizer: Any
    state: TrainState
    monitor: Any
    last_eval: dict[str, Any] | None
    transformer: Any
    pipe: Any

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-NNNNNN`` atomically (adapters, EMA, optimiser, RNG, data state)
        and point ``checkpoints/latest`` at it. Every process saves its RNG state; the main
        process writes the rest."""
        from safetensors.torch import save_file

        acc = self.accelerator
        root = self.checkpoint_dir()
        name = f"{CHECKPOINT_PREFIX}{self.state.step:06d}"
        final = root / name
        tmp = root / f".{name}.tmp"
        acc.wait_for_everyone()
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        safe_state.save_rng_state(tmp, self.rank)
        if acc.is_main_process:
            tensors = {f"policy/{k}": v.detach().float().contiguous().cpu() for k, v in self.policy.items()}
            tensors.update({f"old/{k}": v.detach().float().contiguous().cpu() for k, v in self.old.items()})
            if self.ema is not None:
                tensors.update({f"ema/{k}": v.contiguous().cpu() for k, v in self.ema.items()})
            save_file(tensors, str(tmp / "adapters.safetensors"))
            safe_state.save_optimizer_state(self.optimizer, tmp)
            atomic_write_json(tmp / "state.json", {
                **self.state.to_json(),
                "monitor": self.monitor.state_dict(),
                "fingerprint": self.cfg.fingerprint(),
                "world_size": self.world,
                "last_eval": self.last_eval,
            })
        acc.wait_for_everyone()
        if acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic_write_text(root / "latest", name + "\n")
            self._prune_checkpoints()
        acc.wait_for_everyone()
        return final

    def _prune_checkpoints(self) -> None:
        limit = self.cfg.save_total_limit
        if not limit:
            return
        found = sorted(p for p in self.checkpoint_dir().glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir())
        for old in found[:-limit]:
            shutil.rmtree(old, ignore_errors=True)

    def find_checkpoint(self) -> Path | None:
        """The checkpoint ``resume`` points at (auto: the latest complete one in output_dir)."""
        mode = self.cfg.resume
        if mode == "never":
            return None
        if mode != "auto":
            path = Path(mode)
            if not (path / "state.json").is_file():
                raise ConfigError(f"resume: {path} is not a checkpoint folder (no state.json)")
            return path
        latest = self.checkpoint_dir() / "latest"
        if latest.is_file():
            path = self.checkpoint_dir() / latest.read_text(encoding="utf-8").strip()
            if (path / "state.json").is_file():
                return path
        found = sorted(p for p in self.checkpoint_dir().glob(f"{CHECKPOINT_PREFIX}*")
                       if (p / "state.json").is_file()) if self.checkpoint_dir().is_dir() else []
        return found[-1] if found else None

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote; the next iteration is then identical
        to the one the original run would have taken."""
        path = Path(path)
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
        mismatched = {k: (v, meta.get("fingerprint", {}).get(k)) for k, v in self.cfg.fingerprint().items()
                      if k in meta.get("fingerprint", {}) and meta["fingerprint"][k] != v}
        if mismatched:
            details = ", ".join(f"{k}: checkpoint {b!r} vs config {a!r}" for k, (a, b) in mismatched.items())
            raise ConfigError(f"checkpoint {path} was made with a different configuration ({details})")
        tensors = safe_state.load_tensors(path / "adapters.safetensors")
        nft.copy_into(self.policy, {k[len("policy/"):]: v for k, v in tensors.items() if k.startswith("policy/")})
        nft.copy_into(self.old, {k[len("old/"):]: v for k, v in tensors.items() if k.startswith("old/")})
        ema = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
        if self.ema is not None:
            if ema:
                nft.copy_into(self.ema, ema)
            else:
                self.ema = nft.snapshot(self.policy)
        # Nothing in a run folder is unpickled: it may come from elsewhere (safe_state explains).
        safe_state.load_optimizer_state(self.optimizer, path)
        self.state = TrainState.from_json(meta)
        self.monitor.load_state_dict(meta.get("monitor", {}))
        self.last_eval = meta.get("last_eval")
        if safe_state.has_rng_state(path, self.rank):
            safe_state.load_rng_state(path, self.rank)

    # -- export ---------------------------------------------------------------------------------
    def export_lora(self, out: str | Path, *, weights: str = "policy") -> Path:
        """Save the trained adapter (``policy``) or its EMA (``ema``) in diffusers' LoRA format,
        loadable with ``pipe.load_lora_weights(out)``."""
        from peft.utils import get_peft_model_state_dict

        out = Path(out)
        saved = None
        if weights == "ema":
            if self.ema is None:
                raise ValueError("no EMA weights (ema_decay is 0)")
            saved = nft.snapshot(self.policy)
            nft.copy_into(self.policy, self.ema)
        try:
            state = get_peft_model_state_dict(self.transformer, adapter_name=nft.POLICY)
            state = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}
            saver = getattr(type(self.pipe), "save_lora_weights", None)
            out.mkdir(parents=True, exist_ok=True)
            if saver is not None:
                saver(str(out), transformer_lora_layers=state)
            else:  # pragma: no cover - every supported family has a LoRA loader
                from safetensors.torch import save_file

                save_file(state, str(out / "pytorch_lora_weights.safetensors"))
        finally:
            if saved is not None:
                nft.copy_into(self.policy, saved)
        return out
