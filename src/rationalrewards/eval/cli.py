"""``rationalrewards eval`` (run or resume an evaluation) and ``rationalrewards eval compare``.

Thin: options are parsed here, the work is :class:`rationalrewards.eval.Evaluation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..cli.common import (
    EXIT_INPUT,
    JsonOpt,
    backend_command,
    check_choice,
    check_number,
    emit_json,
    err_console,
    executor_command,
    fail,
    make_reward_model,
    out_console,
    progress_bar,
)

BENCHMARK_NAMES = "genai-bench-t2i, genai-bench-edit, mmrb2-t2i, mmrb2-edit, editreward-bench, pairs"


@backend_command(required=False, defaults={"concurrency": 32})
@executor_command
def run(
    ctx: typer.Context,
    benchmark: Annotated[str | None, typer.Option("--benchmark", help=f"One of: {BENCHMARK_NAMES}.")] = None,
    data: Annotated[str | None, typer.Option(
        "--data", help="A Parquet/JSON/JSONL file, a folder (files or a saved HF dataset), or a hub id ORG/NAME.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder: results.jsonl, report.*; rerun resumes.")] = None,
    mode: Annotated[str, typer.Option("--mode", callback=check_choice("pairwise|pointwise", "pairwise, pointwise"),
                                      help="pairwise (one joint judgement) or pointwise (compare rewards).")] = "pairwise",
    swap: Annotated[bool | None, typer.Option(
        "--swap/--no-swap", help="Judge both image orders (default: on for MMRB2, whose protocol needs it).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", callback=check_number(1), help="Only the first N data rows.")] = None,
    tie_tolerance: Annotated[float, typer.Option("--tie-tolerance", callback=check_number(0),
                                                  help="Margin within which a verdict is a tie (>= 0).")] = 0.0,
    config: Annotated[str | None, typer.Option("--config", help="Dataset configuration (hub or snapshot subfolder).")] = None,
    split: Annotated[str | None, typer.Option("--split", help="Dataset split.")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Hub dataset revision (pin a commit for reproducible numbers).")] = None,
    bothbad_threshold: Annotated[float, typer.Option(
        "--bothbad-threshold", callback=check_number(0, high=1),
        help="GenAI-Bench 4-way: a predicted tie is 'both bad' below this mean reward (0..1).")] = 0.5,
    bootstrap: Annotated[int, typer.Option("--bootstrap", callback=check_number(0), help="Bootstrap resamples for the 95% intervals.")] = 1000,
    bootstrap_seed: Annotated[int, typer.Option("--bootstrap-seed", help="Seed of the bootstrap.")] = 0,
    exclude_failed: Annotated[bool, typer.Option(
        "--exclude-failed", help="Also show accuracies without failed items (a view; the headline always counts them).")] = False,
    html: Annotated[bool, typer.Option("--html/--no-html", help="Write report.html with every mismatch.")] = True,
    backend: dict[str, Any] | None = None,
    executor: Any = None,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a reward model on a preference benchmark (resumable; see `eval compare`)."""
    if ctx.invoked_subcommand is not None:
        return
    if not benchmark or not data or out is None:
        fail("give --benchmark NAME --data PATH --out DIR (or `eval compare RUN...`)", EXIT_INPUT)
    assert benchmark is not None and data is not None and out is not None
    import asyncio

    from ..io import InputFileError
    from .runner import Evaluation

    try:
        ev = Evaluation(benchmark, data, out, mode=mode, swap=swap, limit=limit,  # type: ignore[arg-type]
                        tie_tolerance=tie_tolerance, config=config, split=split, revision=revision,
                        log=lambda msg: err_console.print(msg, markup=False, highlight=False))
    except InputFileError as exc:
        fail(str(exc), EXIT_INPUT)
    if backend is None:
        fail("choose a backend: --base-url URL (with --model NAME) or --model PATH_OR_HF_ID", EXIT_INPUT)
    assert backend is not None
    concurrency = backend["concurrency"]
    rm = make_reward_model(backend, executor)
    pending = ev.pending()
    err_console.print(
        f"{ev.bench.name}: {len(ev.known)} pairs from {ev.n_rows} rows ({len(ev.unknown)} unknown labels), "
        f"{len(ev.known) - len(pending)} already done, {len(pending)} to judge; mode {ev.mode}, "
        f"swap {ev.swap} -> {out}", markup=False, highlight=False)
    if ev.unknown:
        err_console.print(f"[yellow]warning:[/] {len(ev.unknown)} rows have labels that were not understood; "
                          "they are listed in report.json and not judged", highlight=False)
    try:
        with progress_bar(f"eval {ev.bench.name}", len(pending)) as advance:

            async def go() -> Any:
                try:
                    return await ev.arun(rm, concurrency=concurrency, on_result=lambda _row: advance())
                finally:
                    await rm.aclose()

            stats = asyncio.run(go())
        report = ev.write_report(bootstrap=bootstrap, seed=bootstrap_seed, bothbad_threshold=bothbad_threshold,
                                 html_report=html, exclude_failed=exclude_failed, last_run=stats)
    except InputFileError as exc:
        fail(str(exc), EXIT_INPUT)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished items are saved in {out / 'results.jsonl'}; rerun the same "
                          "command to resume", markup=False, highlight=False)
        raise typer.Exit(130) from None
    if stats.judged and stats.ok == 0:
        err_console.print("[bold red]warning:[/] every item judged in this run failed "
                          f"({stats.failed}); check the backend. Failed items are retried when rerun.", highlight=False)
    if json_out:
        emit_json(report)
    else:
        _show(report, exclude_failed)
    err_console.print(f"wrote {out / 'report.json'}, report.md" + (", report.html" if html else ""), markup=False,
                      highlight=False)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _show(report: dict[str, Any], exclude_failed: bool) -> None:
    from rich.table import Table

    ci = report.get("ci95")
    out_console.print(
        f"[bold]{escape(str(report['benchmark']))}[/]: {_pct(report['accuracy'])}% ({escape(str(report['protocol']))})"
        + (f" 95% CI [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")
        + f"; n={report['n']}, failed={report['n_failed']} (counted as wrong)", highlight=False)
    table = Table("protocol", "accuracy %", "95% CI", "correct / total", "epsilon",
                  *(["excl. failed %"] if exclude_failed else []))
    for name, p in report["protocols"].items():
        c = p.get("ci95")
        row = [name + (" *" if name == report["protocol"] else ""), _pct(p["accuracy"]),
               "" if not c else f"[{_pct(c[0])}, {_pct(c[1])}]", f"{p['correct']:g} / {p['total']:g}",
               "" if p.get("epsilon") is None else f"{p['epsilon']:g}"]
        if exclude_failed:
            row.append(_pct(p["excluding_failed"]["accuracy"]))
        table.add_row(*row)
    out_console.print(table)
    pb = report.get("position_bias")
    if pb:
        out_console.print(f"position bias: verdict changes with the order on {_pct(pb['rate'])}% of pairs", highlight=False)
    out_console.print(f"parse failures: {_pct(report['parse_failure_rate'])}% of judgements; "
                      f"* = official protocol: {report['protocol_description']}", highlight=False)


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (or their report.json files).")],
    exclude_failed: Annotated[bool, typer.Option("--exclude-failed", help="Add rows without failed items.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Print several runs side by side (one column per run)."""
    from rich.table import Table

    from ..io import InputFileError
    from .report import compare_reports

    try:
        cmp = compare_reports(runs, exclude_failed=exclude_failed)
    except InputFileError as exc:
        fail(str(exc), EXIT_INPUT)
    if json_out:
        emit_json(cmp)
        return
    table = Table("metric", *[escape(str(r["name"])) for r in cmp["runs"]])
    for row in cmp["rows"]:
        table.add_row(row["metric"], *[_cell(row["metric"], v) for v in row["values"]])
    out_console.print(table)
    if not cmp["comparable"]:
        err_console.print("[yellow]note:[/] the runs are on different benchmarks; their numbers are not comparable")


def _cell(metric: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"[{_pct(value[0])}, {_pct(value[1])}]"
    if isinstance(value, float) and "epsilon" in metric:
        return f"{value:g}"
    if isinstance(value, float) and ("accuracy" in metric or "rate" in metric or metric.split(" ")[0] in _PROTOCOL_ROWS):
        return _pct(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


_PROTOCOL_ROWS = {"3way", "no_ties", "4way", "both_orders", "tie_calibrated", "group", "group_tie_calibrated",
                  "position_bias"}


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        name="eval",
        help="Preference-benchmark evaluation with stated protocols: `eval --benchmark NAME --data PATH --out DIR`, "
             "`eval compare RUN1 RUN2 ...`.",
        invoke_without_command=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    sub.callback()(run)
    sub.command("compare")(compare)
    app.add_typer(sub, name="eval")
