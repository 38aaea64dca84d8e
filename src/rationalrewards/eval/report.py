"""Reports: ``report.json`` (the contract fields plus every protocol), ``report.md`` and a
self-contained ``report.html`` listing every mismatch with its images and critiques; and the
side-by-side comparison of several runs (``rationalrewards eval compare``).

Everything here is recomputed from ``results.jsonl`` and the data's index, so a resumed or
re-reported run gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..critique.dimensions import keys_for
from ..io import InputFileError, atomic_write_json, atomic_write_text
from .benchmarks import PUBLISHED_NOTE, PairItem
from .labels import label_repr
from .protocols import (
    OrderView,
    ProtocolResult,
    Record,
    both_orders_acc,
    by_category,
    dimension_agreement,
    four_way_acc,
    group_acc,
    group_tie_calibrated_acc,
    no_ties_acc,
    pair_interval,
    position_bias,
    summarize,
    three_way_acc,
    tie_calibrated_acc,
)
from .results import CONFIG, RUNS, EvalResults, RunStats

THUMB_PX = 192
_MAX_LISTED_FAILURES = 200


# -- records -----------------------------------------------------------------------------------------
def build_records(items: Sequence[PairItem], rows: dict[str, dict[str, Any]]) -> list[Record]:
    """Join the data's ground truth with the saved results (an item without a row failed)."""
    records = []
    for it in items:
        if it.label is None:
            continue
        row = rows.get(it.id)
        rec = Record(id=it.id, label=it.label, category=it.category, group=it.group)
        if row is None:
            rec.error_kind, rec.error = "missing", "not judged (the run was interrupted before this item finished)"
        else:
            rec.judged = True
            rec.ok = bool(row.get("ok"))
            rec.prediction = row.get("prediction")
            rec.margin = row.get("margin")
            rec.reward_a, rec.reward_b = row.get("reward_a"), row.get("reward_b")
            rec.error_kind, rec.error = row.get("error_kind"), row.get("error")
            rec.orders = [OrderView(ok=bool(o.get("ok")), winner=o.get("winner"), margin=o.get("margin"),
                                    first=o.get("first", "A"), error_kind=o.get("error_kind"),
                                    scores_a=o.get("scores_a") or {}, scores_b=o.get("scores_b") or {})
                          for o in row.get("orders") or []]
        records.append(rec)
    return records


def margin_unit(mode: str, swap: bool) -> str:
    base = ("reward of A minus reward of B (pointwise rewards in [0, 1])" if mode == "pointwise" else
            "sum of A's dimension scores minus B's, over dimensions scored on both sides (1-4 scale)")
    return base + ("; mean of both orders" if swap else "")


def compute_protocols(records: Sequence[Record], official: str, *, mode: str, swap: bool, tie_tolerance: float,
                      bothbad_threshold: float) -> dict[str, ProtocolResult]:
    """Every protocol that applies to this run, the official one first."""
    unit = margin_unit(mode, swap)
    protos: dict[str, ProtocolResult] = {
        "3way": three_way_acc(records, tie_tolerance),
        "no_ties": no_ties_acc(records),
        "tie_calibrated": tie_calibrated_acc(records, unit),
    }
    if official == "4way" or any(r.label == "bothbad" for r in records):
        protos["4way"] = four_way_acc(records, bothbad_threshold)
    if swap or official == "both_orders":
        protos["both_orders"] = both_orders_acc(records, swap)
    group_sizes = Counter(r.group for r in records if r.group is not None)
    if official.startswith("group") or any(n > 1 for n in group_sizes.values()):
        protos["group"] = group_acc(records, tie_tolerance)
        protos["group_tie_calibrated"] = group_tie_calibrated_acc(records, unit)
    if official not in protos:
        raise ValueError(f"unknown official protocol {official!r}")
    return {official: protos[official], **{k: v for k, v in protos.items() if k != official}}


