"""``rationalrewards demo``: a thin layer over :func:`rationalrewards.demo.pipeline.run_demo`, and
``rationalrewards demo pretrain-base`` over :func:`rationalrewards.demo.base.pretrain_base`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..cli.common import EXIT_INPUT, EXIT_OK, JsonOpt, emit_json, err_console, fail, out_console
from ..cli.progress import StageLog, quiet_libraries

VerboseOpt = Annotated[bool, typer.Option(
    "-v", "--verbose", help="Also print each stage's details (teacher calls, training steps, library warnings).")]

demo_app = typer.Typer(help="The whole system offline on a synthetic world (docs/demo.md).",
                       invoke_without_command=True, no_args_is_help=False)


@demo_app.callback(invoke_without_command=True)
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Run folder; rerunning with the same folder resumes.")] = Path(
        "runs/demo"),
    quick: Annotated[bool, typer.Option("--quick", help="The small budget CI runs (under 2 minutes on two cores).")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the world, the teacher and training.")] = 0,
    teacher_noise: Annotated[float | None, typer.Option("--teacher-noise", min=0.0, max=1.0,
                                                        help="Share of teacher answers with one missed or hallucinated "
                                                        "defect.", show_default="0.3")] = None,
    no_filter: Annotated[bool, typer.Option("--no-filter", help="Train on the raw teacher output (the ablation).")] = False,
    train_pairs: Annotated[int | None, typer.Option("--train-pairs", min=1, help="Preference pairs for PARROT.")] = None,
    eval_pairs: Annotated[int | None, typer.Option("--eval-pairs", min=1, help="Held-out pairs for eval.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Student training steps.")] = None,
    sft_kinds: Annotated[str | None, typer.Option(
        "--sft-kinds", help="Which of PARROT's SFT examples the student learns from: pointwise, pairwise or both.",
        show_default="pointwise")] = None,
    eval_mode: Annotated[str | None, typer.Option(
        "--eval-mode", help="How a held-out pair is judged: pairwise (one joint judgement) or pointwise (each image "
        "critiqued alone, the higher reward wins).", show_default="pointwise")] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="torch threads (default: every core, or one when the machine is already busy).")] = None,
    rebuild_base: Annotated[bool, typer.Option(
        "--rebuild-base", help="Pretrain the base student afresh (shipped recipe, this --seed) instead of starting from "
        "the shipped weights (about an hour on two cores).")] = False,
    base: Annotated[str | None, typer.Option(
        "--base", help="What SFT starts from: shipped, rebuild, scratch (the language model from random weights), or "
        "a folder written by `demo pretrain-base`.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run with other settings in --out.")] = False,
    verbose: VerboseOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Run the whole system offline on a synthetic world: pairs -> PARROT (scripted teacher) -> fine-tune the
    pretrained tiny Qwen3-VL base -> eval on held-out pairs -> refine with the student as critic.

    Writes OUT/summary.json and OUT/report.html. Needs the training extra: pip install "rationalrewards\\[train]".
    """
    if ctx.invoked_subcommand is not None:
        return
    if rebuild_base and base not in (None, "rebuild"):
        fail("--rebuild-base and --base name different bases; give one of them", EXIT_INPUT)
    # Before torch loads OpenMP: idle worker threads sleep instead of spinning. On a 2-core machine
    # shared with other jobs, spinning threads made a training step 2x slower (measured).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        fail(f"the demo trains a model and needs the training extra: pip install 'rationalrewards[train]' "
             f"({exc})", EXIT_INPUT)
    from .pipeline import DemoConfig, DemoError, run_demo

    extra: dict[str, Any] = {"threads": threads} if threads else {}
    try:
        cfg = DemoConfig.preset(quick=quick, out=str(out), seed=seed, teacher_noise=teacher_noise,
                                filter=False if no_filter else None, train_pairs=train_pairs, eval_pairs=eval_pairs,
                                max_steps=max_steps, sft_kinds=sft_kinds, eval_mode=eval_mode, base="rebuild" if rebuild_base else base,
                                extra=extra or None)
        quiet_libraries(verbose=verbose)
        with StageLog(err_console, verbose=verbose) as log:
            summary = run_demo(cfg, log=log, overwrite=overwrite)
    except (DemoError, ValueError) as exc:
        fail(str(exc), EXIT_INPUT)
    if json_out:
        emit_json(summary)
    else:
        _print_summary(summary, out)
    raise typer.Exit(EXIT_OK)


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _print_summary(s: dict[str, Any], out: Path) -> None:
    st, f, r = s.get("student", {}), s.get("filter", {}), s.get("refine", {})
    tr = r.get("true_reward") or {}
    tt = (r.get("teacher_critic") or {}).get("true_reward") or {}
    lines = [
        f"student   accuracy {_fmt(st.get('accuracy'))} on {st.get('n')} held-out pairs (95% CI {st.get('ci95')}, "
        f"{st.get('mode') or 'pairwise'} judging), parse rate {_fmt(st.get('parse_rate'))}",
        f"base      zero-shot accuracy {_fmt(((s.get('base') or {}).get('zero_shot') or {}).get('accuracy'))} on the same "
        "pairs (before PARROT)",
        f"teacher   accuracy {_fmt((s.get('teacher_reference') or {}).get('accuracy'))} (noise "
        f"{_fmt(f.get('teacher_noise'))})",
        f"filter    rationale error rate raw {_fmt(f.get('raw_error_rate'))} -> kept {_fmt(f.get('kept_error_rate'))}",
        f"refine    true reward round 0 {_fmt(tr.get('round0_best'))} -> final {_fmt(tr.get('final_best'))} "
        f"(best-of-N {_fmt(tr.get('best_of_n'))}); with the teacher as critic {_fmt(tt.get('round0_best'))} -> "
        f"{_fmt(tt.get('final_best'))} (best-of-N {_fmt(tt.get('best_of_n'))})",
        f"time      {_fmt(s.get('timing_s', {}).get('total'))} s",
        f"report    {out / 'report.html'}",
    ]
    for line in lines:
        out_console.print(line, markup=False, highlight=False, soft_wrap=True)  # one line each, even in a file


