"""Critique every item of a dataset, then split it into kept and rejected sets.

Two phases over the same ``out_dir``:

1. **critique** -- every item without a usable cached critique is sent to the judge (bounded
   concurrency, items streamed from the input). Each result is appended and fsynced to
   ``critiques.jsonl`` the moment it arrives, tagged with a fingerprint of the item's prompt and
   images, so a killed run loses at most the lines in flight and a rerun skips finished items.
   Failed critiques are recorded too; they are retried on the next run.
2. **split** -- one more pass over the items applies the thresholds to the critiques and writes
   ``kept.jsonl``, ``rejected.jsonl``, ``summary.json``, ``plots/*.png`` and ``report.html``,
   each atomically. The split is cheap and depends only on cached critiques, so rerunning with
   other thresholds re-splits without calling the judge (no judge is needed at all then).

Every output row carries its full critique, the top-level ``reward`` / ``scores``, the checks
that were applied and the ``reason`` for the decision. Paths in the outputs are relative to
``out_dir`` (the folder of the JSONL files, as for every JSONL input of the CLI); images that
came in-line (Parquet / ``datasets`` bytes, data URLs) are written once to ``out_dir/images``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..critique.dimensions import DIMENSION_KEYS
from ..critique.schema import CritiqueResult
from ..io import ResumableJsonl, atomic_write_json, dumps_line, iter_keyed_rows
from .report import Stats, draw_histogram, png_bytes, write_report_html
from .sources import Columns, Item, ItemSource, ListItems, inline_bytes, open_items
from .thresholds import Decision, Thresholds, decide

log = logging.getLogger(__name__)

CRITIQUES_FILE = "critiques.jsonl"
KEPT_FILE = "kept.jsonl"
REJECTED_FILE = "rejected.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
IMAGES_DIR = "images"
# Output fields; an input column with one of these names is passed through as ``input_<name>``.
RESERVED = frozenset({"id", "prompt", "image", "source", "task", "kept", "reward", "scores", "reason", "checks",
                      "critique"})
_FORMAT_EXT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


class JudgeRequired(RuntimeError):
    """Some items have no cached critique and no reward model was given to produce one."""


@dataclass
class CurationResult:
    """What a run did; ``summary`` is the content of ``summary.json``."""

    out_dir: Path
    summary: dict[str, Any]

    @property
    def n(self) -> int:
        return int(self.summary["stats"]["n"])

    @property
    def n_kept(self) -> int:
        return int(self.summary["stats"]["n_kept"])

    @property
    def n_rejected(self) -> int:
        return int(self.summary["stats"]["n_rejected"])

    @property
    def n_failed(self) -> int:
        return int(self.summary["stats"]["n_failed"])

    @property
    def n_critiqued(self) -> int:
        """Judge calls made by this run (0 for a pure re-split)."""
        return int(self.summary["run"]["critiqued"])


def _open_source(items: Any, prompts: Any, columns: Columns | None, split: str | None, out: Path) -> ItemSource:
    if isinstance(items, ItemSource):
        return items
    if isinstance(items, (str, os.PathLike)):
        return open_items(items, prompts=prompts, columns=columns, split=split, exclude=out)
    if isinstance(items, Iterable):
        return ListItems(list(items), columns=columns)
    raise TypeError(f"items must be a path, an ItemSource or a list of dicts, not {type(items).__name__}")


def _failed_row(item: Item, kind: str, error: str) -> dict[str, Any]:
    task = "edit" if item.source else "t2i"
    res = CritiqueResult(id=item.id, task=task, ok=False, error=error, error_kind=kind)  # type: ignore[arg-type]
    return {**res.to_json(), "input_key": item.fingerprint}


async def acurate(
    items: Any,
    out_dir: str | os.PathLike[str],
    *,
    reward_model: Any = None,
    thresholds: Thresholds | None = None,
    concurrency: int = 16,
    scores_only: bool = False,
    prompts: str | os.PathLike[str] | None = None,
    columns: Columns | None = None,
    split: str | None = None,
    report_examples: int = 20,
    on_progress: Callable[[int], Any] | None = None,
    on_total: Callable[[int], Any] | None = None,
) -> CurationResult:
    """Critique and split a dataset (the coroutine behind :func:`curate`; same arguments)."""
    out = Path(out_dir)
    source = _open_source(items, prompts, columns, split, out)
    thresholds = thresholds or Thresholds()
    ids = source.ids()  # reads and validates the input before anything is created
    out.mkdir(parents=True, exist_ok=True)
    if on_total is not None:
        on_total(len(ids))
    # The store drops failed critiques when it opens (so that they are retried); a re-split without
    # a judge cannot retry them and keeps them as they were, so read them first.
    failed = _failed_records(out / CRITIQUES_FILE) if reward_model is None else {}
    store = ResumableJsonl(out / CRITIQUES_FILE)
    try:
        if reward_model is None:
            missing = sum(1 for it in source if not _cached(store, it) and it.problem is None
                          and failed.get(it.id, {}).get("input_key") != it.fingerprint)
            if missing:
                raise JudgeRequired(
                    f"{missing} of {len(ids)} items have no cached critique in {out / CRITIQUES_FILE}; "
                    "give a judge (--base-url/--model) to critique them"
                )
        fresh, counts = await _critique_phase(source, store, reward_model, concurrency, scores_only, on_progress,
                                              failed)
    finally:
        store.close()
    rows = {str(r["id"]): r for r in store.finalize(ids)}
    rows.update(fresh)
    judge = reward_model.describe() if reward_model is not None else None
    summary = _split_phase(source, rows, out, thresholds, report_examples, judge, counts)
    return CurationResult(out, summary)


def curate(items: Any, out_dir: str | os.PathLike[str], **kwargs: Any) -> CurationResult:
    """Critique every item of a dataset and split it into kept and rejected sets.

    Args:
        items: a path (``.jsonl``, ``.parquet``, a ``datasets`` folder, a Parquet folder, or an
            image folder; see :func:`~rationalrewards.curate.sources.open_items`), an
            :class:`ItemSource`, or a list of ``{"id", "prompt", "image", "source"?}`` dicts.
        out_dir: where ``critiques.jsonl``, ``kept.jsonl``, ``rejected.jsonl``, ``summary.json``,
            ``plots/`` and ``report.html`` go. Reusing it resumes.
        reward_model: a :class:`~rationalrewards.RewardModel`. May be None when every item already
            has a cached critique (re-splitting with new thresholds).
        thresholds: :class:`Thresholds` (min reward, per-dimension minimums; inclusive).
        concurrency: critiques in flight at once.
        scores_only: stop each critique before the refinement tail (fewer tokens).
        prompts / columns / split: see :func:`open_items`.
        report_examples: how many lowest-reward examples the HTML report shows.
        on_progress: called with 1 as each item is settled (cached or judged).
        on_total: called once with the number of items.

    Returns:
        A :class:`CurationResult` whose ``summary`` is also written to ``summary.json``.

    Raises:
        InputFileError: the input cannot be read or lacks a needed column.
        JudgeRequired: items need critiques and ``reward_model`` is None.
    """

    async def go() -> CurationResult:
        try:
            return await acurate(items, out_dir, **kwargs)
        finally:
            rm = kwargs.get("reward_model")
            if rm is not None:
                # The HTTP backend keeps one client per event loop; close this loop's client.
                await rm.backend.aclose()

    return asyncio.run(go())


def _failed_records(path: Path) -> dict[str, dict[str, Any]]:
    """The last failed critique of each id in a critique store (torn lines skipped)."""
    rows: dict[str, dict[str, Any]] = {}
    for row in iter_keyed_rows(path):
        if row is None:
            continue
        if row.get("ok"):
            rows.pop(str(row["id"]), None)
        else:
            rows[str(row["id"])] = row
    return rows


def _cached(store: ResumableJsonl, item: Item) -> bool:
    row = store.rows.get(item.id)
    return row is not None and bool(row.get("ok")) and row.get("input_key") == item.fingerprint


async def _critique_phase(source: ItemSource, store: ResumableJsonl, rm: Any, concurrency: int, scores_only: bool,
                          on_progress: Callable[[int], Any] | None, failed: dict[str, dict[str, Any]]
                          ) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    fresh: dict[str, dict[str, Any]] = {}
    counts = {"critiqued": 0, "cached": 0, "stale": 0, "unjudgeable": 0, "failed_not_retried": 0}

    def settle(row: dict[str, Any]) -> None:
        store.append(row)
        fresh[str(row["id"])] = row
        if on_progress is not None:
            on_progress(1)

    async def judge(item: Item) -> None:
        try:
            res = await rm.acritique(item.prompt, item.image, item.source, id=item.id, scores_only=scores_only)
            row = {**res.to_json(), "input_key": item.fingerprint}
        except Exception as exc:  # a bug or backend crash must not sink the other items
            log.exception("critique of %s raised", item.id)
            row = _failed_row(item, "backend", f"critique raised {type(exc).__name__}: {exc}")
        settle(row)

    sem = asyncio.Semaphore(max(1, concurrency))
    tasks: set[asyncio.Task[None]] = set()

    async def bounded(item: Item) -> None:
        try:
            await judge(item)
        finally:
            sem.release()

    for item in source:
        if _cached(store, item):
            counts["cached"] += 1
            if on_progress is not None:
                on_progress(1)
            continue
        if item.problem is not None:
            counts["unjudgeable"] += 1
            settle(_failed_row(item, "input", item.problem))
            continue
        if rm is None:
            # Re-split without a judge: a failed critique stays failed (and stays on record so a
            # later run with a judge retries it). The pre-check guarantees a record exists.
            counts["failed_not_retried"] += 1
            settle(failed[item.id])
            continue
        if item.id in store.rows:
            counts["stale"] += 1
        counts["critiqued"] += 1
        await sem.acquire()
        task = asyncio.create_task(bounded(item))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*list(tasks))
    return fresh, counts


# -- split --------------------------------------------------------------------------------------


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:80] or "item"


def _relative(path: str, out: Path) -> str:
    try:
        return Path(os.path.relpath(path, out)).as_posix()
    except ValueError:  # another drive on Windows
        return path


class _Exporter:
    """Writes in-line images to ``out/images`` once (named by id and content hash) and maps
    every image value to a path relative to ``out``."""

    def __init__(self, out: Path):
        self.out = out
        self.dir = out / IMAGES_DIR

    def __call__(self, value: Any, stem: str) -> str | None:
        if value is None:
            return None
        data = inline_bytes(value)
        if data is None:
            return _relative(str(value), self.out)
        import hashlib

        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as im:
                ext = _FORMAT_EXT.get(im.format or "", ".img")
        except (UnidentifiedImageError, OSError):
            return None  # not an image: the critique failed with that reason already
        path = self.dir / f"{_safe_name(stem)}-{hashlib.sha256(data).hexdigest()[:12]}{ext}"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=self.dir)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        return f"{IMAGES_DIR}/{path.name}"


def _normalise_critique(row: dict[str, Any]) -> dict[str, Any]:
    """The critique as stored in outputs: every dimension key present, so rows of t2i and edit
    items (and failed ones) share one schema and load as one table with ``datasets``."""
    crit = {k: v for k, v in row.items() if k != "input_key"}
    scores = crit.get("scores") or {}
    crit["scores"] = {k: scores.get(k) for k in DIMENSION_KEYS}
    just = crit.get("justifications") or {}
    crit["justifications"] = {k: just.get(k) for k in DIMENSION_KEYS}
    return crit


def output_row(item: Item, critique_row: dict[str, Any], decision: Decision, image: str | None,
               sources: list[str | None] | None) -> dict[str, Any]:
    """One line of kept.jsonl / rejected.jsonl."""
    crit = _normalise_critique(critique_row)
    row: dict[str, Any] = {
        "id": item.id,
        "prompt": item.prompt,
        "image": image,
        "source": sources,
        "task": crit.get("task"),
        "kept": decision.kept,
        "reward": crit.get("reward"),
        "scores": crit["scores"],
        "reason": decision.reason,
        "checks": [c.to_json() for c in decision.checks],
        "critique": crit,
    }
    for key, value in item.extra.items():
        row[f"input_{key}" if key in RESERVED else key] = value
    return row


class _JsonlWriter:
    """Writes a JSONL file under a temporary name and renames it into place on success."""

    def __init__(self, path: Path):
        self.path = path
        fd, self.tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        self.fh = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        # dumps_line: a prompt or id with a lone surrogate is escaped instead of failing the file.
        self.fh.write(dumps_line(row) + "\n")

    def commit(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.fh.close()
        Path(self.tmp).unlink(missing_ok=True)


def _displayable(value: Any) -> Any:
    """``value`` with every lone surrogate (valid in JSON, not in UTF-8) shown as its escape
    (``\\ud800``), for the HTML report, which is written as UTF-8 text."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {k: _displayable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_displayable(v) for v in value]
    return value


