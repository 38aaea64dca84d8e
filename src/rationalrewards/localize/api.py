"""Localise the defects a critique describes: phrases -> boxes (Grounding DINO) -> masks (SAM).

    from rationalrewards.localize import localize, write_localization

    regions = localize("bike.png", critique, judge=rm)          # list[Region]
    details = localize_details("bike.png", critique, judge=rm)  # + phrases, where they came from
    write_localization(details, "bike.png", "out/")             # regions.json, masks/, overlay.png
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw

from ..images import load_image
from .defects import (
    LOW_SCORE,
    Defect,
    assign_dimensions,
    build_followup_messages,
    clean_phrase,
    fallback_defects,
    parse_defect_list,
)
from .detect import DEFAULT_DETECTOR, DEFAULT_SEGMENTER, load_detector, load_segmenter

log = logging.getLogger(__name__)

REGIONS_FILE = "regions.json"
OVERLAY_FILE = "overlay.png"
MASKS_DIR = "masks"
ATTACHED_FILE = "critique.json"
SHORT = {"text_faithfulness": "TF", "image_faithfulness": "IF", "physical_quality": "PQ", "text_rendering": "TR"}
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128)]
FOLLOWUP_MAX_TOKENS = 768


@dataclass
class Region:
    """One localised defect.

    ``box`` is ``[x0, y0, x1, y1]`` in pixels of the input image; ``score`` the detector's
    confidence for ``phrase``; ``mask`` a PIL ``L`` image of the input's size (255 inside) or None
    without a segmenter; ``mask_file`` its path relative to the output folder once written.
    """

    phrase: str
    dimension: str | None
    box: tuple[float, float, float, float]
    score: float
    problem: str | None = None
    mask: Any = field(default=None, repr=False)
    mask_score: float | None = None
    mask_file: str | None = None

    def to_json(self) -> dict[str, Any]:
        area = None
        if self.mask is not None:
            area = int(self.mask.histogram()[255]) if self.mask.mode == "L" else None
        return {"phrase": self.phrase, "dimension": self.dimension, "problem": self.problem,
                "box": [float(v) for v in self.box], "score": self.score, "mask": self.mask_file,
                "mask_score": self.mask_score, "mask_area": area}


@dataclass
class Localization:
    """Regions plus how the phrases were obtained (``defect_source`` and ``judge_error`` say
    whether the judge's follow-up was used or why the fallback took over)."""

    regions: list[Region]
    defects: list[Defect]
    defect_source: Literal["judge", "fallback", "given", "none"]
    image_size: tuple[int, int]
    judge_error: str | None = None
    detector: str | None = None
    segmenter: str | None = None
    box_threshold: float | None = None
    text_threshold: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "image_size": list(self.image_size),
            "detector": self.detector,
            "segmenter": self.segmenter,
            "box_threshold": self.box_threshold,
            "text_threshold": self.text_threshold,
            "defect_source": self.defect_source,
            "judge_error": self.judge_error,
            "defects": [d.to_json() for d in self.defects],
            "regions": [r.to_json() for r in self.regions],
        }


def as_critique(critique: Any, *, task: str | None = None) -> tuple[dict[str, Any], str | None]:
    """A critique as a dict, plus the request it judged when known.

    Accepts a ``CritiqueResult``, its JSON dict, a curate output row (``{"prompt", "critique"}``)
    or the judge's raw text (parsed with ``task``, or guessed from its headers).
    """
    from ..critique.parser import parse_critique

    request = None
    if hasattr(critique, "to_json"):
        critique = critique.to_json()
    if isinstance(critique, str):
        guess = task or ("edit" if "Image Faithfulness" in critique else "t2i")
        critique = parse_critique(critique, guess).to_json()
    if not isinstance(critique, Mapping):
        raise TypeError(f"critique must be a CritiqueResult, a dict or raw text, not {type(critique).__name__}")
    if isinstance(critique.get("critique"), Mapping):  # a row of curate's kept/rejected files
        request = critique.get("prompt")
        critique = critique["critique"]
    crit = dict(critique)
    if not crit.get("justifications") and not crit.get("scores") and not crit.get("raw"):
        raise ValueError("the critique has no scores, justifications or raw text to take defects from")
    return crit, request if isinstance(request, str) else None


