"""Batch refinement over a prompt file (t2i) or an edit set, resumable, with a summary.

Input:
  * ``.txt``: one request per line (t2i); ids are ``line-N``.
  * ``.jsonl``: ``{"id"?, "prompt" (or "instruction"), "source"? (path or list of paths; makes it an
    edit), "seed"?}``; paths are relative to the JSONL file's folder.

Output folder::

    DIR/items/<id>/trajectory.json, report.html, round_XX/cand_K.png, baseline/...
    DIR/results.jsonl    one line per item (its numbers; failed items carry error + error_kind)
    DIR/summary.json     round 0 vs final (and best-of-K baseline) means, improvements, usage
    DIR/report.html      every item's round-0 and final best side by side

Rerunning with the same arguments skips finished items, continues an interrupted item from its
last completed round and retries failed ones; nothing is generated twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import InputFileError, ResumableJsonl, assign_ids, atomic_write_json, read_jsonl
from .generators import Generator
from .loop import RefineConfig, RefineInputError, RefineLoop
from .refiner import Refiner
from .report import write_batch_report
from .trajectory import item_summary

if TYPE_CHECKING:
    from ..critique.model import RewardModel

logger = logging.getLogger(__name__)

ItemCallback = Callable[[dict[str, Any]], Any]


def read_items(path: str | Path) -> list[dict[str, Any]]:
    """Read a prompt file (``.txt``) or an item set (``.jsonl``) into ``{"id", "prompt", "source", "seed"}``.

    Raises :class:`~rationalrewards.io.InputFileError` naming the file, line and field.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"input file not found: {path}")
    base = path.resolve().parent
    if path.suffix.lower() == ".txt":
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                rows.append({"id": f"line-{lineno}", "prompt": line.strip(), "source": None, "seed": None,
                             "_line": lineno})
        if not rows:
            raise InputFileError(f"{path}: no prompts (one per line expected)")
        return rows
    raw = read_jsonl(path)
    for row in raw:
        if row.get("prompt") in (None, "") and row.get("instruction") not in (None, ""):
            row["prompt"] = row["instruction"]
        if row.get("prompt") in (None, ""):
            raise InputFileError(f"{path}:{row['_line']}: missing field prompt (or instruction)")
        if not isinstance(row["prompt"], str):
            raise InputFileError(f"{path}:{row['_line']}: field prompt must be text")
        src = row.get("source", row.get("source_image"))
        row["source"] = _resolve(src, base)
        seed = row.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InputFileError(f"{path}:{row['_line']}: field seed must be an integer")
    rows = assign_ids(raw, path)
    if not rows:
        raise InputFileError(f"{path}: no items")
    return rows


def _resolve(value: Any, base: Path) -> Any:
    if value in (None, "", []):
        return None
    if isinstance(value, list):
        return [_resolve(v, base) for v in value]
    if isinstance(value, str) and not value.startswith("data:"):
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base / p)
    return value