def pair_correct(official: ProtocolResult, rec: Record) -> bool:
    """Whether a pair counts as right under the official protocol (for listing mismatches)."""
    if official.calibrated:
        lo, hi = pair_interval(rec.label, rec.margin, rec.failed)
        return lo <= (official.epsilon or 0.0) < hi
    if official.name == "group":
        from .labels import three_way

        return not rec.failed and rec.prediction == three_way(rec.label)  # type: ignore[arg-type]
    unit = next((u for u in official.units if u.key == rec.id), None)
    if unit is None:  # e.g. a tie-labelled pair outside a no-tie protocol: judge it 3-way
        from .labels import three_way

        return not rec.failed and rec.prediction == three_way(rec.label)  # type: ignore[arg-type]
    return unit.correct >= unit.total


# -- the report ----------------------------------------------------------------------------------------
def compute_report(ev: EvalResults, rows: dict[str, dict[str, Any]] | None = None, *, bootstrap: int = 1000,
                   seed: int = 0, bothbad_threshold: float = 0.5, last_run: RunStats | None = None,
                   ) -> tuple[dict[str, Any], list[Record], dict[str, ProtocolResult]]:
    """The report dict, the records and the protocol results (for the HTML).

    ``ev`` is the evaluation's :class:`~rationalrewards.eval.results.EvalResults` (an
    :class:`~rationalrewards.eval.Evaluation` is read through its ``snapshot()``); ``rows``
    defaults to its saved result rows.
    """
    ev = _as_results(ev)
    rows = ev.rows if rows is None else rows
    records = build_records(ev.items, rows)
    protos = compute_protocols(records, ev.bench.official, mode=ev.mode, swap=ev.swap,
                               tie_tolerance=ev.tie_tolerance, bothbad_threshold=bothbad_threshold)
    official = next(iter(protos.values()))
    summaries = {name: summarize(p, n_boot=bootstrap, seed=seed) for name, p in protos.items()}

    failed = [r for r in records if r.failed]
    judged_rows = [rows[r.id] for r in records if r.judged]
    orders = [o for row in judged_rows for o in row.get("orders") or []]
    failed_orders = Counter(o.get("error_kind") or "parse" for o in orders if not o.get("ok"))
    n_judgements = len(orders)

    cats = by_category(official)
    no_ties_cats = by_category(protos["no_ties"])
    pairs_per_cat = Counter(r.category or "(none)" for r in records)
    failed_per_cat = Counter(r.category or "(none)" for r in failed)
    by_cat = {cat: {"n": pairs_per_cat[cat], "accuracy": cats.get(cat, {}).get("accuracy"),
                    "accuracy_no_ties": no_ties_cats.get(cat, {}).get("accuracy"), "n_failed": failed_per_cat[cat]}
              for cat in sorted(pairs_per_cat)}

    tasks = {it.task for it in ev.known}
    dim_keys = keys_for("edit" if "edit" in tasks else "t2i")
    unknown = ev.unknown
    groups = {r.group for r in records if r.group is not None}

    latencies = [o["usage"]["latency_s"] for o in orders if o.get("ok") and o.get("usage", {}).get("latency_s")]
    prompt_tokens = sum((row.get("usage") or {}).get("prompt_tokens", 0) for row in judged_rows)
    completion_tokens = sum((row.get("usage") or {}).get("completion_tokens", 0) for row in judged_rows)
    runs = _read_runs(ev.out)
    judged_in_runs = sum(r.get("judged", 0) for r in runs)
    wall_in_runs = sum(r.get("wall_s", 0.0) for r in runs if r.get("judged"))

    model = (json.loads((ev.out / CONFIG).read_text(encoding="utf-8")).get("model")
             if (ev.out / CONFIG).is_file() else None)
    report: dict[str, Any] = {
        "benchmark": ev.bench.name,
        "benchmark_description": ev.bench.description,
        "protocol": official.name,
        "protocol_description": official.description,
        "accuracy": official.accuracy,
        "ci95": summaries[official.name]["ci95"],
        "accuracy_no_ties": protos["no_ties"].accuracy,
        "accuracy_no_ties_ci95": summaries["no_ties"]["ci95"],
        "n": len(records),
        "n_failed": len(failed),
        "n_judgements": n_judgements,
        "n_groups": len(groups) if groups else None,
        "n_unknown_label": len(unknown),
        "by_category": by_cat,
        "protocols": summaries,
        "failures": {
            "n_failed": len(failed),
            "by_kind": dict(Counter(r.error_kind or "parse" for r in failed)),
            "failed_judgements_by_kind": dict(failed_orders),
            "items": [{"id": r.id, "error_kind": r.error_kind, "error": (r.error or "")[:300]}
                      for r in failed[:_MAX_LISTED_FAILURES]],
            "n_listed": min(len(failed), _MAX_LISTED_FAILURES),
            "note": "Failed items are wrong in every headline accuracy; each protocol's excluding_failed "
                    "block is the view without them.",
        },
        "parse_failure_rate": None if not n_judgements else failed_orders.get("parse", 0) / n_judgements,
        "failure_rate": None if not records else len(failed) / len(records),
        "position_bias": position_bias(records),
        "dimensions": dimension_agreement(records, dim_keys),
        "labels": {
            "counts": dict(Counter(r.label for r in records)),
            "unknown": {
                "n": len(unknown),
                "values": dict(Counter(label_repr(i.label_raw) for i in unknown).most_common(50)),
                "ids": [i.id for i in unknown[:100]],
                "note": "Rows whose label was not understood are not judged and not in n; fix or map them.",
            },
        },
        "throughput": {
            "last_run": last_run.to_json() if last_run is not None else (runs[-1] if runs else None),
            "runs": len(runs),
            "items_per_s": None if not wall_in_runs else judged_in_runs / wall_in_runs,
            "latency_s_p50": statistics.median(latencies) if latencies else None,
            "latency_s_p95": _quantile(latencies, 0.95),
        },
        "tokens": {
            "prompt": prompt_tokens,
            "completion": completion_tokens,
            "per_judgement_prompt": None if not n_judgements else prompt_tokens / n_judgements,
            "per_judgement_completion": None if not n_judgements else completion_tokens / n_judgements,
        },
        "settings": {**ev.settings, "bothbad_threshold": bothbad_threshold, "bootstrap": bootstrap, "seed": seed},
        "model": model,
        "data": {"source": ev.source, "rows": ev.n_rows, "fingerprint": ev.fingerprint,
                 "revision": ev.revision or ev.source_revision,
                 "pinned": ev.source_revision is not None or not str(ev.source).startswith("hf://")},
        "published": {"numbers": dict(ev.bench.published), "note": PUBLISHED_NOTE} if ev.bench.published else None,
        "notes": ev.bench.notes or None,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    from .. import __version__

    report["rationalrewards_version"] = __version__
    if groups:
        report["by_k"] = _by_k(ev.known, protos)
    return report, records, protos


def _by_k(items: Sequence[PairItem], protos: dict[str, ProtocolResult]) -> dict[str, dict[str, Any]]:
    """K-way benchmarks: group accuracy per K (the published numbers are per K)."""
    k_of = {it.group: it.meta.get("k") for it in items if it.group is not None}
    out: dict[str, dict[str, Any]] = {}
    for name in ("group_tie_calibrated", "group"):
        for u in protos[name].units:
            entry = out.setdefault(f"K={k_of.get(u.key) or '?'}", {"groups": 0})
            if name == "group_tie_calibrated":
                entry["groups"] += 1
            entry.setdefault(f"_{name}", []).append(u.correct)
    for entry in out.values():
        for name in ("group_tie_calibrated", "group"):
            vals = entry.pop(f"_{name}", [])
            entry[name] = sum(vals) / len(vals) if vals else None
    return dict(sorted(out.items()))


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _read_runs(out: Path) -> list[dict[str, Any]]:
    path = out / RUNS
    if not path.is_file():
        return []
    runs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return runs


def _as_results(ev: Any) -> EvalResults:
    # The report reads results, never the runner: an Evaluation hands over its snapshot.
    return ev if isinstance(ev, EvalResults) else ev.snapshot()


def write_report(ev: EvalResults, *, bootstrap: int = 1000, seed: int = 0, bothbad_threshold: float = 0.5,
                 html_report: bool = True, html_max_images: int = 1000, exclude_failed: bool = False,
                 last_run: RunStats | None = None) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and (unless ``html_report=False``) ``report.html`` into
    ``ev.out``, from ``ev``'s saved rows (an :class:`~rationalrewards.eval.Evaluation` is read
    through its ``snapshot()``)."""
    ev = _as_results(ev)
    rows = ev.rows
    report, records, protos = compute_report(ev, rows, bootstrap=bootstrap, seed=seed,
                                             bothbad_threshold=bothbad_threshold, last_run=last_run)
    ev.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ev.out / "report.json", report)
    atomic_write_text(ev.out / "report.md", render_markdown(report, exclude_failed=exclude_failed))
    if html_report:
        official = next(iter(protos.values()))
        atomic_write_text(ev.out / "report.html", render_html(ev, report, records, rows, official,
                                                              max_images=html_max_images))
    return report


# -- markdown ---------------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def render_markdown(report: dict[str, Any], *, exclude_failed: bool = False) -> str:
    model = report.get("model") or {}
    s = report["settings"]
    lines = [
        f"# {report['benchmark']}: {_pct(report['accuracy'])}% ({report['protocol']})",
        "",
        f"- model: `{model.get('model') or '?'}` ({model.get('backend') or '?'}), aggregation "
        f"`{model.get('aggregation') or 'default'}`",
        f"- mode: {s['mode']}, swap: {s['swap']}, tie tolerance: {s['tie_tolerance']:g}",
        f"- data: {report['data']['source']} (rows {report['data']['rows']}, fingerprint {report['data']['fingerprint']}"
        + (f", revision {report['data']['revision']}" if report['data'].get('revision') else "") + ")",
        f"- pairs: {report['n']}, failed: {report['n_failed']} (counted as wrong), judgements: {report['n_judgements']}"
        + (f", groups: {report['n_groups']}" if report.get("n_groups") else "")
        + f", unknown labels: {report['n_unknown_label']}",
        "",
        f"**Protocol.** {report['protocol_description']}",
        "",
        "## Accuracy by protocol (%; 95% bootstrap interval)",
        "",
        "| protocol | accuracy | 95% CI | correct / total | unit | epsilon |"
        + (" excl. failed |" if exclude_failed else ""),
        "|---|---|---|---|---|---|" + ("---|" if exclude_failed else ""),
    ]
    for name, p in report["protocols"].items():
        eps = "" if p.get("epsilon") is None else f"{p['epsilon']:g}"
        row = (f"| {name}{' (official)' if name == report['protocol'] else ''} | {_pct(p['accuracy'])} | "
               f"{_ci(p['ci95'])} | {p['correct']:g} / {p['total']:g} | {p['unit']} | {eps} |")
        if exclude_failed:
            row += f" {_pct(p['excluding_failed']['accuracy'])} |"
        lines.append(row)
    lines += ["", "Protocol definitions:", ""]
    lines += [f"- `{name}`: {p['description']}" for name, p in report["protocols"].items()]
    if exclude_failed:
        lines += ["", "_excl. failed_: the same protocol over items without failures: a view for diagnosis, "
                  "not the headline."]
    f = report["failures"]
    lines += ["", "## Failures", "",
              f"{f['n_failed']} of {report['n']} pairs failed ({_pct(report['failure_rate'])}%); by kind: "
              f"{json.dumps(f['by_kind'])}; parse-failure rate per judgement: {_pct(report['parse_failure_rate'])}%."]
    pb = report.get("position_bias")
    if pb:
        lines += ["", "## Position bias", "",
                  f"Verdict changes with the order on {_pct(pb['rate'])}% of {pb['pairs']} pairs "
                  f"(A/B swap: {_pct(pb['strict_flip_rate'])}%); the first-shown image wins "
                  f"{_pct(pb['first_position_rate'])}% of decisive judgements."]
    if report["by_category"]:
        lines += ["", "## By category", "", "| category | pairs | accuracy (official) | no ties | failed |",
                  "|---|---|---|---|---|"]
        lines += [f"| {c} | {v['n']} | {_pct(v['accuracy'])} | {_pct(v['accuracy_no_ties'])} | {v['n_failed']} |"
                  for c, v in report["by_category"].items()]
    lines += ["", "## Dimension agreement with the human winner", "", "| dimension | n | agrees | tie | disagrees |",
              "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['n']} | {_pct(v['agreement'])} | {_pct(v['tie_rate'])} | {_pct(v['disagreement'])} |"
              for k, v in report["dimensions"].items()]
    unk = report["labels"]["unknown"]
    if unk["n"]:
        lines += ["", "## Unknown labels", "", f"{unk['n']} row(s) had labels that were not understood and were not "
                  f"judged: {json.dumps(unk['values'])} (ids: {', '.join(unk['ids'][:20])}"
                  + (", ..." if unk["n"] > 20 else "") + ")"]
    t, tok = report["throughput"], report["tokens"]
    lines += ["", "## Throughput", "",
              f"{_fmt(t['items_per_s'])} items/s over {t['runs']} run(s); judgement latency p50 "
              f"{_fmt(t['latency_s_p50'])} s, p95 {_fmt(t['latency_s_p95'])} s; tokens: {tok['prompt']} prompt, "
              f"{tok['completion']} completion ({_fmt(tok['per_judgement_completion'])} completion per judgement)."]
    pub = report.get("published")
    if pub:
        lines += ["", "## Published numbers (for orientation)", "", pub["note"], ""]
        lines += [f"- {k}: {v}" for k, v in pub["numbers"].items()]
    if report.get("notes"):
        lines += ["", f"Note: {report['notes']}"]
    return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


# -- html -------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:8px 0;display:block;overflow-x:auto;max-width:100%}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
h1,h3,p,code{overflow-wrap:anywhere}img{max-width:100%;height:auto}
@media (max-width:600px){body{margin:12px}}
.item{border:1px solid #ddd;border-radius:6px;padding:10px;margin:14px 0}
.imgs{display:flex;gap:12px;flex-wrap:wrap}.imgs figure{margin:0;max-width:100%}.imgs figcaption{font-size:12px;color:#555}
pre{white-space:pre-wrap;background:#f7f7f7;padding:8px;font-size:12px;max-height:480px;overflow:auto}
.bad{color:#b00}.muted{color:#777}
"""