async def ask_judge_for_defects(judge: Any, image: Any, critique: Mapping[str, Any], *, request: str | None = None,
                                max_defects: int = 5) -> tuple[list[Defect], str | None]:
    """Ask the judge (a ``RewardModel`` or a ``Backend``) to list the critique's defects.

    Returns ``(defects, error)``; ``error`` says why nothing usable came back (backend failure,
    unparseable answer). Never raises for a model-side problem.
    """
    from ..backends import SamplingParams

    backend = getattr(judge, "backend", judge)
    max_pixels = getattr(judge, "max_pixels", None)
    base = getattr(judge, "sampling", None) or SamplingParams()
    params = base.replace(max_tokens=min(base.max_tokens, FOLLOWUP_MAX_TOKENS), stop=None)
    prepared = load_image(image, max_pixels=max_pixels) if max_pixels else load_image(image)
    messages = build_followup_messages(prepared, critique, request=request, max_defects=max_defects)
    try:
        gen = await backend.agenerate(messages, params)
    except Exception as exc:  # a backend is not supposed to raise; if one does, fall back all the same
        return [], f"judge call raised {type(exc).__name__}: {exc}"
    if not gen.ok:
        return [], f"judge call failed: {gen.error}"
    return parse_defect_list(gen.text, max_defects=max_defects)


async def alocalize_details(
    image: Any,
    critique: Any,
    *,
    judge: Any = None,
    detector: Any = DEFAULT_DETECTOR,
    segmenter: Any = DEFAULT_SEGMENTER,
    box_threshold: float = 0.35,
    text_threshold: float = 0.25,
    defects: list[str | Defect] | None = None,
    request: str | None = None,
    task: str | None = None,
    max_defects: int = 5,
    max_boxes_per_phrase: int = 3,
    low_score: float = LOW_SCORE,
    device: str | None = "auto",
) -> Localization:
    """The coroutine behind :func:`localize_details` (same arguments)."""
    crit, found_request = as_critique(critique, task=task)
    request = request or found_request
    img = load_image(image, max_pixels=None).image
    source: Literal["judge", "fallback", "given", "none"]
    judge_error = None
    if defects is not None:
        items = [d if isinstance(d, Defect) else Defect(clean_phrase(str(d))) for d in defects]
        items = [d for d in items if d.phrase]
        source = "given"
    else:
        items = []
        if judge is not None:
            items, judge_error = await ask_judge_for_defects(judge, image, crit, request=request,
                                                             max_defects=max_defects)
            if judge_error:
                log.warning("defect list from the judge unusable (%s); using the noun-phrase fallback", judge_error)
        source = "judge" if judge is not None and not judge_error else "fallback"
        if source == "fallback":
            items = fallback_defects(crit, low_score=low_score, max_defects=max_defects)
    assign_dimensions(items, crit)
    if not items:
        source = "none" if source == "fallback" else source
    det = load_detector(detector, device)
    seg = load_segmenter(segmenter, device)
    phrases = [d.phrase for d in items]
    detections = await asyncio.to_thread(det.detect, img, phrases, box_threshold=box_threshold,
                                         text_threshold=text_threshold, max_per_phrase=max_boxes_per_phrase)
    regions = [Region(items[d.phrase_index].phrase, items[d.phrase_index].dimension, d.box, d.score,
                      items[d.phrase_index].problem) for d in detections]
    if seg is not None and regions:
        masks = await asyncio.to_thread(seg.segment, img, [r.box for r in regions])
        for region, (mask, mask_score) in zip(regions, masks, strict=True):
            region.mask, region.mask_score = mask, mask_score
    return Localization(
        regions=regions, defects=items, defect_source=source, image_size=img.size, judge_error=judge_error,
        detector=_name(detector), segmenter=_name(segmenter), box_threshold=box_threshold,
        text_threshold=text_threshold,
    )


