"""``rationalrewards demo``: a thin layer over :func:`rationalrewards.demo.pipeline.run_demo`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..cli.common import EXIT_INPUT, EXIT_OK, JsonOpt, emit_json, err_console, fail, out_console


def demo(
    out: Annotated[Path, typer.Option("--out", help="Run folder; rerunning with the same folder resumes.")] = Path(
        "runs/demo"),
    quick: Annotated[bool, typer.Option("--quick", help="The small budget CI runs (under 2 minutes on two cores).")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the world, the teacher and training.")] = 0,
    teacher_noise: Annotated[float | None, typer.Option("--teacher-noise", min=0.0, max=1.0,
                                                        help="Share of teacher answers with one missed or hallucinated "
                                                        "defect [0.3].")] = None,
    no_filter: Annotated[bool, typer.Option("--no-filter", help="Train on the raw teacher output (the ablation).")] = False,
    train_pairs: Annotated[int | None, typer.Option("--train-pairs", min=1, help="Preference pairs for PARROT.")] = None,
    eval_pairs: Annotated[int | None, typer.Option("--eval-pairs", min=1, help="Held-out pairs for eval.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Student training steps.")] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="torch threads (default: every core, or one when the machine is already busy).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run with other settings in --out.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Run the whole system offline on a synthetic world: pairs -> PARROT (scripted teacher) -> train a tiny
    Qwen3-VL student from scratch -> eval on held-out pairs -> refine with the student as critic.

    Writes OUT/summary.json and OUT/report.html. Needs the training extra: pip install "rationalrewards\\[train]".
    """
    # Before torch loads OpenMP: idle worker threads sleep instead of spinning. On a 2-core machine
    # shared with other jobs, spinning threads made a training step 2x slower (measured).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        fail(escape(f"the demo trains a model and needs the training extra: pip install 'rationalrewards[train]' "
                    f"({exc})"), EXIT_INPUT)
    from .pipeline import DemoConfig, DemoError, run_demo

    extra: dict[str, Any] = {"threads": threads} if threads else {}
    try:
        cfg = DemoConfig.preset(quick=quick, out=str(out), seed=seed, teacher_noise=teacher_noise,
                                filter=False if no_filter else None, train_pairs=train_pairs, eval_pairs=eval_pairs,
                                max_steps=max_steps, extra=extra or None)
        summary = run_demo(cfg, log=lambda m: err_console.print(m, markup=False, highlight=False), overwrite=overwrite)
    except (DemoError, ValueError) as exc:
        fail(escape(str(exc)), EXIT_INPUT)
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
        f"student   accuracy {_fmt(st.get('accuracy'))} on {st.get('n')} held-out pairs, parse rate "
        f"{_fmt(st.get('parse_rate'))}",
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
        out_console.print(line, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the ``rationalrewards`` app."""
    app.command("demo")(demo)
