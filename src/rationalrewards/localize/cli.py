"""``rationalrewards localize``: a thin layer over :mod:`rationalrewards.localize.api`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..cli.common import (
    DEVICE_PATTERN,
    EXIT_BACKEND,
    EXIT_INPUT,
    EXIT_OK,
    JsonOpt,
    backend_command,
    check_choice,
    check_number,
    emit_json,
    err_console,
    fail,
    make_reward_model,
    out_console,
    resolve_relative,
)
from .detect import DEFAULT_DETECTOR, DEFAULT_SEGMENTER  # constants only: no torch at import time


@backend_command(required=False)
def localize_command(
    critique: Annotated[Path, typer.Option("--critique", help="Critique JSON (a critique result or a curate row), "
                                           "a JSONL of them (with --id), or the judge's raw text.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: regions.json, masks/, overlay.png.")],
    image: Annotated[Path | None, typer.Option("--image", help="The judged image (default: the row's `image`, "
                                               "relative to the critique file).")] = None,
    row_id: Annotated[str | None, typer.Option("--id", help="The row to use from a JSONL critique file, e.g. "
                                               "curate's rejected.jsonl.")] = None,
    detector: Annotated[str, typer.Option("--detector", help="Grounding DINO id or folder.")] = DEFAULT_DETECTOR,
    segmenter: Annotated[str, typer.Option("--segmenter", help="SAM id or folder; 'none' for boxes only.")
                         ] = DEFAULT_SEGMENTER,
    box_threshold: Annotated[float, typer.Option("--box-threshold", callback=check_number(0, high=1),
                                                    help="Minimum box confidence (0..1).")] = 0.35,
    text_threshold: Annotated[float, typer.Option("--text-threshold", callback=check_number(0, high=1),
                                                  help="Minimum confidence of the phrase's best token (0..1).")] = 0.25,
    phrase: Annotated[list[str] | None, typer.Option("--phrase", help="Look for these phrases (repeatable) "
                                                     "instead of asking the judge.")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="The request the image was judged against "
                                               "(shown to the judge).")] = None,
    task: Annotated[str | None, typer.Option("--task", help="t2i or edit, to parse a raw-text critique.")] = None,
    max_defects: Annotated[int, typer.Option("--max-defects", callback=check_number(1), help="Most defects (lowest-scored first) to localize (>= 1).")] = 5,
    max_boxes: Annotated[int, typer.Option("--max-boxes-per-phrase", callback=check_number(1), help="Most detector boxes kept per defect phrase (>= 1).")] = 3,
    low_score: Annotated[float, typer.Option("--low-score", callback=check_number(),
                                             help="Fallback: dimensions scored below this are searched.")] = 3.0,
    attach: Annotated[bool, typer.Option("--attach", help="Also write OUT/critique.json with a `regions` field.")
                      ] = False,
    detector_device: Annotated[str, typer.Option("--detector-device", help="auto, cpu, cuda, cuda:N, mps.",
                                                     callback=check_choice(DEVICE_PATTERN, "auto, cpu, cuda, cuda:N, mps"))] = "auto",
    backend: dict[str, Any] | None = None,
    json_out: JsonOpt = False,
) -> None:
    """Find the image regions of the defects a critique describes (Grounding DINO + SAM).

    With a judge backend (--base-url/--model) the judge is asked for a structured defect list; without one, or when its answer is unusable, noun phrases from the justifications of low-scoring dimensions are used.
    """
    from ..images import ImageInputError
    from .api import localize_details, read_critique_file, write_localization
    from .detect import ModelLoadError

    if task is not None and task not in ("t2i", "edit"):
        fail(f"--task must be t2i or edit, not {task!r}", EXIT_INPUT)
    try:
        crit = read_critique_file(critique, row_id)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc), EXIT_INPUT)
    if image is None:
        # A curate row names its image relative to its own file, like every JSONL input.
        row_image = crit.get("image") if isinstance(crit, dict) else None
        if not isinstance(row_image, str) or not row_image:
            fail("give --image (the critique does not name its image)", EXIT_INPUT)
        image = Path(resolve_relative(row_image, critique.resolve().parent))
    judge: Any = None
    if backend is not None:
        judge = make_reward_model({**backend, "concurrency": 1})
    seg: str | None = None if segmenter.strip().lower() in ("none", "") else segmenter
    try:
        loc = localize_details(
            str(image), crit, judge=judge, detector=detector, segmenter=seg, box_threshold=box_threshold,
            text_threshold=text_threshold, defects=phrase or None, request=prompt, task=task,
            max_defects=max_defects, max_boxes_per_phrase=max_boxes, low_score=low_score, device=detector_device,
        )
        payload = write_localization(loc, str(image), out, critique=crit, attach=attach)
    except (ImageInputError, ValueError, TypeError) as exc:
        fail(str(exc), EXIT_INPUT)
    except ModelLoadError as exc:
        fail(str(exc), EXIT_BACKEND)
    if loc.judge_error:
        err_console.print(f"[yellow]judge's defect list unusable ({escape(str(loc.judge_error))}); used noun phrases "
                          "from the "
                          "critique instead[/]", highlight=False)
    if json_out:
        emit_json(payload)
    else:
        phrases = ", ".join(d.phrase for d in loc.defects) or "(none)"
        # Phrases come from the model and paths from the user: printed literally, never as markup.
        out_console.print(f"defects ({loc.defect_source}): {phrases}", markup=False, highlight=False)
        for r in loc.regions:
            box = ", ".join(f"{v:.0f}" for v in r.box)
            out_console.print(f"  {r.phrase} [{r.dimension}] score {r.score:.2f} box [{box}]"
                              + (f" mask {r.mask_file}" if r.mask_file else ""), markup=False, highlight=False)
        out_console.print(f"{len(loc.regions)} regions -> {out / 'regions.json'}, {out / 'overlay.png'}",
                          markup=False, highlight=False)
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add ``localize`` to the ``rationalrewards`` command line."""
    app.command("localize")(localize_command)
