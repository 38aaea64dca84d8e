"""Self-contained HTML reports: one per item (rounds side by side) and one for a batch.

Thumbnails are embedded as ``data:`` URLs, so a report can be mailed or archived on its own; each
thumbnail links to the full image file next to it.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from PIL import Image

from ..critique.dimensions import BY_KEY
from ..io import atomic_write_text
from .trajectory import Candidate, Trajectory

THUMB_SIDE = 256

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:24px 0 8px}
.meta{color:#555;font-size:13px;margin:2px 0}
.req{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 10px;margin:6px 0;font-size:14px}
.req b{color:#444}
.round{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px;margin:14px 0}
.round.accepted{border-color:#2e7d32;box-shadow:0 0 0 1px #2e7d32}
.row{display:flex;gap:12px;overflow-x:auto;align-items:flex-start}
.cand{flex:0 0 260px;border:1px solid #e3e3e3;border-radius:6px;padding:6px;font-size:12px;background:#fcfcfc}
.cand.best{border:2px solid #2e7d32} .cand.failed{border-color:#c62828;background:#fff5f5}
.cand img{width:256px;height:auto;display:block;border-radius:4px}
table{border-collapse:collapse;margin:4px 0} td,th{padding:1px 6px;text-align:left;font-size:12px}
.tag{display:inline-block;padding:1px 6px;border-radius:8px;font-size:11px;background:#eee;margin-right:4px}
.tag.ok{background:#e8f5e9;color:#1b5e20} .tag.no{background:#ffebee;color:#b71c1c} .tag.warn{background:#fff8e1;color:#8d6e00}
details{margin-top:4px} .err{color:#b71c1c}
.grid{border-collapse:collapse;display:block;overflow-x:auto;max-width:100%} .grid td,.grid th{border:1px solid #ddd;padding:4px 8px;vertical-align:top}
img{max-width:100%;height:auto} figure{margin:0} figcaption{font-size:12px;color:#444;margin-top:2px;overflow-wrap:anywhere}
.req,.meta,h1,h2{overflow-wrap:anywhere} .figs{display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start}
@media (max-width:600px){body{margin:12px} .cand{flex-basis:240px}}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def thumbnail_data_url(path: Path, side: int = THUMB_SIDE) -> str | None:
    """A JPEG thumbnail of ``path`` as a data URL (None if the file is missing or unreadable)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((side, side))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=85)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(out: Path, rel: str | None, side: int = THUMB_SIDE, href_prefix: str = "") -> str:
    if not rel:
        return "<div class='err'>no image</div>"
    url = thumbnail_data_url(out / rel, side)
    if url is None:
        return f"<div class='err'>missing image {_e(rel)}</div>"
    return f"<a href='{_e(href_prefix + rel)}'><img src='{url}' alt='{_e(rel)}' style='width:{side}px'></a>"


def _fig(out: Path, rel: str | None, caption: str, side: int = THUMB_SIDE, href_prefix: str = "") -> str:
    """An image with its caption under it (the caption says what the image is and what its number means)."""
    return f"<figure style='max-width:{side}px'>{_img(out, rel, side, href_prefix)}<figcaption>{_e(caption)}</figcaption></figure>"


def _scores_table(scores: dict[str, float | None]) -> str:
    rows = []
    for key, value in scores.items():
        if key not in BY_KEY or (value is None and key == "image_faithfulness"):
            continue
        rows.append(f"<tr><td>{_e(BY_KEY[key].header)}</td><td>{'N/A' if value is None else f'{value:.2f}'}</td></tr>")
    return "<table>" + "".join(rows) + "</table>" if rows else ""


def _candidate_html(out: Path, c: Candidate, is_best: bool) -> str:
    cls = "cand" + (" best" if is_best else "") + ("" if c.ok else " failed")
    head = f"#{c.index} seed {c.seed} · "
    caption = f"{head}reward {_fmt(c.reward)}" if c.ok else f"{head}critique failed"
    parts = [f"<div class='{cls}'>", _fig(out, c.image, caption)]
    if c.ok:
        if is_best:
            parts.append("<div><b>★ the run's best image</b></div>")
        parts.append(_scores_table(c.scores))
    else:
        parts.append(f"<div class='err'><b>{head}critique failed ({_e(c.error_kind)})</b>: {_e(c.error)}</div>")
    if c.summary:
        parts.append(f"<div>{_e(c.summary)}</div>")
    just = [(BY_KEY[k].header, v) for k, v in c.justifications.items() if v and k in BY_KEY]
    if just or c.refined_request or c.refinement_comments or c.raw:
        parts.append("<details><summary>critique</summary>")
        for header, text in just:
            parts.append(f"<p><b>{_e(header)}</b>: {_e(text)}</p>")
        if c.refinement_comments:
            parts.append(f"<p><b>Refinement comments</b>: {_e(c.refinement_comments)}</p>")
        if c.refined_request:
            parts.append(f"<p><b>Refined request</b>: {_e(c.refined_request)}</p>")
        if c.raw:
            parts.append(f"<pre style='white-space:pre-wrap'>{_e(c.raw[:3000])}</pre>")
        parts.append("</details>")
    parts.append("</div>")
    return "".join(parts)


