"""``critique``, ``compare`` and ``parse``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import (
    DEFAULT_ALLOW_NA,
    EXIT_INPUT,
    EXIT_OK,
    AggregationOpt,
    JsonOpt,
    backend_command,
    check_allow_na,
    check_choice,
    check_number,
    emit_json,
    err_console,
    executor_command,
    exit_code_for,
    fail,
    make_reward_model,
    out_console,
    parse_aggregation_spec,
    parse_allow_na,
    progress_bar,
    settings_fingerprint,
)


def _blank_score(res: Any, key: str, has_text: bool) -> str:
    """What a dimension without a number shows: ``failed`` when the parse failed because of
    this dimension (a score on another scale such as ``7/10``: the reason is printed above the
    table), ``N/A`` when the judge answered N/A, ``missing`` when there is nothing at all."""
    if not res.ok and res.error:
        from ..critique.dimensions import dimensions_for

        for dim in dimensions_for(res.task):
            if dim.key == key and any(name in res.error for name in (dim.header, *dim.aliases)):
                return "[red]failed[/]"
    return "N/A" if has_text else "missing"


def _show_critique(res: Any) -> None:
    # Everything from the user or the model is escaped: "[/]" in a prompt echoed by the judge,
    # or "[link=...]" in its text, must print literally (and never crash the output).
    status = "[green]ok[/]" if res.ok else f"[red]failed ({escape(str(res.error_kind))})[/]"
    out_console.print(f"[bold]{res.task} critique[/] {status}" + (f"  id={escape(res.id)}" if res.id else ""),
                      highlight=False)
    if not res.ok:
        out_console.print(f"[red]reason:[/] {escape(res.error or '')}", highlight=False)
    table = Table("dimension", "score", "justification", show_lines=True)
    for key, just in res.justifications.items():
        score = res.scores.get(key)
        shown = f"{score:.2f}" if score is not None else _blank_score(res, key, bool(just))
        table.add_row(escape(key), shown, escape((just or "")[:400]))
    if res.justifications:
        out_console.print(table)
    if res.reward is not None:
        out_console.print(f"[bold]reward[/] {res.reward:.4f}")
    if res.summary:
        out_console.print(f"[bold]summary[/] {escape(res.summary)}", highlight=False)
    if res.refined_request:
        out_console.print(f"[bold]refined request[/] {escape(res.refined_request)}", highlight=False)
    if not res.ok and res.raw:
        out_console.print("[dim]raw model output (first 600 chars):[/]")
        out_console.print(res.raw[:600], markup=False, highlight=False)


def _show_compare(res: Any) -> None:
    status = "[green]ok[/]" if res.ok else f"[red]failed ({escape(str(res.error_kind))})[/]"
    out_console.print(f"[bold]{res.task} comparison ({res.mode})[/] {status}"
                      + (f"  id={escape(res.id)}" if res.id else ""), highlight=False)
    if not res.ok:
        out_console.print(f"[red]reason:[/] {escape(res.error or '')}", highlight=False)
    table = Table("dimension", "A", "B")
    for key in res.justifications:
        a, b = res.scores_a.get(key), res.scores_b.get(key)
        blank = _blank_score(res, key, True)
        table.add_row(escape(key), blank if a is None else f"{a:.2f}", blank if b is None else f"{b:.2f}")
    out_console.print(table)
    if res.winner:
        out_console.print(f"[bold]winner[/] {res.winner}  (reward A {res.reward_a:.4f}, B {res.reward_b:.4f})")
    if not res.ok and res.raw:
        out_console.print(res.raw[:600], markup=False, highlight=False)


def _not_text(value: str) -> bool:
    """True for a string UTF-8 cannot hold (a lone surrogate, e.g. from a ``\\ud800`` escape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _field_problem(row: dict[str, Any], kind: str) -> str | None:
    """What is wrong with the fields of one readable batch line, or None."""
    if not isinstance(row["prompt"], str):
        return f"field 'prompt' must be a string, got {type(row['prompt']).__name__}"
    if _not_text(row["prompt"]):
        return "field 'prompt' is not valid Unicode text (it holds a lone surrogate such as \\ud800)"
    for key in ("image",) if kind == "critique" else ("image_a", "image_b"):
        if not isinstance(row[key], str):
            return f"field '{key}' must be a path or data: URL string, got {type(row[key]).__name__}"
    source = row.get("source")
    if source is not None and not isinstance(source, str) and not (
        isinstance(source, list) and all(isinstance(x, str) for x in source)
    ):
        return f"field 'source' must be a path string or a list of them, got {type(source).__name__}"
    return None


def check_batch_paths(input_path: Path, output: Path) -> None:
    """Refuse an ``--output`` that would destroy the input or cannot be a file (exit 2)."""
    if output.is_dir():
        fail(f"--output {output} is a folder; name a file, e.g. {output / 'results.jsonl'}", EXIT_INPUT)
    try:
        same = output.exists() and input_path.exists() and output.samefile(input_path)
    except OSError:
        same = False
    if same or output.resolve() == input_path.resolve():
        fail(f"--output {output} is the input file {input_path}; writing results there would destroy the "
             "input: choose another --output", EXIT_INPUT)
    parent = output.resolve().parent
    if parent.exists() and not parent.is_dir():
        fail(f"--output {output}: {parent} is not a folder", EXIT_INPUT)


def _batch(
    kind: str,
    input_path: Path,
    output: Path,
    rm: Any,
    concurrency: int,
    json_out: bool,
    strict: bool,
    rows: list[dict[str, Any]],
    problems: list[Any],
    scores_only: bool = False,
    **kwargs: Any,
) -> int:
    import asyncio

    from ..critique.model import CompareItem, CritiqueItem
    from ..critique.schema import failed_compare, failed_critique
    from ..io import ResumableJsonl

    base = str(input_path.resolve().parent)
    try:
        store = ResumableJsonl(output)
    except OSError as exc:
        fail(f"cannot write --output {output}: {exc.strerror or exc}", EXIT_INPUT)
    todo = [r for r in rows if r["id"] not in store.done]
    counts = {"ok": 0, "input": 0, "parse": 0, "backend": 0}

    # Lines that could not be used become failed rows in the output (under their own id when
    # they had a readable one, else line-N), so the file says what happened to every line.
    taken = {r["id"] for r in rows}
    order: list[tuple[int, str]] = [(r["_line"], r["id"]) for r in rows]
    for p in sorted(problems, key=lambda p: p.line):
        rid = p.id if p.id is not None and p.id not in taken else f"line-{p.line}"
        counts["input"] += 1
        if rid in taken:
            continue  # nowhere to record it without hiding another row; the summary reports it
        taken.add(rid)
        order.append((p.line, rid))
        failed = failed_critique("t2i", "input", p.message, id=rid) if kind == "critique" else \
            failed_compare("t2i", "input", p.message, id=rid)
        store.append(failed.to_json())
        if json_out:
            emit_json(failed.to_json())
    for p in problems[:20]:
        err_console.print(f"[yellow]skipped:[/] {escape(p.message)}", highlight=False)
    if len(problems) > 20:
        err_console.print(f"[yellow]skipped:[/] ... and {len(problems) - 20} more bad lines", highlight=False)
    err_console.print(
        f"{len(rows) + len(problems)} lines, {len(problems)} unusable, {len(rows) - len(todo)} already done, "
        f"{len(todo)} to run -> {escape(str(output))}", highlight=False)
    items: list[Any]
    if kind == "critique":
        items = [CritiqueItem(prompt=r["prompt"], image=r["image"], source=r.get("source"), id=r["id"], base_dir=base)
                 for r in todo]
    else:
        items = [CompareItem(prompt=r["prompt"], image_a=r["image_a"], image_b=r["image_b"], source=r.get("source"),
                             id=r["id"], base_dir=base) for r in todo]

    with progress_bar(kind, len(items)) as advance:

        def on_result(_: int, res: Any) -> None:
            row = res.to_json()
            store.append(row)
            counts["ok" if res.ok else (res.error_kind or "parse")] += 1
            advance()
            if json_out:
                emit_json(row)

        async def go() -> None:
            try:
                if kind == "critique":
                    await rm.acritique_batch(items, concurrency=concurrency, on_result=on_result,
                                             scores_only=scores_only)
                else:
                    await rm.acompare_batch(items, concurrency=concurrency, on_result=on_result, **kwargs)
            finally:
                await rm.aclose()

        asyncio.run(go())
    store.finalize([rid for _, rid in sorted(order)])
    err_console.print(
        f"done: {counts['ok']} ok, {counts['parse']} parse failures, {counts['backend']} backend failures, "
        f"{counts['input']} bad inputs (failed items are retried when rerun)"
    )
    if not rows:
        # Not one usable line: the file as a whole is wrong (another format, the wrong file), so
        # the run is an input error even without --strict; the reasons are in the output.
        err_console.print(f"[bold red]error:[/] no usable line in {escape(str(input_path))}", highlight=False)
        return EXIT_INPUT
    if strict and (counts["parse"] or counts["backend"] or counts["input"]):
        worst = max(("backend", 4), ("parse", 3), ("input", 2), key=lambda kv: (counts[kv[0]] > 0, kv[1]))
        return worst[1]
    return EXIT_OK


def _prepare_batch(
    kind: str, input_path: Path, output: Path, settings: dict[str, Any], overwrite: bool
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Check the paths, read the input (bad lines collected, not fatal) and pin the settings;
    all before a model is created, so a wrong command costs nothing."""
    from ..io import InputFileError, assign_ids, pin_settings, read_jsonl

    check_batch_paths(input_path, output)
    required = ("prompt", "image") if kind == "critique" else ("prompt", "image_a", "image_b")
    problems: list[Any] = []
    try:
        rows = assign_ids(read_jsonl(input_path, required=required, problems=problems), input_path,
                          problems=problems)
        if not rows and not problems:
            fail(f"{input_path} has no lines to judge (one JSON object per line expected)", EXIT_INPUT)
        note = pin_settings(output, settings, overwrite=overwrite)
    except InputFileError as exc:
        fail(str(exc), EXIT_INPUT)
    except OSError as exc:
        fail(f"cannot write beside --output {output}: {exc.strerror or exc}", EXIT_INPUT)
    if note:
        err_console.print(escape(note), highlight=False)
    from ..io import LineProblem

    good = []
    for row in rows:
        what = _field_problem(row, kind)
        if what is None:
            good.append(row)
        else:
            problems.append(LineProblem(row["_line"], f"{input_path}:{row['_line']}: {what}", row["id"]))
    return good, problems


OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Batch: delete --output (and its settings) and start over instead of resuming.")]
TieToleranceOpt = Annotated[float, typer.Option(
    "--tie-tolerance", callback=check_number(0), help="Score-sum gap still called a tie (>= 0).")]


def _check_prompt(prompt: str) -> None:
    if _not_text(prompt):
        fail("--prompt is not valid UTF-8 text (it holds bytes the terminal could not decode)", EXIT_INPUT)


@backend_command()
@executor_command
def critique(
    prompt: Annotated[str | None, typer.Option("--prompt", help="The generation request / edit instruction.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="The generated or edited image.")] = None,
    source: Annotated[list[Path] | None, typer.Option("--source", help="Source image(s); makes it an edit task.")] = None,
    input: Annotated[Path | None, typer.Option("--input", help="Batch: JSONL of {id, prompt, image, source?}.")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Batch: results JSONL (resumes if present).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Batch: exit non-zero if any item failed.")] = False,
    overwrite: OverwriteOpt = False,
    scores_only: Annotated[bool, typer.Option("--scores-only", help="Stop before the refinement tail.")] = False,
    json_out: JsonOpt = False,
    backend: dict[str, Any] | None = None,
    executor: Any = None,
) -> None:
    """Critique one image (t2i) or one edit (with --source), or a JSONL batch."""
    if input is None and (prompt is None or image is None):
        fail("give --prompt and --image, or --input FILE --output FILE for a batch", EXIT_INPUT)
    if input is not None and output is None:
        fail("--input needs --output", EXIT_INPUT)
    assert backend is not None
    if input is not None:
        assert output is not None
        settings = {"command": "critique", **settings_fingerprint(backend), "scores_only": scores_only}
        rows, problems = _prepare_batch("critique", input, output, settings, overwrite)
        rm = make_reward_model(backend, executor)
        raise typer.Exit(_batch("critique", input, output, rm, backend["concurrency"], json_out, strict,
                                rows, problems, scores_only=scores_only))
    assert prompt is not None and image is not None
    _check_prompt(prompt)
    rm = make_reward_model(backend, executor)
    try:
        res = rm.critique(prompt, str(image), [str(s) for s in source] if source else None, scores_only=scores_only)
    finally:
        rm.close()
    if json_out:
        emit_json(res.to_json())
    else:
        _show_critique(res)
    raise typer.Exit(exit_code_for(res))


@backend_command()
@executor_command
def compare(
    prompt: Annotated[str | None, typer.Option("--prompt", help="The generation request / edit instruction.")] = None,
    image_a: Annotated[Path | None, typer.Option("--image-a", help="First image (A).")] = None,
    image_b: Annotated[Path | None, typer.Option("--image-b", help="Second image (B).")] = None,
    source: Annotated[list[Path] | None, typer.Option("--source", help="Source image(s); makes it an edit task.")] = None,
    mode: Annotated[str, typer.Option("--mode", callback=check_choice("pairwise|pointwise", "pairwise, pointwise"),
                                      help="pairwise (one joint judgement) or pointwise.")] = "pairwise",
    swap: Annotated[bool, typer.Option("--swap", help="Also judge B-vs-A and combine both orders.")] = False,
    tie_tolerance: TieToleranceOpt = 0.0,
    input: Annotated[Path | None, typer.Option("--input", help="Batch: JSONL of {id, prompt, image_a, image_b, source?}.")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Batch: results JSONL (resumes if present).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Batch: exit non-zero if any item failed.")] = False,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    backend: dict[str, Any] | None = None,
    executor: Any = None,
) -> None:
    """Compare two images (or two edits of --source), or a JSONL batch of pairs."""
    if input is None and (prompt is None or image_a is None or image_b is None):
        fail("give --prompt, --image-a and --image-b, or --input FILE --output FILE", EXIT_INPUT)
    if input is not None and output is None:
        fail("--input needs --output", EXIT_INPUT)
    assert backend is not None
    kwargs = {"mode": mode, "swap": swap, "tie_tolerance": tie_tolerance}
    if input is not None:
        assert output is not None
        settings = {"command": "compare", **settings_fingerprint(backend), **kwargs}
        rows, problems = _prepare_batch("compare", input, output, settings, overwrite)
        rm = make_reward_model(backend, executor)
        raise typer.Exit(_batch("compare", input, output, rm, backend["concurrency"], json_out, strict,
                                rows, problems, **kwargs))
    assert prompt is not None and image_a is not None and image_b is not None
    _check_prompt(prompt)
    rm = make_reward_model(backend, executor)
    try:
        res = rm.compare(prompt, str(image_a), str(image_b), [str(s) for s in source] if source else None, **kwargs)
    finally:
        rm.close()
    if json_out:
        emit_json(res.to_json())
    else:
        _show_compare(res)
    raise typer.Exit(exit_code_for(res))


def parse(
    file: Annotated[str, typer.Argument(help="Raw model output file, or - for stdin.")] = "-",
    task: Annotated[str, typer.Option("--task", help="t2i or edit.")] = "t2i",
    pairwise: Annotated[bool, typer.Option("--pairwise", help="Parse a pairwise judgement.")] = False,
    aggregation: AggregationOpt = "default",
    allow_na: Annotated[str, typer.Option(
        "--allow-na", callback=check_allow_na,
        help="Dimensions the judge may answer N/A for (comma-separated keys, all, or none).")] = DEFAULT_ALLOW_NA,
    tie_tolerance: TieToleranceOpt = 0.0,
    json_out: JsonOpt = False,
) -> None:
    """Turn one raw model output into the critique (or comparison) object. Exit 3 if unparseable."""
    from ..critique import parse_comparison, parse_critique

    if task not in ("t2i", "edit"):
        fail(f"--task must be t2i or edit, not {task!r}", EXIT_INPUT)
    if file == "-":
        raw = sys.stdin.buffer.read().decode("utf-8", errors="replace").lstrip("\ufeff")
    else:
        path = Path(file)
        if not path.is_file():
            fail(f"file not found: {path}", EXIT_INPUT)
        raw = path.read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff")
    try:
        agg = parse_aggregation_spec(aggregation)
    except ValueError as exc:
        fail(str(exc), EXIT_INPUT)
    na = parse_allow_na(allow_na)
    res: Any
    if pairwise:
        res = parse_comparison(raw, task, aggregation=agg, tie_tolerance=tie_tolerance, allow_na=na)
    else:
        res = parse_critique(raw, task, aggregation=agg, allow_na=na)
    if json_out:
        emit_json(res.to_json())
    elif pairwise:
        _show_compare(res)
    else:
        _show_critique(res)
    raise typer.Exit(exit_code_for(res))
