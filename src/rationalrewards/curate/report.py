"""Summary statistics, distribution plots (drawn with Pillow) and the HTML report of a curation run.

Statistics accumulate one row at a time, so the report costs one pass over the results and
memory proportional to the number of items (one float per scored dimension), never to the
images. Plots are plain PNGs drawn with Pillow: matplotlib would be a heavy dependency for a
handful of bar charts.
"""

from __future__ import annotations

import base64
import heapq
import html
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..critique.dimensions import BY_KEY, DIMENSION_KEYS, SCORE_MAX, SCORE_MIN

# Scores are floats on [1, 4]; quarter-point bins show the refinement the judge writes (3.5,
# 3.7, ...) without scattering a small dataset over dozens of empty bars.
SCORE_EDGES = [SCORE_MIN + 0.25 * i for i in range(int((SCORE_MAX - SCORE_MIN) / 0.25) + 1)]
REWARD_EDGES = [i / 20 for i in range(21)]
KEPT_COLOUR = (46, 139, 87)
REJECTED_COLOUR = (205, 92, 92)


def _bin(value: float, edges: list[float]) -> int:
    if value >= edges[-1]:
        return len(edges) - 2
    for i in range(len(edges) - 1):
        if value < edges[i + 1]:
            return i
    return 0


def _quantile(sorted_values: list[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass
class Distribution:
    """Values of one dimension (or of the reward) split by kept / rejected."""

    edges: list[float]
    values: list[float] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    n_na: int = 0

    def __post_init__(self) -> None:
        self.kept = [0] * (len(self.edges) - 1)
        self.rejected = [0] * (len(self.edges) - 1)

    def add(self, value: float | None, kept: bool) -> None:
        if value is None:
            self.n_na += 1
            return
        self.values.append(float(value))
        (self.kept if kept else self.rejected)[_bin(float(value), self.edges)] += 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(self.values), "n_na": self.n_na}
        if self.values:
            vals = sorted(self.values)
            mean = sum(vals) / len(vals)
            out.update(
                mean=round(mean, 4),
                std=round(math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)), 4),
                min=vals[0],
                p10=round(_quantile(vals, 0.1), 4),
                median=round(_quantile(vals, 0.5), 4),
                p90=round(_quantile(vals, 0.9), 4),
                max=vals[-1],
            )
        out["histogram"] = {"edges": self.edges, "kept": self.kept, "rejected": self.rejected}
        return out


@dataclass(order=True)
class _Worst:
    sort_key: tuple[float, str]
    row: dict[str, Any] = field(compare=False)


class Stats:
    """Running totals of a split: counts, reasons, distributions and the worst examples."""

    def __init__(self, worst_k: int = 20):
        self.worst_k = worst_k
        self.n = self.n_kept = 0
        self.failures: Counter[str] = Counter()
        self.rejected_by: Counter[str] = Counter()
        self.reward = Distribution(REWARD_EDGES)
        self.dims = {k: Distribution(SCORE_EDGES) for k in DIMENSION_KEYS}
        self._worst: list[_Worst] = []  # a max-heap on -reward keeps the k lowest rewards
        self.failed_examples: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any], kept: bool) -> None:
        self.n += 1
        self.n_kept += kept
        critique = row["critique"]
        for check in row.get("checks", []):
            if not check["passed"]:
                self.rejected_by[check["check"]] += 1
        if not critique.get("ok"):
            self.failures[critique.get("error_kind") or "unknown"] += 1
            if len(self.failed_examples) < self.worst_k:
                self.failed_examples.append(row)
            return
        self.reward.add(row.get("reward"), kept)
        task_keys = set(_task_keys(critique.get("task")))
        for key, dist in self.dims.items():
            if key in task_keys:
                dist.add(row["scores"].get(key), kept)
        if self.worst_k > 0 and row.get("reward") is not None:
            entry = _Worst((-float(row["reward"]), str(row["id"])), row)
            if len(self._worst) < self.worst_k:
                heapq.heappush(self._worst, entry)
            elif entry.sort_key > self._worst[0].sort_key:
                heapq.heapreplace(self._worst, entry)

    def worst(self) -> list[dict[str, Any]]:
        return [w.row for w in sorted(self._worst, key=lambda w: (-w.sort_key[0], w.sort_key[1]))]

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_kept": self.n_kept,
            "n_rejected": self.n - self.n_kept,
            "kept_rate": round(self.n_kept / self.n, 4) if self.n else None,
            "n_failed": sum(self.failures.values()),
            "failures_by_kind": dict(self.failures),
            "rejections_by_check": dict(self.rejected_by),
            "reward": self.reward.to_json(),
            "dimensions": {k: d.to_json() for k, d in self.dims.items() if d.values or d.n_na},
        }