def _split_phase(source: ItemSource, critiques: dict[str, dict[str, Any]], out: Path, thresholds: Thresholds,
                 report_examples: int, judge: dict[str, Any] | None, counts: dict[str, int]) -> dict[str, Any]:
    export = _Exporter(out)
    stats = Stats(worst_k=report_examples)
    kept_w, rej_w = _JsonlWriter(out / KEPT_FILE), _JsonlWriter(out / REJECTED_FILE)
    try:
        for item in source:
            crit = critiques.get(item.id)
            if crit is None or crit.get("input_key") not in (None, item.fingerprint):
                # Only reachable if critiques.jsonl was edited under a running job; never keep it.
                crit = _failed_row(item, "input", "no critique recorded for this item")
            decision = decide(crit, thresholds)
            image = export(item.image, item.id)
            sources = [export(s, f"{item.id}_source{i}") for i, s in enumerate(item.source)] if item.source else None
            row = output_row(item, crit, decision, image, sources)
            (kept_w if decision.kept else rej_w).write(row)
            stats.add(_displayable(row), decision.kept)
    except BaseException:
        kept_w.abort()
        rej_w.abort()
        raise
    kept_w.commit()
    rej_w.commit()

    plots = _write_plots(out, stats, thresholds)
    summary = {
        "input": source.describe(),
        "judge": judge,
        "thresholds": thresholds.to_json(),
        "run": counts,
        "stats": stats.to_json(),
        "files": {
            "kept": KEPT_FILE,
            "rejected": REJECTED_FILE,
            "critiques": CRITIQUES_FILE,
            "report": REPORT_FILE,
            "plots": {name: f"{PLOTS_DIR}/{name}.png" for name in plots},
        },
    }
    atomic_write_json(out / SUMMARY_FILE, summary)

    def resolve_image(row: dict[str, Any]) -> str | None:
        img = row.get("image")
        return None if img is None else str(out / img) if not Path(img).is_absolute() else img

    write_report_html(out / REPORT_FILE, summary, plots, stats.worst(), stats.failed_examples, resolve_image)
    return summary