def _name(model: Any) -> str | None:
    if model is None:
        return None
    return str(getattr(model, "model_id", model))


def localize_details(image: Any, critique: Any, **kwargs: Any) -> Localization:
    """Like :func:`localize`, returning the :class:`Localization` (regions, the defect phrases,
    whether they came from the judge or the fallback, and the judge's error if any)."""

    async def go() -> Localization:
        try:
            return await alocalize_details(image, critique, **kwargs)
        finally:
            judge = kwargs.get("judge")
            backend = getattr(judge, "backend", judge)
            if backend is not None and hasattr(backend, "aclose"):
                await backend.aclose()  # the HTTP client of this event loop

    return asyncio.run(go())


def localize(
    image: Any,
    critique: Any,
    *,
    judge: Any = None,
    detector: Any = DEFAULT_DETECTOR,
    segmenter: Any = DEFAULT_SEGMENTER,
    box_threshold: float = 0.35,
    text_threshold: float = 0.25,
    **kwargs: Any,
) -> list[Region]:
    """Find the image regions of the defects a critique describes.

    Args:
        image: the judged image (path, PIL image, bytes, HF image dict).
        critique: a ``CritiqueResult``, its JSON dict, a curate row, or the judge's raw text.
        judge: a ``RewardModel`` (or ``Backend``) asked a follow-up for a structured defect list;
            None, a failed call or an unusable answer falls back to noun phrases from the
            justifications of dimensions scored below ``low_score`` (default 3).
        detector: a Grounding DINO id or folder (default ``IDEA-Research/grounding-dino-tiny``), or
            an object with ``detect(image, phrases, box_threshold=, text_threshold=, max_per_phrase=)``.
        segmenter: a SAM id or folder (default ``facebook/sam-vit-base``), an object with
            ``segment(image, boxes)``, or None for boxes only.
        box_threshold: minimum detector confidence of a box (strictly greater).
        text_threshold: minimum confidence of the box's best token within its phrase.
        **kwargs: ``defects`` (phrases to look for, skipping the judge), ``request``, ``task``,
            ``max_defects``, ``max_boxes_per_phrase``, ``low_score``, ``device``.

    Returns:
        The regions, best score first. Empty when nothing was found (not an error).

    Raises:
        ImageInputError: the image cannot be read.
        ModelLoadError: the detector or segmenter cannot be loaded.
        ValueError / TypeError: the critique is unusable.
    """
    return localize_details(image, critique, judge=judge, detector=detector, segmenter=segmenter,
                            box_threshold=box_threshold, text_threshold=text_threshold, **kwargs).regions


# -- outputs ----------------------------------------------------------------------------------------


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_overlay(image: Image.Image, regions: list[Region], *, mask_alpha: int = 100) -> Image.Image:
    """The image with each region's mask tinted, its box outlined and a label; same size as ``image``."""
    base = image.convert("RGBA")
    w, h = base.size
    # All masks go into one tint layer (where masks overlap the later region wins), composited
    # once: one full-image blend instead of one per region.
    tint = Image.new("RGBA", base.size, (0, 0, 0, 0))
    for i, region in enumerate(regions):
        if region.mask is not None:
            binary = region.mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
            tint.paste((*PALETTE[i % len(PALETTE)], mask_alpha), mask=binary)
    base = Image.alpha_composite(base, tint)
    draw = ImageDraw.Draw(base)
    width = max(2, round(min(w, h) / 160))
    font = _font(max(10, min(w, h) // 32))
    for i, region in enumerate(regions):
        colour = PALETTE[i % len(PALETTE)]
        x0, y0, x1, y1 = region.box
        draw.rectangle([x0, y0, x1, y1], outline=(*colour, 255), width=width)
        label = f"{region.phrase} [{SHORT.get(region.dimension or '', '?')}] {region.score:.2f}"
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), label, font=font)
        tw, th = tx1 - tx0 + 6, ty1 - ty0 + 4
        lx = min(max(0.0, x0), max(0.0, w - tw))
        ly = y0 - th if y0 - th >= 0 else min(y0, max(0.0, h - th))  # above the box, else inside it
        draw.rectangle([lx, ly, lx + tw, ly + th], fill=(*colour, 220))
        draw.text((lx + 3 - tx0, ly + 2 - ty0), label, fill=(255, 255, 255, 255), font=font)
    return base.convert("RGB")