def render_report(traj: Trajectory, out: Path) -> str:
    """The HTML text of an item's report (images read from ``out``)."""
    best = traj.best
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>refine {_e(traj.id or '')}</title><style>{_CSS}</style></head><body>",
        f"<h1>Generate-Critique-Refine{' · ' + _e(traj.id) if traj.id else ''}</h1>",
        f"<div class='req'><b>Original request</b> (every image is judged against it): {_e(traj.prompt)}</div>",
    ]
    status = "finished" if traj.finished else "unfinished"
    tags = [f"<span class='tag {'ok' if traj.ok else 'no'}'>{status}</span>"]
    if traj.stop_reason:
        tags.append(f"<span class='tag'>stop: {_e(traj.stop_reason)}</span>")
    tags.append(f"<span class='tag'>{_e(traj.task)} · {_e(traj.mode)}</span>")
    parts.append("<div class='meta'>" + "".join(tags) + "</div>")
    if traj.error:
        parts.append(f"<div class='meta err'>error ({_e(traj.error_kind)}): {_e(traj.error)}</div>")
    u = traj.usage
    parts.append(f"<div class='meta'>rounds {len(traj.rounds)} · generations {u.generator_calls} · critic calls "
                 f"{u.critic_calls} · refiner calls {u.refiner_calls} · generator {_e(traj.generator.get('generator'))} "
                 f"{_e(traj.generator.get('model') or traj.generator.get('callable') or traj.generator.get('base_url') or '')}</div>")
    if traj.source:
        parts.append("<h2>Source</h2><div class='row'>" + "".join(
            _fig(out, s, f"source {k + 1}" if len(traj.source) > 1 else "source (the image the edit starts from)", 192)
            for k, s in enumerate(traj.source)) + "</div>")
    if best is not None:
        base_best = traj.baseline.best if traj.baseline is not None else None
        side_by_side = "" if base_best is None else (
            "<div class='cand'>" + _fig(out, base_best.image, f"best-of-{traj.baseline.generations} with the original "
                                        f"request · reward {_fmt(base_best.reward)}") + "</div>")
        parts.append("<h2>Best</h2><div class='row'><div class='cand best'>"
                     + _fig(out, best.image, f"refined best · round {best.round} · reward {_fmt(best.reward)}")
                     + "</div>" + side_by_side
                     + f"<div><div class='meta'>refined best: reward <b>{_fmt(best.reward)}</b> · round {best.round} · candidate "
                     f"{best.candidate} · seed {best.seed}</div><div class='req'><b>Request</b>: {_e(best.request)}</div>"
                     f"{_scores_table(best.scores)}</div></div>")
    for rnd in traj.rounds:
        parts.append(f"<div class='round{' accepted' if rnd.accepted else ''}'>")
        verdict = "<span class='tag ok'>accepted</span>" if rnd.accepted else "<span class='tag no'>rejected</span>"
        parts.append(f"<h2>Round {rnd.round} {verdict}<span class='tag'>request from {_e(rnd.request_source)}</span>"
                     f"<span class='tag'>best {_fmt(rnd.round_best_reward)}</span></h2>")
        parts.append(f"<div class='req'><b>Request</b>: {_e(rnd.request)}</div>")
        if rnd.drift and rnd.drift.get("anchored"):
            parts.append(f"<div class='meta'><span class='tag warn'>drift guard</span>the proposal kept "
                         f"{rnd.drift.get('overlap', 0):.0%} of the original's content words and was anchored to the "
                         f"original. Proposal: {_e(rnd.drift.get('proposal'))}</div>")
        if rnd.refiner_error:
            parts.append(f"<div class='meta err'>refiner: {_e(rnd.refiner_error)}</div>")
        parts.append(f"<div class='meta'>{_e(rnd.decision)}</div>")
        if rnd.comparison:
            parts.append(f"<div class='meta'>pairwise confirmation: winner {_e(rnd.comparison.get('winner'))}"
                         f"{' (both orders)' if rnd.comparison.get('swap') else ''}</div>")
        parts.append("<div class='row'>")
        for c in rnd.candidates:
            is_best = best is not None and best.round == rnd.round and best.candidate == c.index
            parts.append(_candidate_html(out, c, is_best))
        parts.append("</div></div>")
    if traj.pending is not None:
        parts.append(f"<div class='round'><h2>Round {traj.pending.round} <span class='tag warn'>generated, not yet "
                     f"critiqued</span></h2><div class='req'><b>Request</b>: {_e(traj.pending.request)}</div><div class='row'>"
                     + "".join(f"<div class='cand'>{_fig(out, p, 'generated, not yet critiqued')}</div>"
                               for p in traj.pending.images) + "</div></div>")
    base = traj.baseline
    if base is not None:
        parts.append(f"<h2>Best-of-{base.generations} baseline (original request, equal generations)</h2>")
        if base.best is not None:
            parts.append(f"<div class='meta'>baseline best reward <b>{_fmt(base.best.reward)}</b> (seed {base.best.seed}) "
                         f"vs refined best <b>{_fmt(best.reward if best else None)}</b></div>")
        parts.append("<div class='row'>")
        for c in base.candidates:
            is_best = base.best is not None and base.best.candidate == c.index
            parts.append(_candidate_html(out, c, is_best))
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(traj: Trajectory, out: str | Path) -> Path:
    """Write ``out/report.html`` for one item."""
    out = Path(out)
    path = out / "report.html"
    atomic_write_text(path, render_report(traj, out))
    return path


