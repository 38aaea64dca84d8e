"""HTML fragments of the UI (no Gradio here, so they are testable on their own).

Every piece of text that came from a user, a file or the model goes through :func:`html.escape`
before it is placed in markup: a request such as ``<img src=x onerror=...>`` or a critique that
writes ``**bold**`` is shown as the characters it is, never interpreted.

A failed critique is rendered as the failure (its kind, its reason and the raw model text), never
with a score: :class:`~rationalrewards.critique.schema.CritiqueResult` carries no reward when it
is not ok, and nothing here makes one up.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

from ..critique.dimensions import BY_KEY, SCORE_MAX, SCORE_MIN, keys_for

THUMB_SIDE = 240

CSS = """
.rr-card{border:1px solid #d0d7de;border-radius:8px;padding:12px;margin:8px 0;background:#fff;color:#1f2328}
.rr-error{border-color:#cf222e;background:#fff5f5}
.rr-error h3{color:#a40e26;margin:0 0 6px}
.rr-reward{font-size:22px;font-weight:600;margin:0 0 8px}
.rr-dim{margin:10px 0}
.rr-dim-head{display:flex;justify-content:space-between;gap:8px;font-weight:600}
.rr-bar{height:10px;background:#eaeef2;border-radius:5px;overflow:hidden;margin:4px 0}
.rr-bar>div{height:100%;background:#2da44e}
.rr-na .rr-bar>div{width:0}
.rr-just{margin:2px 0;color:#444;overflow-wrap:anywhere}
.rr-muted{color:#57606a;font-size:13px}
.rr-table-wrap{overflow-x:auto;max-width:100%}
.rr-table{border-collapse:collapse}.rr-table td,.rr-table th{border:1px solid #d0d7de;padding:4px 8px;text-align:left}
.rr-figs{display:flex;flex-wrap:wrap;gap:10px}
.rr-figs figure{margin:0;max-width:100%}.rr-figs img{max-width:100%;height:auto;display:block;border-radius:4px}
.rr-figs figcaption{font-size:12px;color:#57606a;max-width:240px;overflow-wrap:anywhere}
.rr-raw{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;padding:8px;font-size:12px;max-height:420px;overflow:auto}
.rr-item h3{margin:0 0 4px;overflow-wrap:anywhere}
"""


def e(value: Any) -> str:
    """Escape any value for HTML text or attribute context."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt_score(value: float | None) -> str:
    return "N/A" if value is None else f"{value:.2f}"


def _bar_pct(value: float | None) -> float:
    if value is None:
        return 0.0
    return max(0.0, min(100.0, (value - SCORE_MIN) / (SCORE_MAX - SCORE_MIN) * 100.0))


def error_html(kind: str | None, message: str | None, raw: str | None = None) -> str:
    """A failure shown as what it is: its kind, its reason, the model's raw text if any."""
    what = {"parse": "The judge's answer could not be parsed",
            "backend": "The judge could not be reached or failed",
            "input": "The input was not accepted"}.get(kind or "", "The judgement failed")
    parts = [f"<div class='rr-card rr-error' data-rr='error' data-kind='{e(kind)}'>",
             f"<h3>{e(what)} ({e(kind or 'error')})</h3><p>{e(message)}</p>",
             "<p class='rr-muted'>No score is shown: a failed judgement has none.</p>"]
    if raw:
        parts.append(f"<details open><summary>raw model text</summary><pre class='rr-raw'>{e(raw)}</pre></details>")
    parts.append("</div>")
    return "".join(parts)


def critique_html(result: Any) -> str:
    """The reward, one bar per dimension (score and justification; N/A as N/A) and the summary."""
    if not result.ok:
        return error_html(result.error_kind, result.error, result.raw)
    parts = ["<div class='rr-card' data-rr='critique'>",
             f"<p class='rr-reward'>Reward <span data-rr='reward'>{result.reward:.3f}</span></p>",
             "<p class='rr-muted'>Reward: the weighted mean of the dimension scores (weights of the model's "
             "aggregation; N/A dimensions left out), mapped from the 1–4 scale to 0–1.</p>"]
    for key in keys_for(result.task):
        score = result.scores.get(key)
        header = BY_KEY[key].header
        just = result.justifications.get(key)
        cls = "rr-dim rr-na" if score is None else "rr-dim"
        parts.append(
            f"<div class='{cls}' data-dim='{e(key)}'><div class='rr-dim-head'><span>{e(header)}</span>"
            f"<span data-rr='score'>{fmt_score(score)}{'' if score is None else ' / 4'}</span></div>"
            f"<div class='rr-bar' role='img' aria-label='{e(header)} {fmt_score(score)}'>"
            f"<div style='width:{_bar_pct(score):.0f}%'></div></div>"
            f"<p class='rr-just'>{e(just) if just else '<i>no justification given</i>'}</p></div>")
    if result.summary:
        parts.append(f"<p><b>Summary</b>: <span data-rr='summary'>{e(result.summary)}</span></p>")
    parts.append("</div>")
    return "".join(parts)


def _winner_text(w: str | None) -> str:
    return {"A": "Image A", "B": "Image B", "tie": "tie"}.get(w or "", "no verdict")


def compare_html(result: Any) -> str:
    """Per-dimension A/B scores, the winner, and position consistency when both orders were judged."""
    if not result.ok:
        return error_html(result.error_kind, result.error, result.raw)
    extra = result.model_extra or {}
    parts = ["<div class='rr-card' data-rr='compare'>",
             f"<p class='rr-reward'>Winner: <span data-rr='winner'>{e(_winner_text(result.winner))}</span></p>"]
    if result.orders:
        consistent = extra.get("position_consistent")
        first, second = result.orders[0].winner, result.orders[1].winner if len(result.orders) > 1 else None
        parts.append(
            f"<p data-rr='consistency'>Position consistency: <b>{'consistent' if consistent else 'inconsistent'}</b>"
            f" — A shown first: {e(_winner_text(first))}; B shown first: {e(_winner_text(second))}. "
            "Scores below are the mean of the two orders; a verdict that flips with the order becomes a tie.</p>")
    if result.reward_a is not None and result.reward_b is not None:
        parts.append(f"<p class='rr-muted'>Reward A {result.reward_a:.3f} · reward B {result.reward_b:.3f} "
                     "(dimension scores aggregated to 0–1)</p>")
    parts.append("<div class='rr-table-wrap'><table class='rr-table'><tr><th>dimension</th><th>A</th><th>B</th>"
                 "<th>better</th></tr>")
    for key in keys_for(result.task):
        a, b = result.scores_a.get(key), result.scores_b.get(key)
        better = "—" if a is None or b is None else ("A" if a > b else "B" if b > a else "equal")
        parts.append(f"<tr data-dim='{e(key)}'><td>{e(BY_KEY[key].header)}</td><td data-rr='a'>{fmt_score(a)}</td>"
                     f"<td data-rr='b'>{fmt_score(b)}</td><td>{better}</td></tr>")
    parts.append("</table></div>")
    just = [(BY_KEY[k].header, v) for k, v in (result.justifications or {}).items() if v and k in BY_KEY]
    for header, text in just:
        parts.append(f"<p class='rr-just'><b>{e(header)}</b>: {e(text)}</p>")
    if result.summary:
        parts.append(f"<p><b>Summary</b>: {e(result.summary)}</p>")
    parts.append("</div>")
    return "".join(parts)


def thumbnail(src: Any, base_dir: str | None = None, side: int = THUMB_SIDE) -> tuple[str | None, str | None]:
    """``(data_url, None)`` for a JPEG thumbnail of ``src`` or ``(None, reason)`` when it cannot be read."""
    from ..images import ImageInputError, load_image

    if src is None:
        return None, "no image"
    try:
        img = load_image(src, max_pixels=side * side * 4, base_dir=base_dir).image.copy()
    except (ImageInputError, OSError, ValueError) as exc:
        return None, str(exc)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), None


def figures_html(images: Sequence[Any]) -> str:
    """Labelled images (``ImageRef``-like objects with caption, src, base_dir), each caption under its image."""
    parts = ["<div class='rr-figs'>"]
    for ref in images:
        url, why = thumbnail(ref.src, ref.base_dir)
        body = (f"<img src='{url}' alt='{e(ref.caption)}'>" if url
                else f"<div class='rr-muted' style='width:160px'>image unavailable: {e(why)}</div>")
        parts.append(f"<figure>{body}<figcaption>{e(ref.caption)}</figcaption></figure>")
    parts.append("</div>")
    return "".join(parts)


def scores_table_html(rows: Sequence[tuple[str, dict[str, float | None]]]) -> str:
    if not rows:
        return ""
    keys = [k for k in BY_KEY if any(k in s and (s.get(k) is not None or k != "image_faithfulness") for _, s in rows)]
    head = "".join(f"<th>{e(BY_KEY[k].header)}</th>" for k in keys)
    body = "".join(f"<tr><td>{e(name)}</td>" + "".join(f"<td>{fmt_score(s.get(k))}</td>" for k in keys) + "</tr>"
                   for name, s in rows)
    return f"<div class='rr-table-wrap'><table class='rr-table'><tr><th></th>{head}</tr>{body}</table></div>"


def run_item_html(item: Any) -> str:
    """One item of a browsed run: id, request, verdict, labelled images, scores, critiques on demand."""
    cls = "rr-card rr-item" + (" rr-error" if item.failed else "")
    parts = [f"<div class='{cls}' data-rr='item' data-id='{e(item.id)}'><h3>{e(item.id)}</h3>"]
    if item.prompt:
        parts.append(f"<p><i>{e(item.prompt)}</i></p>")
    meta = [e(item.verdict)]
    if item.category:
        meta.append(f"category {e(item.category)}")
    parts.append(f"<p class='rr-muted' data-rr='verdict'>{' · '.join(meta)}</p>")
    if item.images:
        parts.append(figures_html(item.images))
    parts.append(scores_table_html(item.scores))
    for label, text in item.texts:
        parts.append(f"<details><summary>{e(label)}</summary><pre class='rr-raw'>{e(text)}</pre></details>")
    parts.append("</div>")
    return "".join(parts)


def page_html(run: Any, items: Sequence[Any], page: int, pages: int, total: int, note: str | None = None) -> str:
    head = (f"<p class='rr-muted' data-rr='page'>{e(run.description)} — showing {len(items)} of {total} matching "
            f"item(s), page {page} of {max(pages, 1)}</p>")
    if note:
        head += f"<p class='rr-muted'>{e(note)}</p>"
    if not items:
        return head + "<p>No item matches these filters.</p>"
    return head + "".join(run_item_html(i) for i in items)