def _thumb(cell: Any, base_dir: str | None) -> str:
    from ..images import ImageInputError, load_image

    try:
        img = load_image(cell, max_pixels=THUMB_PX * THUMB_PX * 4, base_dir=base_dir).image.copy()
    except (ImageInputError, OSError, ValueError) as exc:
        return f'<span class="bad">image unavailable: {html.escape(str(exc))}</span>'
    img.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=70)
    return f'<img alt="" src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}">'


def _collect_images(ev: EvalResults, wanted: set[str]) -> dict[str, dict[str, list[str]]]:
    """Thumbnails for ``wanted`` ids (one more streaming pass; stops once all are found)."""
    found: dict[str, dict[str, list[str]]] = {}
    if not wanted:
        return found
    try:
        for item in ev.items_with_images():
            if item.id in wanted and item.id not in found:
                srcs = item.source if isinstance(item.source, list) else ([item.source] if item.source else [])
                found[item.id] = {
                    "source": [_thumb(s, item.base_dir) for s in srcs],
                    "A": [_thumb(item.image_a, item.base_dir)] if item.image_a is not None else [],
                    "B": [_thumb(item.image_b, item.base_dir)] if item.image_b is not None else [],
                }
                if len(found) == len(wanted):
                    break
    except (InputFileError, OSError) as exc:  # the report still lists every mismatch, without images
        found.setdefault("__error__", {"source": [html.escape(str(exc))], "A": [], "B": []})
    return found


