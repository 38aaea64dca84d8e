"""``rationalrewards curate``: a thin layer over :func:`rationalrewards.curate.curate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..cli.common import (
    EXIT_BACKEND,
    EXIT_INPUT,
    EXIT_OK,
    EXIT_PARSE,
    JsonOpt,
    backend_command,
    check_number,
    emit_json,
    err_console,
    executor_command,
    fail,
    make_reward_model,
    out_console,
    progress_bar,
)


@backend_command(required=False)
@executor_command
def curate_command(
    input: Annotated[Path, typer.Option("--input", help="JSONL ({id, prompt, image, source?}), Parquet, a `datasets` "
                                        "folder, a Parquet folder, or a folder of images.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (reusing it resumes and re-splits).")],
    min_reward: Annotated[float | None, typer.Option("--min-reward", callback=check_number(0, high=1),
                                                     help="Keep items with reward >= X (0..1).")] = None,
    min_score: Annotated[list[str] | None, typer.Option("--min", help="DIM=VALUE: keep items with that dimension's "
                                                        "score >= VALUE (repeatable; N/A passes).")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Image folder: JSONL/CSV/TXT mapping file name "
                                                 "-> prompt.")] = None,
    split: Annotated[str | None, typer.Option("--split", help="Split of a `datasets` / Parquet folder.")] = None,
    id_column: Annotated[str, typer.Option("--id-column", help="Input column holding the item id.")] = "id",
    prompt_column: Annotated[str, typer.Option("--prompt-column", help="Input column holding the request.")] = "prompt",
    image_column: Annotated[str, typer.Option("--image-column", help="Input column holding the image to judge.")] = "image",
    source_column: Annotated[str, typer.Option("--source-column", help="Input column holding the source image(s) of an edit.")] = "source",
    report_examples: Annotated[int, typer.Option("--report-examples", callback=check_number(0),
                                                 help="Lowest-reward examples shown in report.html.")] = 20,
    scores_only: Annotated[bool, typer.Option("--scores-only", help="Stop critiques before the refinement tail.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit non-zero if any critique failed.")] = False,
    backend: dict[str, Any] | None = None,
    executor: Any = None,
    json_out: JsonOpt = False,
) -> None:
    """Critique a dataset and split it into kept / rejected sets with the reason for each item.

    Writes OUT/kept.jsonl, OUT/rejected.jsonl, OUT/critiques.jsonl (the resumable cache), OUT/summary.json, OUT/plots/*.png and OUT/report.html. Without a backend only cached critiques are used: rerun with new thresholds to re-split without calling the judge.
    """
    from ..io import InputFileError
    from .pipeline import JudgeRequired, curate
    from .sources import Columns, open_items
    from .thresholds import Thresholds

    try:
        thresholds = Thresholds.from_specs(min_reward, min_score or ())
        columns = Columns(id=id_column, prompt=prompt_column, image=image_column, source=source_column)
        source = open_items(input, prompts=prompts, columns=columns, split=split, exclude=out)
        total = len(source)
    except (ValueError, InputFileError) as exc:
        fail(str(exc), EXIT_INPUT)
    rm: Any = None
    concurrency = backend["concurrency"] if backend else 16
    if backend is not None:
        rm = make_reward_model(backend, executor)
    err_console.print(f"{total} items from {input} -> {out}", markup=False, highlight=False)
    with progress_bar("curate", total) as advance:
        try:
            result = curate(source, out, reward_model=rm, thresholds=thresholds, concurrency=concurrency,
                            scores_only=scores_only, report_examples=report_examples, on_progress=advance)
        except (InputFileError, JudgeRequired) as exc:
            fail(str(exc), EXIT_INPUT)
    summary = result.summary
    stats = summary["stats"]
    if json_out:
        emit_json(summary)
    else:
        run = summary["run"]
        out_console.print(
            f"[bold]{stats['n']} items[/]: [green]{stats['n_kept']} kept[/], [red]{stats['n_rejected']} rejected[/]"
            f" ({stats['n_failed']} failed critiques)", highlight=False)
        out_console.print(f"this run: {run['critiqued']} critiqued, {run['cached']} from cache"
                          + (f", {run['stale']} re-critiqued (input changed)" if run["stale"] else "")
                          + (f", {run['failed_not_retried']} earlier failures kept (no judge to retry them)"
                             if run["failed_not_retried"] else ""), highlight=False)
        if stats["rejections_by_check"]:
            out_console.print("rejections by check: " + ", ".join(f"{k} {v}" for k, v in
                                                                 sorted(stats["rejections_by_check"].items())))
        out_console.print(f"-> {out / 'kept.jsonl'}, {out / 'rejected.jsonl'}, {out / 'report.html'}", markup=False,
                          highlight=False)
    failures = stats["failures_by_kind"]
    if failures.get("input") or failures.get("parse") or failures.get("backend"):
        err_console.print("failed critiques are in rejected.jsonl with their reason; rerun with a judge to retry them")
    if strict and stats["n_failed"]:
        code = EXIT_BACKEND if failures.get("backend") else EXIT_PARSE if failures.get("parse") else EXIT_INPUT
        raise typer.Exit(code)
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add ``curate`` to the ``rationalrewards`` command line."""
    app.command("curate")(curate_command)
