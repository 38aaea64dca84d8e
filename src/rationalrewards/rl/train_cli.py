"""``rationalrewards rl train --config FILE``: the DiffusionNFT trainer's command (a thin layer).

``register_train(rl_app)`` adds the ``train`` verb to the ``rl`` sub-command. torch, diffusers
and the trainer load only when the command runs (``--help`` and ``--dry-run`` stay light).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..cli.common import EXIT_BACKEND, EXIT_INPUT, emit_json, err_console, fail

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", help="YAML file of NFTConfig fields (see docs/rl_trainer.md and examples/rl_*.yaml)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one field, KEY=VALUE (VALUE parsed as YAML, as if written in the file). Repeatable."),
]
OutputDirOpt = Annotated[
    Path | None, typer.Option("--output-dir", help="Run folder (overrides output_dir; relative to the current folder).")
]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", min=0, help="Stop after this many iterations in total.")]
ResumeOpt = Annotated[
    str | None,
    typer.Option("--resume", help="auto (latest checkpoint in the run folder), never, or a checkpoint folder."),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Validate the config, print it resolved, load nothing.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the run summary as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No per-iteration lines on stderr.")]


def train(
    config: ConfigOpt,
    set_: SetOpt = None,
    output_dir: OutputDirOpt = None,
    max_steps: MaxStepsOpt = None,
    resume: ResumeOpt = None,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune a diffusers flow-matching generator (FLUX.1, FLUX.1-Kontext, SD3) with DiffusionNFT
    and LoRA against a RationalRewards judge. Resumes from the run folder's latest checkpoint.
    Multi-GPU: accelerate launch -m rationalrewards.cli.main rl train --config FILE."""
    from ..io import InputFileError
    from .config import ConfigError, NFTConfig, config_summary

    try:
        cfg = NFTConfig.from_yaml(config, overrides=list(set_ or []))
        changes: dict[str, object] = {}
        if output_dir is not None:
            changes["output_dir"] = str(output_dir.expanduser().resolve())
        if max_steps is not None:
            changes["max_steps"] = max_steps
        if resume is not None:
            changes["resume"] = resume if resume in ("auto", "never") else str(Path(resume).expanduser().resolve())
        if changes:
            cfg = cfg.replace(**changes)
        cfg.check_required()
    except ConfigError as exc:
        fail(str(exc), EXIT_INPUT)
    if dry_run:
        if json_out:
            emit_json(cfg.to_dict())
        else:
            typer.echo(config_summary(cfg))
        return

    from .trainer import NFTTrainer, RewardUnavailableError

    try:
        trainer = NFTTrainer(cfg, verbose=not quiet)
    except (ConfigError, InputFileError, FileNotFoundError) as exc:
        fail(str(exc), EXIT_INPUT)
    except ValueError as exc:  # e.g. an unsupported pipeline or an image size it cannot take
        fail(str(exc), EXIT_INPUT)
    try:
        with trainer:
            summary = trainer.train()
    except RewardUnavailableError as exc:
        fail(str(exc), EXIT_BACKEND)
    except (ConfigError, InputFileError) as exc:
        fail(str(exc), EXIT_INPUT)
    if json_out:
        emit_json(summary)
    else:
        last = summary.get("last") or {}
        err_console.print(
            f"done: {summary['steps']} steps ({summary['stop_reason']}), last reward "
            f"{last.get('reward_mean', float('nan')):.4f}; LoRA in {summary['lora']}", highlight=False)


def register_train(app: typer.Typer) -> None:
    """Add ``train`` to ``app`` (the ``rl`` sub-command of the ``rationalrewards`` CLI)."""
    app.command("train")(train)
