"""``summary.json`` and ``report.html`` of a demo run.

The summary is the machine-readable record that CI asserts on (``student.accuracy``,
``student.parse_rate``, the filter's error rates, the refinement rewards) and that the README
quotes; the report shows the same numbers with pictures: example pairs with the student's
critiques, the filter's statistics and examples, accuracy per category, and the refinement
trajectories. Images are embedded as base64 thumbnails, so the HTML file stands alone.
"""

from __future__ import annotations

import base64
import html
import json
import os
import platform
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..io import atomic_write_text
from .layout import RunFolder

#: Targets of the issue, checked on the default budget; ``--quick`` reports them too (CI asserts
#: looser bounds on it).
TARGETS = {"student_accuracy": 0.75, "student_parse_rate": 0.95}
#: The issue's accuracy floor for the ``--quick`` budget (asserted in CI by tests/test_demo.py).
QUICK_ACCURACY = 0.6


def accuracy_target(quick: bool) -> float:
    """The student accuracy a run of this budget is held to."""
    return QUICK_ACCURACY if quick else TARGETS["student_accuracy"]


def _get(d: dict[str, Any] | None, *path: str) -> Any:
    cur: Any = d
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


def build_summary(run: RunFolder) -> dict[str, Any]:
    """The summary of a finished run (every stage before ``report`` done), read from its folder."""
    config = run.config
    cfg = SimpleNamespace(**config)
    world, parrot, student = run.result("world"), run.result("parrot"), run.result("student")
    ev, ref = run.result("eval"), run.result("refine")
    stages = run.state["stages"]
    timing = {name: stages[name]["seconds"] for name in stages if name != "report" and stages[name].get("done")}
    timing["total"] = round(sum(timing.values()), 2)
    errors = parrot.get("rationale_errors", {})
    raw_err, kept_err = _get(errors, "raw", "error_rate"), _get(errors, "kept", "error_rate")
    st = ev.get("student", {})
    tr = ref.get("true_reward", {})
    targets = {
        "student_accuracy": _target(st.get("accuracy"), ">=", accuracy_target(bool(cfg.quick))),
        "student_parse_rate": _target(st.get("parse_rate"), ">=", TARGETS["student_parse_rate"]),
        "filter_lowers_rationale_errors": _target(kept_err, "<", raw_err),
        "refine_beats_round0_true_reward": _target(tr.get("final_best"), ">", tr.get("round0_best")),
        "refine_beats_best_of_n_true_reward": _target(tr.get("final_best"), ">", tr.get("best_of_n")),
    }
    return {
        "version": 1,
        "command": "rationalrewards demo" + (" --quick" if cfg.quick else ""),
        "quick": cfg.quick,
        "config": config,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "timing_s": timing,
        "world": world,
        "parrot": parrot,
        "filter": {"teacher_noise": cfg.teacher_noise, "used": cfg.filter, "raw_error_rate": raw_err,
                   "kept_error_rate": kept_err, "raw_rationales": _get(errors, "raw", "n"),
                   "kept_rationales": _get(errors, "kept", "n"),
                   "raw_scores_contradict_label": _get(errors, "raw", "scores_contradict_label")},
        "student": {
            "accuracy": st.get("accuracy"), "parse_rate": st.get("parse_rate"), "n": st.get("n"),
            "n_failed": st.get("n_failed"), "accuracy_no_ties": st.get("accuracy_no_ties"), "ci95": st.get("ci95"),
            "protocol": st.get("protocol"), "mode": config.get("eval_mode", "pairwise"),
            "by_category": st.get("by_category"),
            "decided_share": st.get("decided_share"), "accuracy_when_decided": st.get("accuracy_when_decided"),
            "claims": st.get("claims"),
            "pointwise_parse_rate": ref.get("critique_parse_rate"),
            "model": {"architecture": _architecture(student.get("base_kind")),
                      **(student.get("model") or {"hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
                                                  "vocab_size": cfg.vocab_size}),
                      "image_size": cfg.image_size, "trainable_params": student.get("trainable_params")},
            "train": _pick(student, ("trainer", "train_examples", "train_loss", "global_step", "seconds", "resumed_from",
                                     "prep_seconds", "train_seconds", "examples_per_second")),
            "vision_pretraining": student.get("vision_pretraining"),
            "learning_curve": ev.get("learning_curve"),
        },
        "base": {"kind": student.get("base_kind"), "sha256": student.get("base_sha256"),
                 "pretraining": student.get("base_pretraining"), "zero_shot": ev.get("base_zero_shot")},
        "teacher_reference": ev.get("teacher"),
        "refine": {k: v for k, v in ref.items() if k != "items"} | {"items": [
            {k: m.get(k) for k in ("id", "prompt", "round0", "final", "best_of_n", "round_true_mean", "requests",
                                   "error")} for m in ref.get("items", [])]},
        "targets": targets,
        "notes": _notes(cfg, targets, st, errors, ref),
    }