def _task_keys(task: Any) -> tuple[str, ...]:
    from ..critique.dimensions import keys_for

    try:
        return keys_for(str(task))
    except ValueError:
        return DIMENSION_KEYS


# -- plots --------------------------------------------------------------------------------------


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def draw_histogram(dist: Distribution, title: str, threshold: float | None = None,
                   size: tuple[int, int] = (720, 400)) -> Image.Image:
    """A stacked bar chart (kept below, rejected above) with the threshold as a dashed line."""
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(16), _font(12)
    left, right, top, bottom = 56, 16, 40, 48
    pw, ph = w - left - right, h - top - bottom
    draw.text((left, 10), title, fill="black", font=font)
    totals = [k + r for k, r in zip(dist.kept, dist.rejected, strict=True)]
    peak = max(totals) if totals and max(totals) > 0 else 1
    nbins = len(totals)
    lo, hi = dist.edges[0], dist.edges[-1]

    def x_of(v: float) -> float:
        return left + (v - lo) / (hi - lo) * pw

    def y_of(c: float) -> float:
        return top + ph - c / peak * ph

    for i in range(nbins):
        x0, x1 = x_of(dist.edges[i]) + 1, x_of(dist.edges[i + 1]) - 1
        if dist.kept[i]:
            draw.rectangle([x0, y_of(dist.kept[i]), x1, y_of(0)], fill=KEPT_COLOUR)
        if dist.rejected[i]:
            draw.rectangle([x0, y_of(totals[i]), x1, y_of(dist.kept[i])], fill=REJECTED_COLOUR)
    draw.line([left, top + ph, left + pw, top + ph], fill="black")
    draw.line([left, top, left, top + ph], fill="black")
    for frac in (0.0, 0.5, 1.0):
        y = y_of(peak * frac)
        draw.line([left - 4, y, left, y], fill="black")
        label = f"{peak * frac:.0f}" if peak >= 2 or frac in (0.0, 1.0) else ""
        draw.text((left - 8, y), label, fill="black", font=small, anchor="rm")
    step = max(1, nbins // 12)
    for i in range(0, nbins + 1, step):
        x = x_of(dist.edges[i])
        draw.line([x, top + ph, x, top + ph + 4], fill="black")
        draw.text((x, top + ph + 6), f"{dist.edges[i]:g}", fill="black", font=small, anchor="mt")
    if threshold is not None and lo <= threshold <= hi:
        x = x_of(threshold)
        for y in range(top, top + ph, 10):
            draw.line([x, y, x, min(y + 5, top + ph)], fill=(30, 30, 30), width=2)
        draw.text((x + 4, top + 2), f"min {threshold:g}", fill=(30, 30, 30), font=small)
    lx = w - right - 190
    for j, (name, colour) in enumerate((("kept", KEPT_COLOUR), ("rejected", REJECTED_COLOUR))):
        draw.rectangle([lx + j * 90, 14, lx + j * 90 + 12, 26], fill=colour)
        draw.text((lx + j * 90 + 18, 12), name, fill="black", font=small)
    draw.text((left + pw / 2, h - 14), f"n={len(dist.values)}  N/A={dist.n_na}", fill="black", font=small, anchor="mm")
    return img


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def thumbnail_data_url(path: str | Path | None, side: int = 192) -> str | None:
    """A small JPEG of an image as a data URL, or None when it cannot be read."""
    if path is None:
        return None
    try:
        with Image.open(path) as im:
            im.draft("RGB", (side * 2, side * 2))  # JPEG: decode at reduced size, much faster
            thumb = im.convert("RGB")
            thumb.thumbnail((side, side))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0;display:block;overflow-x:auto;max-width:100%}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:8px}.plots figure{margin:0;flex:1 1 320px;max-width:100%}