def write_batch_report(summary: dict[str, Any], rows: list[dict[str, Any]], out: str | Path) -> Path:
    """Write ``out/report.html`` for a batch: the summary and one line per item (round 0 vs final)."""
    out = Path(out)
    mr = summary.get("mean_reward", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'><title>refine batch</title>",
        f"<style>{_CSS}</style></head><body><h1>Generate-Critique-Refine batch</h1>",
        f"<div class='meta'>{summary.get('n_items', 0)} items · {summary.get('n_ok', 0)} ok · "
        f"{summary.get('n_failed', 0)} failed · improved {_fmt(summary.get('share_improved'), 2)}</div>",
        f"<div class='meta'>mean reward: round 0 {_fmt(mr.get('round0'))} · final {_fmt(mr.get('final'))} · "
        f"best-of-K baseline {_fmt(mr.get('baseline'))}</div>",
        "<div class='meta'>Each reward is the critic's reward in [0, 1] for the image against the original request; "
        "best-of-K samples the original request as many times as the loop generated.</div>",
        "<table class='grid'><tr><th>id</th><th>request</th><th>round 0 best</th><th>final best</th>"
        "<th>best-of-K baseline</th><th>stop</th><th></th></tr>",
    ]
    for row in rows:
        sub = row.get("out") or ""
        r0, fin, base = row.get("round0") or {}, row.get("final") or {}, row.get("baseline") or {}

        def cell(entry: dict[str, Any], label: str, sub: str = sub) -> str:
            caption = f"{label} · reward {_fmt(entry.get('reward'))}"
            if not entry.get("image"):
                return f"<td><div class='meta'>{_e(caption)}</div></td>"
            return f"<td>{_fig(out / sub, entry.get('image'), caption, 128, href_prefix=f'{sub}/')}</td>"

        from .trajectory import load_trajectory

        traj = load_trajectory(out / sub) if sub else None
        srcs = traj.source if traj is not None else []
        sources = "" if not srcs else "<div class='figs'>" + "".join(
            _fig(out / sub, s, f"source {k + 1}" if len(srcs) > 1 else "source", 96, href_prefix=f"{sub}/")
            for k, s in enumerate(srcs)) + "</div>"

        status = "" if row.get("ok") else f"<div class='err'>{_e(row.get('error_kind'))}: {_e(row.get('error'))}</div>"
        parts.append(
            f"<tr><td>{_e(row.get('id'))}</td><td>{_e(row.get('prompt'))}{status}{sources}"
            f"<div class='meta'>{_e((fin or {}).get('request') or '')}</div></td>"
            f"{cell(r0, 'round 0 best')}{cell(fin, 'final best')}{cell(base, 'best-of-K')}"
            f"<td>{_e(row.get('stop_reason'))}</td><td><a href='{_e(sub)}/report.html'>report</a></td></tr>"
        )
    parts.append("</table></body></html>")
    path = out / "report.html"
    atomic_write_text(path, "".join(parts))
    return path