def _architecture(kind: str | None) -> str:
    if kind == "scratch":
        return "Qwen3-VL (tiny; vision tower pretrained on the world's scenes, language model trained from scratch)"
    return ("Qwen3-VL (tiny; pretrained base: vision tower and language model trained on generic vision-language "
            "tasks of the world, then PARROT SFT)")


def _pick(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: d.get(k) for k in keys if k in d}


def _target(value: Any, op: str, bound: Any) -> dict[str, Any]:
    if value is None or bound is None:
        met = None
    elif op == ">=":
        met = value >= bound
    elif op == ">":
        met = value > bound
    else:
        met = value < bound
    return {"value": value, "op": op, "bound": bound, "met": met}


def _weakest_claims(claims: dict[str, Any] | None) -> str:
    """The dimensions where the student's claims are most often wrong, as a sentence tail."""
    if not claims:
        return ""
    # Gain over the majority floor: what the student has learnt about each dimension.
    worst = sorted(claims.items(), key=lambda kv: kv[1]["accuracy"] - kv[1].get("majority", 0.0))[:3]
    return ("; its claims gain least over always writing the most common claim on "
            + ", ".join(f"{k} ({v['accuracy']:.2f} vs {v.get('majority', 0.0):.2f})" for k, v in worst)
            + " (student.claims)")


def _notes(cfg: Any, targets: dict[str, Any], st: dict[str, Any], errors: dict[str, Any],
           ref: dict[str, Any]) -> list[str]:
    """Plain statements of what limits a target that was not met."""
    notes = []
    if targets["student_accuracy"]["met"] is False:
        notes.append(
            f"student accuracy {st.get('accuracy')} is below {accuracy_target(bool(cfg.quick))}: the student is a tiny "
            f"Qwen3-VL ({'language model from scratch' if cfg.base == 'scratch' else 'the pretrained base'}) trained "
            f"for {cfg.max_steps} steps of {cfg.batch_size} examples on two CPU cores; see by_category and "
            "student.learning_curve for what it has not learnt yet" + _weakest_claims(st.get("claims")))
    if targets["student_parse_rate"]["met"] is False:
        notes.append(f"parse rate {st.get('parse_rate')} is below {TARGETS['student_parse_rate']}: more training steps "
                     "make the format stick; failures are counted as wrong answers, never dropped")
    if targets["refine_beats_round0_true_reward"]["met"] is False or targets["refine_beats_best_of_n_true_reward"]["met"] is False:
        tc = (ref.get("teacher_critic") or {}).get("true_reward") or {}
        notes.append(
            "refinement with the student as critic is limited by the student's critiques (it accepts a new image only "
            "when its own reward rises, and often already rates round 0 as flawless); with the noisy teacher as critic "
            f"on the same requests the true reward goes {tc.get('round0_best')} (round 0) -> {tc.get('final_best')} "
            f"(final) vs {tc.get('best_of_n')} (best-of-N at equal generations)")
    if targets["filter_lowers_rationale_errors"]["met"] is False:
        notes.append("the filter did not lower the rationale error rate in this run; with few pairs the rates are noisy")
    if cfg.quick:
        notes.append("--quick trains for a fraction of the default budget; its numbers show that the pipeline runs and "
                     "learns, not how well the default budget does")
    return notes