.plots img{width:100%;height:auto;border:1px solid #ddd}
figure{margin:0}figcaption{font-size:12px;color:#555;overflow-wrap:anywhere}p,b,small,pre{overflow-wrap:anywhere}
@media (max-width:600px){body{margin:12px}.ex figure,.ex img{width:150px}}
.ex{display:flex;flex-wrap:wrap;gap:12px;border:1px solid #ddd;padding:8px;margin:8px 0}.ex>div{min-width:0;flex:1 1 220px}
.ex figure{flex:none;width:192px;max-width:100%}.ex img{width:192px;max-width:100%;height:auto}.ex .noimg{width:192px;height:120px;background:#eee;flex:none;
display:flex;align-items:center;justify-content:center;color:#888}
.reason{color:#b22}.kept{color:#2e8b57}small{color:#666}pre{white-space:pre-wrap;margin:4px 0}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _kv(value: Any) -> str:
    """Dicts as ``key: value, ...`` (nested one level), everything else as text."""
    if isinstance(value, dict):
        if not value:
            return "-"
        return ", ".join(f"{k}: {_kv(v) if isinstance(v, dict) else v}" for k, v in value.items())
    return str(value)


def _fmt(value: Any) -> str:
    return "N/A" if value is None else f"{value:.2f}" if isinstance(value, float) else _e(value)


def _example_html(row: dict[str, Any], image_path: str | None, source_paths: list[str | None] | None = None) -> str:
    srcs = source_paths or []
    source_figs = "".join(
        f'<figure><img src="{t}" alt="source"><figcaption>{"source" if len(srcs) == 1 else f"source {k + 1}"}'
        '</figcaption></figure>' if (t := thumbnail_data_url(p)) else '<div class="noimg">no source image</div>'
        for k, p in enumerate(srcs))
    thumb = thumbnail_data_url(image_path)
    img = f'<img src="{thumb}" alt="{_e(row.get("id"))}">' if thumb else '<div class="noimg">no image</div>'
    caption = f"{'kept' if row.get('kept') else 'rejected'} · reward {_fmt(row.get('reward'))}"
    img = f"<figure>{img}<figcaption>{_e(caption)}</figcaption></figure>"
    critique = row["critique"]
    scores = row.get("scores") or {}
    keys = [k for k in _task_keys(critique.get("task")) if k in scores]
    cells = "".join(f"<td>{_e(k)}</td><td>{_fmt(scores.get(k))}</td>" for k in keys)
    status = "kept" if row.get("kept") else "reason"
    justifications = critique.get("justifications") or {}
    scored = [k for k in keys if scores.get(k) is not None]
    weakest = min(scored, key=lambda k: scores[k]) if scored else None
    detail = ""
    if weakest and justifications.get(weakest):
        detail = f"<pre><b>{_e(BY_KEY[weakest].header)}:</b> {_e(justifications[weakest])}</pre>"
    elif not critique.get("ok"):
        detail = f"<pre>{_e((critique.get('raw') or '')[:400])}</pre>"
    reward = row.get("reward")
    return (
        f'<div class="ex">{source_figs}{img}<div><b>{_e(row["id"])}</b> · reward {_fmt(reward)}'
        f"<br><small>{_e(row.get('prompt'))}</small>"
        f"<table><tr>{cells}</tr></table>"
        f'<div class="{status}">{_e(row.get("reason"))}</div>{detail}</div></div>'
    )


def write_report_html(path: Path, summary: dict[str, Any], plots: dict[str, bytes], worst: list[dict[str, Any]],
                      failed: list[dict[str, Any]], resolve_image: Any) -> None:
    """A self-contained HTML page: counts, thresholds, plots and the worst examples with thumbnails."""
    from ..io import atomic_write_text

    stats = summary["stats"]
    rows = [
        ("items", stats["n"]),
        ("kept", f"{stats['n_kept']} ({(stats['kept_rate'] or 0) * 100:.1f}%)"),
        ("rejected", stats["n_rejected"]),
        ("critique failures", f"{stats['n_failed']} ({_kv(stats['failures_by_kind'])})"),
        ("rejections by check", _kv(stats["rejections_by_check"])),
        ("thresholds", _kv(summary["thresholds"])),
        ("judge", _kv(summary.get("judge") or "(cached critiques only)")),
        ("this run", _kv(summary["run"])),
    ]
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    dim_rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{d['n']}</td><td>{d['n_na']}</td><td>{_fmt(d.get('mean'))}</td>"
        f"<td>{_fmt(d.get('median'))}</td><td>{_fmt(d.get('min'))}</td><td>{_fmt(d.get('max'))}</td></tr>"
        for k, d in [("reward", stats["reward"]), *stats["dimensions"].items()]
    )
    images = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" alt="{_e(name)}">'
        f'<figcaption>{_e(name)}</figcaption></figure>'
        for name, data in plots.items()
    )
    def sources(r: dict[str, Any]) -> list[str | None]:
        return [resolve_image({"image": s}) for s in r.get("source") or []]

    worst_html = "".join(_example_html(r, resolve_image(r), sources(r)) for r in worst) or "<p>none</p>"
    failed_html = "".join(_example_html(r, resolve_image(r), sources(r)) for r in failed) or "<p>none</p>"
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'><title>Curation report</title>"
        f"<style>{_CSS}</style></head><body><h1>Curation report</h1>"
        f"<p><small>input: {_e(summary['input'].get('path'))} ({_e(summary['input'].get('format'))})</small></p>"
        f"<table>{table}</table><h2>Distributions</h2>"
        "<table><tr><th></th><th>n</th><th>N/A</th><th>mean</th><th>median</th><th>min</th><th>max</th></tr>"
        f"{dim_rows}</table><div class='plots'>{images}</div>"
        f"<h2>Lowest rewards ({len(worst)})</h2>{worst_html}"
        f"<h2>Failed critiques (first {len(failed)})</h2>{failed_html}"
        "</body></html>\n"
    )
    atomic_write_text(path, page)