@demo_app.command("pretrain-base")
def pretrain_base_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for the base model; rerunning resumes its checkpoint.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the pretraining data stream and the weights.")] = 0,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Optimiser steps.", show_default="the shipped recipe's")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch threads.", show_default="every core")] = None,
    verbose: VerboseOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Pretrain the demo's base student (vision tower and language model) on generic vision-language tasks of the
    world: captions, questions, image-text matching, image differences. No preference pair, critique or score is
    used. Writes weights, recipe.json, base_stats.json (held-out accuracy per task) and SHA256SUMS."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        fail(f"pretraining needs the training extra: pip install 'rationalrewards[train]' ({exc})", EXIT_INPUT)
    from .base import BaseModelError, BaseRecipe, pretrain_base

    recipe = BaseRecipe(seed=seed, **({"steps": steps} if steps else {}))
    try:
        quiet_libraries(verbose=verbose)
        with StageLog(err_console, verbose=verbose) as log:
            log("demo: pretrain-base ...")
            t0 = time.perf_counter()
            stats = pretrain_base(out, recipe, threads=threads, log=log)
            log(f"demo: pretrain-base done in {time.perf_counter() - t0:.1f}s")
    except (BaseModelError, ValueError) as exc:
        fail(str(exc), EXIT_INPUT)
    if json_out:
        emit_json(stats)
    else:
        acc = stats["heldout_accuracy"]
        for kind, v in acc.items():
            out_console.print(f"{kind:8s} held-out exact {_fmt(v.get('exact'))}"
                              + (f", yes/no {_fmt(v['yes_no'])}" if "yes_no" in v else "") + f" (n={v.get('n')})",
                              markup=False, highlight=False)
        out_console.print(f"base      {out}", markup=False, highlight=False)
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add ``demo`` (and ``demo pretrain-base``) to the ``rationalrewards`` app."""
    app.add_typer(demo_app, name="demo")