def render_html(ev: EvalResults, report: dict[str, Any], records: Sequence[Record], rows: dict[str, dict[str, Any]],
                official: ProtocolResult, *, max_images: int = 1000) -> str:
    esc = html.escape
    mismatches = [r for r in records if not r.failed and not pair_correct(official, r)]
    failures = [r for r in records if r.failed]
    images = _collect_images(ev, {r.id for r in mismatches[:max_images]})
    model = report.get("model") or {}
    out = ["<!doctype html><html><head><meta charset='utf-8'>"
           "<meta name='viewport' content='width=device-width,initial-scale=1'>",
           f"<title>{esc(report['benchmark'])} evaluation</title><style>{_CSS}</style></head><body>",
           f"<h1>{esc(report['benchmark'])}: {_pct(report['accuracy'])}% <span class='muted'>({esc(report['protocol'])})"
           "</span></h1>",
           f"<p>model <code>{esc(str(model.get('model') or '?'))}</code>, mode {esc(report['settings']['mode'])}, "
           f"swap {report['settings']['swap']}; {report['n']} pairs, {report['n_failed']} failed (counted as wrong), "
           f"{report['n_unknown_label']} unknown labels.</p>",
           f"<p>{esc(report['protocol_description'])}</p>",
           "<table><tr><th>protocol</th><th>accuracy %</th><th>95% CI</th><th>correct / total</th><th>epsilon</th></tr>"]
    for name, p in report["protocols"].items():
        eps = "" if p.get("epsilon") is None else f"{p['epsilon']:g}"
        out.append(f"<tr><td title='{esc(p['description'])}'>{esc(name)}</td><td>{_pct(p['accuracy'])}</td>"
                   f"<td>{_ci(p['ci95'])}</td><td>{p['correct']:g} / {p['total']:g}</td><td>{eps}</td></tr>")
    out.append("</table>")
    if "__error__" in images:
        out.append(f"<p class='bad'>Images could not be read again: {images['__error__']['source'][0]}</p>")
    rule = ("at the calibrated epsilon " + f"{official.epsilon:g}" if official.calibrated else "under the official protocol")
    out.append(f"<h2>Mismatches ({len(mismatches)})</h2><p class='muted'>Pairs judged wrong {esc(rule)}.</p>")
    for r in mismatches:
        row = rows.get(r.id, {})
        verdicts = ", ".join(f"order {o.get('order')}: {o.get('winner')} (margin {o.get('margin')})"
                             for o in row.get("orders") or [])
        out.append(f"<section class='item' id='item-{esc(r.id)}'><h3>{esc(r.id)}</h3>")
        out.append(f"<p>human: <b>{esc(str(r.label))}</b> &middot; model: <b>{esc(str(r.prediction))}</b> "
                   f"(margin {r.margin}: {esc(margin_unit(report['settings']['mode'], report['settings']['swap']))})"
                   f" &middot; {esc(verdicts)}"
                   + (f" &middot; category {esc(r.category)}" if r.category else "") + "</p>")
        if row.get("prompt"):
            out.append(f"<p><i>{esc(str(row['prompt']))}</i></p>")
        imgs = images.get(r.id)
        if imgs:
            out.append("<div class='imgs'>")
            for role in ("source", "A", "B"):
                for i, tag in enumerate(imgs[role]):
                    label = f"image {role}" if role != "source" else (f"source {i + 1}" if len(imgs[role]) > 1 else "source")
                    out.append(f"<figure>{tag}<figcaption>{esc(label)}</figcaption></figure>")
            out.append("</div>")
        for o in row.get("orders") or []:
            out.append(f"<details><summary>critique, order {esc(str(o.get('order')))} "
                       f"({'A shown first' if o.get('first') == 'A' else 'B shown first'})</summary>"
                       f"<pre>{esc(o.get('raw') or '')}</pre></details>")
        out.append("</section>")
    out.append(f"<h2>Failures ({len(failures)})</h2>")
    if failures:
        out.append("<table><tr><th>id</th><th>kind</th><th>reason</th></tr>")
        out += [f"<tr id='failed-{esc(r.id)}'><td>{esc(r.id)}</td><td>{esc(str(r.error_kind))}</td>"
                f"<td>{esc(r.error or '')}</td></tr>" for r in failures]
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# -- comparing runs -----------------------------------------------------------------------------------------
def load_report(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise InputFileError(f"no report found: {p} (run `rationalrewards eval` with --out {p.parent} first)")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{p}: not valid JSON ({exc.msg})") from None


def compare_reports(paths: Sequence[str | Path], *, exclude_failed: bool = False) -> dict[str, Any]:
    """Several runs side by side: one column per run, one row per metric.

    Protocols present in only some runs show ``None`` elsewhere; runs on different benchmarks
    can be listed together but their rows are not comparable (the ``benchmark`` row says so).
    """
    reports = [load_report(p) for p in paths]
    names = [Path(p).name if Path(p).is_dir() else Path(p).parent.name for p in paths]
    protocols: list[str] = []
    for r in reports:
        protocols += [k for k in r.get("protocols", {}) if k not in protocols]
    rows: list[tuple[str, list[Any]]] = [
        ("benchmark", [r.get("benchmark") for r in reports]),
        ("model", [(r.get("model") or {}).get("model") for r in reports]),
        ("mode / swap", [f"{r['settings']['mode']} / {'swap' if r['settings']['swap'] else 'one order'}" for r in reports]),
        ("official protocol", [r.get("protocol") for r in reports]),
        ("accuracy (official)", [r.get("accuracy") for r in reports]),
        ("95% CI", [r.get("ci95") for r in reports]),
        ("accuracy_no_ties", [r.get("accuracy_no_ties") for r in reports]),
    ]
    for name in protocols:
        rows.append((f"{name}", [(r.get("protocols", {}).get(name) or {}).get("accuracy") for r in reports]))
        if exclude_failed:
            rows.append((f"{name} (excl. failed)",
                         [((r.get("protocols", {}).get(name) or {}).get("excluding_failed") or {}).get("accuracy")
                          for r in reports]))
        if any((r.get("protocols", {}).get(name) or {}).get("epsilon") is not None for r in reports):
            rows.append((f"{name} epsilon", [(r.get("protocols", {}).get(name) or {}).get("epsilon") for r in reports]))
    rows += [
        ("n", [r.get("n") for r in reports]),
        ("n_failed", [r.get("n_failed") for r in reports]),
        ("parse_failure_rate", [r.get("parse_failure_rate") for r in reports]),
        ("position_bias", [(r.get("position_bias") or {}).get("rate") for r in reports]),
        ("items/s", [(r.get("throughput") or {}).get("items_per_s") for r in reports]),
        ("completion tokens / judgement", [(r.get("tokens") or {}).get("per_judgement_completion") for r in reports]),
    ]
    comparable = len({r.get("benchmark") for r in reports}) == 1
    return {"runs": [{"name": n, "path": str(p)} for n, p in zip(names, paths, strict=True)],
            "rows": [{"metric": m, "values": v} for m, v in rows], "comparable": comparable}