def _write_plots(out: Path, stats: Stats, thresholds: Thresholds) -> dict[str, bytes]:
    plots: dict[str, bytes] = {}
    if stats.reward.values:
        plots["reward"] = png_bytes(draw_histogram(stats.reward, "reward", thresholds.min_reward))
    for key, dist in stats.dims.items():
        if dist.values:
            plots[key] = png_bytes(draw_histogram(dist, key, thresholds.min_scores.get(key)))
    folder = out / PLOTS_DIR
    folder.mkdir(exist_ok=True)
    for name, data in plots.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, folder / f"{name}.png")
    return plots


def load_curated(out_dir: str | os.PathLike[str], which: str = "kept", *, decode_images: bool = False,
                 cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """Load ``kept`` or ``rejected`` as a ``datasets.Dataset`` with absolute image paths.

    With ``decode_images`` the ``image`` column becomes a ``datasets.Image`` feature (PIL on access;
    None where the file does not exist).
    ``cache_dir`` is passed to ``datasets.load_dataset`` (where it keeps its Arrow copy).
    """
    import datasets

    if which not in ("kept", "rejected"):
        raise ValueError("which must be 'kept' or 'rejected'")
    out = Path(out_dir).resolve()
    path = out / (KEPT_FILE if which == "kept" else REJECTED_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run curate first")
    if path.stat().st_size == 0:
        return datasets.Dataset.from_list([])
    ds = datasets.load_dataset("json", data_files=str(path), split="train",
                               cache_dir=str(cache_dir) if cache_dir else None)

    def absolute(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        paths = [None if p is None else out / p for p in batch["image"]]
        # A rejected row may point at an image that never existed (that is why it was rejected);
        # decoding would raise on access, so such cells become None when images are decoded.
        batch["image"] = [None if p is None or (decode_images and not p.is_file()) else str(p) for p in paths]
        return batch

    ds = ds.map(absolute, batched=True)
    if decode_images:
        ds = ds.cast_column("image", datasets.Image())
    return ds
