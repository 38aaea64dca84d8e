"""``critique``, ``compare`` and ``parse``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import (
    EXIT_INPUT,
    EXIT_OK,
    AggregationOpt,
    JsonOpt,
    backend_command,
    emit_json,
    err_console,
    exit_code_for,
    fail,
    make_reward_model,
    out_console,
    progress_bar,
    resolve_relative,
)


def _show_critique(res: Any) -> None:
    status = "[green]ok[/]" if res.ok else f"[red]failed ({res.error_kind})[/]"
    out_console.print(f"[bold]{res.task} critique[/] {status}" + (f"  id={res.id}" if res.id else ""))
    if not res.ok:
        out_console.print(f"[red]reason:[/] {res.error}", highlight=False)
    table = Table("dimension", "score", "justification", show_lines=True)
    for key, just in res.justifications.items():
        score = res.scores.get(key)
        shown = f"{score:.2f}" if score is not None else ("N/A" if just else "missing")
        table.add_row(key, shown, (just or "")[:400])
    if res.justifications:
        out_console.print(table)
    if res.reward is not None:
        out_console.print(f"[bold]reward[/] {res.reward:.4f}")
    if res.summary:
        out_console.print(f"[bold]summary[/] {res.summary}", highlight=False)
    if res.refined_request:
        out_console.print(f"[bold]refined request[/] {res.refined_request}", highlight=False)
    if not res.ok and res.raw:
        out_console.print("[dim]raw model output (first 600 chars):[/]")
        out_console.print(res.raw[:600], markup=False, highlight=False)


def _show_compare(res: Any) -> None:
    status = "[green]ok[/]" if res.ok else f"[red]failed ({res.error_kind})[/]"
    out_console.print(f"[bold]{res.task} comparison ({res.mode})[/] {status}")
    if not res.ok:
        out_console.print(f"[red]reason:[/] {res.error}", highlight=False)
    table = Table("dimension", "A", "B")
    for key in res.justifications:
        a, b = res.scores_a.get(key), res.scores_b.get(key)
        table.add_row(key, "N/A" if a is None else f"{a:.2f}", "N/A" if b is None else f"{b:.2f}")
    out_console.print(table)
    if res.winner:
        out_console.print(f"[bold]winner[/] {res.winner}  (reward A {res.reward_a:.4f}, B {res.reward_b:.4f})")
    if not res.ok and res.raw:
        out_console.print(res.raw[:600], markup=False, highlight=False)


def _batch(
    kind: str,
    input_path: Path,
    output: Path,
    rm: Any,
    concurrency: int,
    json_out: bool,
    strict: bool,
    **kwargs: Any,
) -> int:
    import asyncio

    from ..critique.model import CompareItem, CritiqueItem
    from ..io import InputFileError, ResumableJsonl, assign_ids, read_jsonl

    required = ("prompt", "image") if kind == "critique" else ("prompt", "image_a", "image_b")
    try:
        rows = assign_ids(read_jsonl(input_path, required=required), input_path)
    except InputFileError as exc:
        fail(str(exc), EXIT_INPUT)
    base = input_path.resolve().parent
    store = ResumableJsonl(output)
    todo = [r for r in rows if r["id"] not in store.done]
    err_console.print(f"{len(rows)} items, {len(rows) - len(todo)} already done, {len(todo)} to run -> {output}")
    items: list[Any]
    if kind == "critique":
        items = [CritiqueItem(prompt=r["prompt"], image=resolve_relative(r["image"], base),
                              source=resolve_relative(r.get("source"), base), id=r["id"]) for r in todo]
    else:
        items = [CompareItem(prompt=r["prompt"], image_a=resolve_relative(r["image_a"], base),
                             image_b=resolve_relative(r["image_b"], base),
                             source=resolve_relative(r.get("source"), base), id=r["id"]) for r in todo]
    counts = {"ok": 0, "input": 0, "parse": 0, "backend": 0}

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
                    await rm.acritique_batch(items, concurrency=concurrency, on_result=on_result)
                else:
                    await rm.acompare_batch(items, concurrency=concurrency, on_result=on_result, **kwargs)
            finally:
                await rm.aclose()

        asyncio.run(go())
    store.finalize([r["id"] for r in rows])
    err_console.print(
        f"done: {counts['ok']} ok, {counts['parse']} parse failures, {counts['backend']} backend failures, "
        f"{counts['input']} bad inputs (failed items are retried when rerun)"
    )
    if strict and (counts["parse"] or counts["backend"] or counts["input"]):
        worst = max(("backend", 4), ("parse", 3), ("input", 2), key=lambda kv: (counts[kv[0]] > 0, kv[1]))
        return worst[1]
    return EXIT_OK


@backend_command()
def critique(
    prompt: Annotated[str | None, typer.Option("--prompt", help="The generation request / edit instruction.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="The generated or edited image.")] = None,
    source: Annotated[list[Path] | None, typer.Option("--source", help="Source image(s); makes it an edit task.")] = None,
    input: Annotated[Path | None, typer.Option("--input", help="Batch: JSONL of {id, prompt, image, source?}.")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Batch: results JSONL (resumes if present).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Batch: exit non-zero if any item failed.")] = False,
    scores_only: Annotated[bool, typer.Option("--scores-only", help="Stop before the refinement tail.")] = False,
    json_out: JsonOpt = False,
    backend: dict[str, Any] | None = None,
) -> None:
    """Critique one image (t2i) or one edit (with --source), or a JSONL batch."""
    if input is None and (prompt is None or image is None):
        fail("give --prompt and --image, or --input FILE --output FILE for a batch", EXIT_INPUT)
    if input is not None and output is None:
        fail("--input needs --output", EXIT_INPUT)
    assert backend is not None
    rm = make_reward_model(backend)
    if input is not None:
        assert output is not None
        raise typer.Exit(_batch("critique", input, output, rm, backend["concurrency"], json_out, strict))
    assert prompt is not None and image is not None
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
def compare(
    prompt: Annotated[str | None, typer.Option("--prompt")] = None,
    image_a: Annotated[Path | None, typer.Option("--image-a")] = None,
    image_b: Annotated[Path | None, typer.Option("--image-b")] = None,
    source: Annotated[list[Path] | None, typer.Option("--source", help="Source image(s); makes it an edit task.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="pairwise (one joint judgement) or pointwise.")] = "pairwise",
    swap: Annotated[bool, typer.Option("--swap", help="Also judge B-vs-A and combine both orders.")] = False,
    tie_tolerance: Annotated[float, typer.Option("--tie-tolerance", min=0.0)] = 0.0,
    input: Annotated[Path | None, typer.Option("--input", help="Batch: JSONL of {id, prompt, image_a, image_b, source?}.")] = None,
    output: Annotated[Path | None, typer.Option("--output")] = None,
    strict: Annotated[bool, typer.Option("--strict")] = False,
    json_out: JsonOpt = False,
    backend: dict[str, Any] | None = None,
) -> None:
    """Compare two images (or two edits of --source), or a JSONL batch of pairs."""
    if mode not in ("pairwise", "pointwise"):
        fail(f"--mode must be pairwise or pointwise, not {mode!r}", EXIT_INPUT)
    if input is None and (prompt is None or image_a is None or image_b is None):
        fail("give --prompt, --image-a and --image-b, or --input FILE --output FILE", EXIT_INPUT)
    if input is not None and output is None:
        fail("--input needs --output", EXIT_INPUT)
    assert backend is not None
    rm = make_reward_model(backend)
    kwargs = {"mode": mode, "swap": swap, "tie_tolerance": tie_tolerance}
    if input is not None:
        assert output is not None
        raise typer.Exit(_batch("compare", input, output, rm, backend["concurrency"], json_out, strict, **kwargs))
    assert prompt is not None and image_a is not None and image_b is not None
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
    tie_tolerance: Annotated[float, typer.Option("--tie-tolerance", min=0.0)] = 0.0,
    json_out: JsonOpt = False,
) -> None:
    """Turn one raw model output into the critique (or comparison) object. Exit 3 if unparseable."""
    from ..critique import get_aggregation, parse_comparison, parse_critique

    if task not in ("t2i", "edit"):
        fail(f"--task must be t2i or edit, not {task!r}", EXIT_INPUT)
    if file == "-":
        raw = sys.stdin.read()
    else:
        path = Path(file)
        if not path.is_file():
            fail(f"file not found: {path}", EXIT_INPUT)
        raw = path.read_text(encoding="utf-8", errors="replace")
    try:
        agg = get_aggregation(aggregation)
    except ValueError as exc:
        fail(str(exc), EXIT_INPUT)
    res: Any
    if pairwise:
        res = parse_comparison(raw, task, aggregation=agg, tie_tolerance=tie_tolerance)
    else:
        res = parse_critique(raw, task, aggregation=agg)
    if json_out:
        emit_json(res.to_json())
    elif pairwise:
        _show_compare(res)
    else:
        _show_critique(res)
    raise typer.Exit(exit_code_for(res))
