"""Run logs of the RL trainer: JSONL files in the run folder, TensorBoard and W&B when asked."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from .config import NFTConfig


class RunLogger:
    """JSONL files in the run folder, TensorBoard when installed, W&B when asked (main process only).

    On resume from step S every JSONL log is cut back to rows with ``step <= S`` and TensorBoard
    purges later events, so a killed-and-restarted run has each step logged once.
    """

    FILES = ("metrics.jsonl", "eval.jsonl", "flags.jsonl", "samples.jsonl")

    def __init__(self, out_dir: Path, cfg: NFTConfig, *, enabled: bool, resume_step: int | None,
                 echo: Callable[[str], None] | None) -> None:
        self.out_dir = out_dir
        self.enabled = enabled
        self.echo = echo
        self.tb: Any = None
        self.wandb: Any = None
        self.notes: list[str] = []
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in self.FILES:
            path = out_dir / name
            if resume_step is None:
                path.unlink(missing_ok=True)
            elif path.exists():
                keep = [line for line in path.read_text(encoding="utf-8").splitlines()
                        if _row_step(line) is not None and _row_step(line) <= resume_step]  # type: ignore[operator]
                atomic_write_text(path, "".join(line + "\n" for line in keep))
        if "tensorboard" in cfg.report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"),
                                        purge_step=(resume_step + 1) if resume_step is not None else None)
            except ImportError:
                self.notes.append("tensorboard is not installed; logging to JSONL only (pip install tensorboard)")
        if "wandb" in cfg.report_to:
            try:
                import wandb

                self.wandb = wandb.init(project=cfg.wandb_project or "rationalrewards-rl", config=cfg.to_dict(),
                                        dir=str(out_dir), resume="allow")
            except ImportError:
                self.notes.append("wandb is not installed; skipping W&B logging (pip install wandb)")
        for note in self.notes:
            self._say(f"note: {note}")

    def _say(self, text: str) -> None:
        if self.echo is not None:
            self.echo(text)

    def log(self, name: str, row: dict[str, Any], *, scalars: bool = True) -> None:
        """Append one row to ``name`` (flushed and fsynced); numeric fields also go to
        TensorBoard / W&B unless ``scalars`` is False."""
        if not self.enabled:
            return
        self.append(name, [row])
        if not scalars:
            return
        step = int(row.get("step", 0))
        prefix = "" if name == "metrics.jsonl" else name.split(".")[0] + "/"
        numeric = {prefix + k: float(v) for k, v in row.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if self.tb is not None:
            for k, v in numeric.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(numeric, step=step)

    def append(self, name: str, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows to a JSONL log with one write and one fsync."""
        if not self.enabled or not rows:
            return
        with (self.out_dir / name).open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _row_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, set):
        return sorted(obj)
    return str(obj)