# ------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;display:block;overflow-x:auto;max-width:100%} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4} .ok{color:#17803d;font-weight:600} .bad{color:#b42318;font-weight:600} .na{color:#777}
img.t{width:96px;height:96px;image-rendering:pixelated;border:1px solid #ccc;margin:2px}
pre{background:#f7f7f7;padding:6px;font-size:11px;white-space:pre-wrap;overflow-wrap:anywhere;max-width:520px;margin:0}
.card{display:flex;flex-wrap:wrap;gap:12px;border:1px solid #e3e3e3;padding:8px;margin:8px 0;border-radius:6px}
.card>div{min-width:0;max-width:100%} .figs{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
figure{margin:0} figcaption{font-size:12px;color:#555;max-width:120px;overflow-wrap:anywhere} p,b{overflow-wrap:anywhere}
@media (max-width:600px){body{margin:12px}}
.small{font-size:12px;color:#555}
"""


def _img(path: Path, title: str = "") -> str:
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return f'<span class="na">[missing {html.escape(path.name)}]</span>'
    return f'<img class="t" title="{html.escape(title)}" src="data:image/png;base64,{data}">'


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return '<span class="na">n/a</span>'
    if isinstance(v, bool):
        return '<span class="ok">yes</span>' if v else '<span class="bad">no</span>'
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _targets_table(summary: dict[str, Any]) -> str:
    rows = []
    for name, t in summary["targets"].items():
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(t['value'])}</td><td>{html.escape(t['op'])} "
                    f"{_fmt(t['bound'])}</td><td>{_fmt(t['met'])}</td></tr>")
    return "<table><tr><th>measure</th><th>value</th><th>target</th><th>met</th></tr>" + "".join(rows) + "</table>"


def _pairs_section(run: RunFolder, limit: int = 8) -> str:
    world = run.world_dir / "heldout"
    pairs = {r["id"]: r for r in _read_jsonl(world / "pairs.jsonl")}
    truth = {r["id"]: r for r in _read_jsonl(world / "truth.jsonl")}
    results = _read_jsonl(run.eval_dir / "student" / "results.jsonl")
    cards = []
    for res in results[:limit]:
        p = pairs.get(res["id"])
        if p is None:
            continue
        t = truth.get(res["id"], {})
        figs = ([("source", p["source"])] if p.get("source") else []) + [("image A", p["image_a"]), ("image B", p["image_b"])]
        imgs = "<div class='figs'>" + "".join(f"<figure>{_img(world / rel, cap)}<figcaption>{cap}</figcaption></figure>"
                                               for cap, rel in figs) + "</div>"
        raw = ""
        if res.get("orders"):
            raw = res["orders"][0].get("raw") or ""
        verdict = "correct" if res.get("prediction") == res.get("label") else "wrong"
        cls = "ok" if verdict == "correct" else "bad"
        cards.append(
            f'<div class="card"><div>{imgs}</div><div><b>{html.escape(p["prompt"])}</b><br>'
            f'<span class="small">category {html.escape(p.get("category", ""))} &middot; true defects A: '
            f'{html.escape(", ".join(t.get("defects_a", [])) or "none")}; B: '
            f'{html.escape(", ".join(t.get("defects_b", [])) or "none")} &middot; label {html.escape(p["label"])} '
            f'&middot; student says {html.escape(str(res.get("prediction")))} (<span class="{cls}">{verdict}</span>)'
            f'</span><pre>{html.escape(raw or res.get("error") or "")}</pre></div></div>')
    return "".join(cards)


def _filter_section(run: RunFolder, summary: dict[str, Any]) -> str:
    p = summary.get("parrot", {})
    f = summary.get("filter", {})
    rows = []
    for kind in ("pairwise", "pointwise"):
        d = p.get(kind) or {}
        reasons = ", ".join(f"{k}: {v}" for k, v in (d.get("rejected_by_reason") or {}).items()) or "none"
        rows.append(f"<tr><td>{kind}</td><td>{_fmt(d.get('rationales'))}</td><td>{_fmt(d.get('kept'))}</td>"
                    f"<td>{_fmt(d.get('rejected'))}</td><td>{html.escape(reasons)}</td></tr>")
    table = ("<table><tr><th>kind</th><th>rationales</th><th>kept</th><th>rejected</th><th>rejected by reason</th></tr>"
             + "".join(rows) + "</table>")
    errs = (f"<p>Teacher noise {_fmt(f.get('teacher_noise'), 2)}. Rationales whose claimed defects differ from the "
            f"truth: <b>raw {_fmt(f.get('raw_error_rate'))}</b> ({_fmt(f.get('raw_rationales'))} rationales) &rarr; "
            f"<b>kept {_fmt(f.get('kept_error_rate'))}</b> ({_fmt(f.get('kept_rationales'))}). Raw rationales whose "
            f"own scores contradict the label: {_fmt(f.get('raw_scores_contradict_label'))}.</p>")
    examples = []
    rejected = [r for r in _read_jsonl(run.parrot_dir / "filtered.jsonl") if r.get("reason") in
                ("repredict_wrong", "inconsistent")][:2]
    anchored = {r["key"]: r for r in _read_jsonl(run.parrot_dir / "anchored.jsonl")} if rejected else {}
    train_world = run.world_dir / "train"
    train_pairs = {x["id"]: x for x in _read_jsonl(train_world / "pairs.jsonl")} if rejected else {}
    for r in rejected:
        raw = anchored.get(r["key"], {}).get("raw") if r["kind"] == "pairwise" else None
        if raw:
            pair = train_pairs.get(r["id"]) or {}
            figs = ([("source", pair["source"])] if pair.get("source") else []) + [
                (cap, pair[key]) for cap, key in (("image A", "image_a"), ("image B", "image_b")) if pair.get(key)]
            imgs = "<div class='figs'>" + "".join(f"<figure>{_img(train_world / rel, cap)}<figcaption>{cap}</figcaption>"
                                                   "</figure>" for cap, rel in figs) + "</div>"
            examples.append(f"<p class='small'>rejected ({html.escape(r['reason'])}), pair {html.escape(r['id'])}, "
                            f"label {html.escape(str(r.get('shown_label')))} as shown:</p>"
                            f"<div class='card'>{imgs if figs else ''}<pre>{html.escape(raw)}</pre></div>")
    return table + errs + "".join(examples)


def _student_section(summary: dict[str, Any]) -> str:
    st = summary.get("student", {})
    te = summary.get("teacher_reference") or {}
    rows = []
    cats = sorted(set(st.get("by_category") or {}) | set(te.get("by_category") or {}))
    for c in cats:
        s = (st.get("by_category") or {}).get(c, {})
        t = (te.get("by_category") or {}).get(c, {})
        rows.append(f"<tr><td>{html.escape(c)}</td><td>{_fmt(s.get('n'))}</td><td>{_fmt(s.get('accuracy'))}</td>"
                    f"<td>{_fmt(t.get('accuracy'))}</td></tr>")
    train = st.get("train", {})
    model = st.get("model", {})
    return (f"<p>Student: {html.escape(str(model.get('architecture')))}, hidden {model.get('hidden_size')}, "
            f"{model.get('num_layers')} layers, {model.get('trainable_params')} parameters, trained for "
            f"{train.get('global_step')} steps on {train.get('train_examples')} examples "
            f"(mean training loss over all steps {_fmt(train.get('train_loss'))}, {_fmt(train.get('seconds'), 1)} s).</p>"
            f"<p>Held-out accuracy <b>{_fmt(st.get('accuracy'))}</b> ({html.escape(str(st.get('mode') or 'pairwise'))} "
            f"judging, n={st.get('n')}, failed "
            f"{st.get('n_failed')}, protocol: {html.escape(str(st.get('protocol')))}); parse rate "
            f"<b>{_fmt(st.get('parse_rate'))}</b>; it named a winner for {_fmt(st.get('decided_share'))} of the pairs "
            f"and was right on {_fmt(st.get('accuracy_when_decided'))} of those; pointwise critiques parsed during "
            "refinement: "
            f"{_fmt(st.get('pointwise_parse_rate'))}. Noisy teacher on the same pairs: {_fmt(te.get('accuracy'))}.</p>"
            "<table><tr><th>category</th><th>n</th><th>student accuracy</th><th>teacher accuracy</th></tr>"
            + "".join(rows) + "</table>" + _claims_table(st.get("claims"), te.get("claims")))


def _base_section(summary: dict[str, Any]) -> str:
    base = summary.get("base") or {}
    st = summary.get("student", {})
    pre = base.get("pretraining") or {}
    acc = pre.get("heldout_accuracy") or {}
    parts = []
    if acc:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v.get('n'))}</td><td>{_fmt(v.get('exact'))}</td>"
                       f"<td>{_fmt(v.get('yes_no'))}</td></tr>" for k, v in acc.items())
        parts.append("<p>Held-out accuracy of the base on its pretraining tasks (exact answer; yes/no part):</p>"
                     "<table><tr><th>task</th><th>n</th><th>exact</th><th>yes/no</th></tr>" + rows + "</table>")
    zs = base.get("zero_shot") or {}
    if zs:
        cats = sorted(set(zs.get("by_category") or {}) | set(st.get("by_category") or {}))
        rows = "".join(
            f"<tr><td>{html.escape(c)}</td><td>{_fmt(((zs.get('by_category') or {}).get(c) or {}).get('accuracy'))}"
            f"</td><td>{_fmt(((st.get('by_category') or {}).get(c) or {}).get('accuracy'))}</td></tr>" for c in cats)
        parts.append(f"<p>The base zero-shot as a judge (same prompts, before PARROT): accuracy "
                     f"<b>{_fmt(zs.get('accuracy'))}</b>, parse rate {_fmt(zs.get('parse_rate'))}; after PARROT "
                     f"<b>{_fmt(st.get('accuracy'))}</b>.</p><table><tr><th>category</th><th>base zero-shot</th>"
                     "<th>PARROT student</th></tr>" + rows + "</table>")
    curve = st.get("learning_curve") or {}
    if curve.get("points"):
        dims = sorted({d for p in curve["points"] for d in (p.get("claims") or {})})
        head = "".join(f"<th>{html.escape(d)}</th>" for d in dims)
        rows = "".join(
            f"<tr><td>{p['step']}</td><td>{_fmt(p.get('accuracy'))}</td><td>{_fmt(p.get('decided_share'))}</td>"
            + "".join(f"<td>{_fmt((p.get('claims') or {}).get(d))}</td>" for d in dims) + "</tr>"
            for p in curve["points"])
        parts.append(f"<p>Learning curve on the first {curve.get('pairs')} held-out pairs (step 0 is the base): "
                     "accuracy, share of pairs with a winner named, and claims exactly right per dimension.</p>"
                     f"<table><tr><th>step</th><th>accuracy</th><th>decided</th>{head}</tr>{rows}</table>")
    return "".join(parts) or "<p class='na'>no pretrained base in this run</p>"


def _claims_table(student: dict[str, Any] | None, teacher: dict[str, Any] | None) -> str:
    if not student:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v.get('n'))}</td><td>{_fmt(v.get('accuracy'))}</td>"
        f"<td>{_fmt(v.get('majority'))}</td><td>{_fmt(((teacher or {}).get(k) or {}).get('accuracy'))}</td></tr>"
        for k, v in student.items())
    return ("<p>Claims exactly right per image and dimension (the defects a justification names against the true "
            "ones; 'nothing wrong' included; 'always the most common' is the floor of a judge that learnt nothing "
            "there):</p><table><tr><th>task/dimension</th><th>images</th><th>student</th>"
            "<th>always the most common</th><th>teacher</th></tr>" + rows + "</table>")


def _refine_section(run: RunFolder, summary: dict[str, Any]) -> str:
    ref = summary.get("refine", {})
    sr, tr = ref.get("student_reward") or {}, ref.get("true_reward") or {}
    tt = _get(ref, "teacher_critic", "true_reward") or {}
    head = ("<table><tr><th></th><th>round 0 best</th><th>final best</th><th>best-of-N (equal generations)</th></tr>"
            f"<tr><td>student reward</td><td>{_fmt(sr.get('round0_best'))}</td><td>{_fmt(sr.get('final_best'))}</td>"
            f"<td>{_fmt(sr.get('best_of_n'))}</td></tr>"
            f"<tr><td>true reward</td><td>{_fmt(tr.get('round0_best'))}</td><td>{_fmt(tr.get('final_best'))}</td>"
            f"<td>{_fmt(tr.get('best_of_n'))}</td></tr>"
            f"<tr><td>true reward, noisy teacher as critic</td><td>{_fmt(tt.get('round0_best'))}</td>"
            f"<td>{_fmt(tt.get('final_best'))}</td><td>{_fmt(tt.get('best_of_n'))}</td></tr></table>"
            f"<p class='small'>Request quality (mean true reward of 64 draws for the request): original "
            f"{_fmt(_get(ref, 'request_quality', 'original'))}, final with the student "
            f"{_fmt(_get(ref, 'request_quality', 'final'))}, final with the teacher "
            f"{_fmt(_get(ref, 'teacher_critic', 'request_quality', 'final'))}.</p>"
            f"<p class='small'>{ref.get('n')} requests, {ref.get('rounds')} refinement round(s) of "
            f"{ref.get('candidates')} candidates; generations: refine {_get(ref, 'generations', 'refine')}, best-of-N "
            f"{_get(ref, 'generations', 'best_of_n')}.</p>")
    cards = []
    from ..refine.trajectory import load_trajectory

    for item in ref.get("items", []):
        traj = load_trajectory(run.refine_dir / item["id"])
        if traj is None:
            continue
        folder = run.refine_dir / item["id"]
        rounds = []
        for rnd in traj.rounds:
            imgs = "<div class='figs'>" + "".join(
                f"<figure>{_img(folder / c.image, 'candidate')}<figcaption>student reward {_fmt(c.reward, 2)}"
                "</figcaption></figure>" for c in rnd.candidates if c.image) + "</div>"
            rounds.append(f"<div><span class='small'>round {rnd.round}{' (accepted)' if rnd.accepted else ''}: "
                          f"{html.escape(rnd.request)}</span><br>{imgs}</div>")
        true_means = ", ".join(f"{v:.2f}" for v in item.get("round_true_mean") or [])
        cards.append(f"<div class='card'><div><b>{html.escape(traj.prompt)}</b><br><span class='small'>mean true reward "
                     f"per round: {true_means}</span>{''.join(rounds)}</div></div>")
    return head + "".join(cards)


def write_report(run: RunFolder, summary: dict[str, Any], path: str | Path) -> None:
    """Write the self-contained HTML report."""
    t = summary.get("timing_s", {})
    timing = ", ".join(f"{k} {v:.0f}s" for k, v in t.items())
    body = [
        "<h1>RationalRewards demo</h1>",
        f"<p class='small'>{html.escape(summary['command'])} &middot; {timing} &middot; "
        f"{summary['machine']['cpus']} CPUs</p>",
        "<h2>Targets</h2>", _targets_table(summary),
        *[f"<p class='small'>{html.escape(n)}</p>" for n in summary.get("notes", [])],
        "<h2>Held-out pairs and the student's critiques</h2>", _pairs_section(run),
        "<h2>PARROT's filter</h2>", _filter_section(run, summary),
        "<h2>Student accuracy</h2>", _student_section(summary),
        "<h2>The base before PARROT, and the learning curve</h2>", _base_section(summary),
        "<h2>Generate-Critique-Refine with the student as critic</h2>", _refine_section(run, summary),
    ]
    doc = ("<!doctype html><html><head><meta charset='utf-8'>"
           "<meta name='viewport' content='width=device-width,initial-scale=1'>"
           f"<title>RationalRewards demo</title><style>{_CSS}</style>"
           f"</head><body>{''.join(body)}</body></html>")
    atomic_write_text(path, doc)