def item_dirname(item_id: str) -> str:
    """A safe, unique folder name for an id (a short hash is added when the id had to be changed)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id).strip("._")[:80]
    if safe != item_id or not safe:
        safe = f"{safe or 'item'}-{hashlib.sha256(item_id.encode()).hexdigest()[:8]}"
    return safe


def _failed_row(row: dict[str, Any], sub: str, error: str, kind: str) -> dict[str, Any]:
    return {"id": row["id"], "ok": False, "error": error, "error_kind": kind, "task": "edit" if row.get("source") else "t2i",
            "prompt": row["prompt"], "out": sub, "stop_reason": None, "rounds_run": 0, "generator_calls": 0,
            "critic_calls": 0, "refiner_calls": 0, "round0": None, "final": None, "improved": None, "baseline": None}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _mean_scores(entries: list[dict[str, Any]]) -> dict[str, float | None]:
    keys: list[str] = []
    for e in entries:
        keys += [k for k in (e.get("scores") or {}) if k not in keys]
    out = {}
    for k in keys:
        vals = [float(e["scores"][k]) for e in entries if (e.get("scores") or {}).get(k) is not None]
        if vals:
            out[k] = sum(vals) / len(vals)
    return out


def summarize(rows: list[dict[str, Any]], *, config: dict[str, Any] | None = None, threshold: float | None = None) -> dict[str, Any]:
    """The batch summary from ``results.jsonl`` rows (means over the items that finished ok)."""
    ok = [r for r in rows if r.get("ok") and r.get("final") and r.get("round0")]
    failed = [r for r in rows if not r.get("ok")]
    with_base = [r for r in ok if r.get("baseline")]
    r0 = [r["round0"] for r in ok]
    fin = [r["final"] for r in ok]
    wins = ties = losses = 0
    for r in with_base:
        a, b = r["final"]["reward"], r["baseline"]["reward"]
        if a is None or b is None:
            continue
        if round(a - b, 6) > 0:
            wins += 1
        elif round(a - b, 6) < 0:
            losses += 1
        else:
            ties += 1
    improved = [r for r in ok if r.get("improved")]
    summary: dict[str, Any] = {
        "n_items": len(rows),
        "n_ok": len(ok),
        "n_failed": len(failed),
        "failed_by_kind": dict(Counter(r.get("error_kind") or "unknown" for r in failed)),
        "mean_reward": {
            "round0": _mean([e["reward"] for e in r0 if e.get("reward") is not None]),
            "final": _mean([e["reward"] for e in fin if e.get("reward") is not None]),
            "baseline": _mean([r["baseline"]["reward"] for r in with_base if r["baseline"].get("reward") is not None]),
        },
        "mean_scores": {
            "round0": _mean_scores(r0),
            "final": _mean_scores(fin),
            "baseline": _mean_scores([r["baseline"] for r in with_base]),
        },
        "share_improved": (len(improved) / len(ok)) if ok else None,
        "share_threshold_reached": (
            sum(1 for e in fin if e.get("reward") is not None and e["reward"] >= threshold) / len(ok)
            if ok and threshold is not None else None
        ),
        "rounds_run": {"total": sum(r.get("rounds_run", 0) for r in rows), "mean": _mean([r.get("rounds_run", 0) for r in ok])},
        "generator_calls": {"total": sum(r.get("generator_calls", 0) for r in rows),
                            "mean": _mean([r.get("generator_calls", 0) for r in ok])},
        "critic_calls": {"total": sum(r.get("critic_calls", 0) for r in rows),
                         "mean": _mean([r.get("critic_calls", 0) for r in ok])},
        "refiner_calls": {"total": sum(r.get("refiner_calls", 0) for r in rows)},
        "stop_reasons": dict(Counter(r.get("stop_reason") or "unfinished" for r in rows)),
        "baseline": {
            "n": len(with_base),
            "mean_generations": _mean([r["baseline"]["generations"] for r in with_base]),
            "final_vs_baseline": {"wins": wins, "ties": ties, "losses": losses},
            "note": "best-of-K with the original request, K = the loop's generations for that item",
        },
    }
    if config is not None:
        summary["config"] = config
    return summary


async def arefine_batch(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    generator: Generator | str,
    critic: RewardModel,
    config: RefineConfig | None = None,
    refiner: Refiner | None = None,
    concurrency: int = 1,
    limit: int | None = None,
    on_item: ItemCallback | None = None,
) -> dict[str, Any]:
    """Refine every item of ``input_path`` into ``out_dir``; returns the summary (also written).

    ``concurrency`` items run at once (generation calls are still limited by the generator's own
    ``max_concurrency``, so critiques of one item overlap with generation for another).
    ``on_item(row)`` is called with each finished item's results row.
    """
    cfg = config or RefineConfig(baseline=True)
    rows = read_items(input_path)
    if limit is not None:
        rows = rows[: max(0, limit)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = ResumableJsonl(out / "results.jsonl")
    loop = RefineLoop(generator, critic, cfg, refiner=refiner)
    todo = [r for r in rows if r["id"] not in store.done]
    sem = asyncio.Semaphore(max(1, concurrency))

    async def run(row: dict[str, Any]) -> None:
        sub = f"items/{item_dirname(row['id'])}"
        async with sem:
            try:
                traj = await loop.arun(row["prompt"], out / sub, source=row.get("source"), id=row["id"],
                                       seed=row.get("seed"))
                result = item_summary(traj, sub)
            except RefineInputError as exc:
                result = _failed_row(row, sub, str(exc), "input")
            except Exception as exc:  # one broken item must not take the batch down; it is retried on rerun
                logger.exception("refine item %s failed", row["id"])
                result = _failed_row(row, sub, f"{type(exc).__name__}: {exc}", "internal")
        store.append(result)
        if on_item is not None:
            res = on_item(result)
            if asyncio.iscoroutine(res):
                await res

    try:
        await asyncio.gather(*(run(r) for r in todo))
    finally:
        ids = [r["id"] for r in rows]
        wanted = set(ids)
        final_rows = [r for r in store.finalize(ids) if r.get("id") in wanted]
    summary = summarize(final_rows, config=cfg.to_json(), threshold=cfg.threshold)
    summary["input"] = str(input_path)
    atomic_write_json(out / "summary.json", summary)
    write_batch_report(summary, final_rows, out)
    return summary


def refine_batch(input_path: str | Path, out_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Synchronous :func:`arefine_batch`."""

    async def go() -> dict[str, Any]:
        try:
            return await arefine_batch(input_path, out_dir, **kwargs)
        finally:
            await kwargs["critic"].aclose()
            if kwargs.get("refiner") is not None:
                await kwargs["refiner"].aclose()

    return asyncio.run(go())