def attach_regions(critique: Mapping[str, Any], localization: Localization) -> dict[str, Any]:
    """A copy of the critique with a ``regions`` field (and how the phrases were found)."""
    out = dict(critique)
    out["regions"] = [r.to_json() for r in localization.regions]
    out["region_defects"] = [d.to_json() for d in localization.defects]
    out["region_defect_source"] = localization.defect_source
    return out


def write_localization(localization: Localization, image: Any, out_dir: str | os.PathLike[str], *,
                       critique: Any = None, attach: bool = False) -> dict[str, Any]:
    """Write ``regions.json``, ``masks/NNN.png``, ``overlay.png`` (and ``critique.json`` with
    ``attach``) to ``out_dir``; returns the ``regions.json`` content."""
    from ..io import atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    img = load_image(image, max_pixels=None).image
    if img.size != tuple(localization.image_size):
        raise ValueError(f"image is {img.size[0]}x{img.size[1]} but the regions were found on "
                         f"{localization.image_size[0]}x{localization.image_size[1]}")
    masks = out / MASKS_DIR
    for old in masks.glob("*.png") if masks.is_dir() else []:
        old.unlink()  # a rerun with fewer regions must not leave stale masks behind
    for i, region in enumerate(localization.regions):
        if region.mask is None:
            region.mask_file = None
            continue
        masks.mkdir(exist_ok=True)
        slug = "".join(c if c.isalnum() else "-" for c in region.phrase)[:40].strip("-") or "region"
        region.mask_file = f"{MASKS_DIR}/{i:03d}-{slug}.png"
        region.mask.save(out / region.mask_file)
    overlay = draw_overlay(img, localization.regions)
    tmp = out / f".{OVERLAY_FILE}.tmp"
    overlay.save(tmp, format="PNG", compress_level=1)  # a preview: fast encoding beats a few KB
    os.replace(tmp, out / OVERLAY_FILE)
    payload = {"image": str(image) if isinstance(image, (str, os.PathLike)) else None, **localization.to_json()}
    payload["overlay"] = OVERLAY_FILE
    atomic_write_json(out / REGIONS_FILE, payload)
    if attach:
        if critique is None:
            raise ValueError("attach=True needs the critique")
        crit, _ = as_critique(critique)
        atomic_write_json(out / ATTACHED_FILE, attach_regions(crit, localization))
    return payload


def read_critique_file(path: str | os.PathLike[str], row_id: str | None = None) -> Any:
    """A critique from a file: a JSON object (a critique result or a curate row), one row of a
    JSONL file (the only one, or the one whose ``id`` is ``row_id``), or the judge's raw text."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"critique file not found: {p}")
    text = p.read_text(encoding="utf-8", errors="replace")
    if not text.lstrip().startswith("{"):
        if row_id is not None:
            raise ValueError(f"{p}: --id needs a JSON or JSONL critique file")
        return text
    try:
        rows = [json.loads(text)]
    except json.JSONDecodeError:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from None
    rows = [r for r in rows if isinstance(r, dict)]
    if row_id is not None:
        match = [r for r in rows if str(r.get("id")) == str(row_id)]
        if not match:
            raise ValueError(f"{p}: no row with id {row_id!r}")
        return match[0]
    if len(rows) != 1:
        raise ValueError(f"{p} holds {len(rows)} JSON objects; choose one with --id")
    return rows[0]


__all__ = [
    "Localization",
    "Region",
    "alocalize_details",
    "as_critique",
    "ask_judge_for_defects",
    "attach_regions",
    "draw_overlay",
    "localize",
    "localize_details",
    "read_critique_file",
    "write_localization",
]
