"""``DIR/stats.json`` and ``DIR/summary.md``, computed from the output files alone.

Because every number comes from the files (never from in-memory counters of one invocation), a
run that was interrupted and resumed reports exactly what an uninterrupted run reports; only the
``last_run`` timing block describes the latest invocation.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from typing import Any

from ..critique.dimensions import keys_for
from .checks import REASONS
from .config import ParrotConfig
from .layout import ParrotFolder
from .store import iter_jsonl

_BINS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)


def _hist(values: list[float]) -> dict[str, int]:
    """Counts per half-point bin: "1.0" counts [1.0, 1.5), ..., "3.5" counts [3.5, 4.0]."""
    out = {f"{b:.1f}": 0 for b in _BINS[:-1]}
    for v in values:
        b = min(3.5, max(1.0, int(v * 2) / 2))
        out[f"{b:.1f}"] += 1
    return out


def _dist(values: list[float], na: int) -> dict[str, Any]:
    if not values:
        return {"n": 0, "na": na, "mean": None, "std": None, "hist": _hist([])}
    return {"n": len(values), "na": na, "mean": round(statistics.fmean(values), 4),
            "std": round(statistics.pstdev(values), 4), "hist": _hist(values)}


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def compute_stats(folder: ParrotFolder, cfg: ParrotConfig) -> dict[str, Any]:
    """Every number of ``stats.json`` from the files in ``folder`` and the run's settings ``cfg``."""
    out = folder.out
    stats: dict[str, Any] = {"out": str(out)}

    # -- input ------------------------------------------------------------------------------------
    pairs = list(iter_jsonl(folder.pairs_path))
    bad = list(iter_jsonl(folder.bad_path))
    labels = Counter(p["label"] for p in pairs)
    stats["pairs"] = {
        "in": len(pairs) + len(bad),
        "ok": len(pairs),
        "bad": len(bad),
        "bad_reasons": dict(sorted(Counter(b["reason"] for b in bad).items())),
        "ties": labels.get("tie", 0),
        "ties_used": bool(cfg.input.include_ties),
        "used": sum(1 for p in pairs if p["label"] != "tie" or cfg.input.include_ties),
        "labels": dict(sorted(labels.items())),
        "by_task": dict(sorted(Counter(p["task"] for p in pairs).items())),
    }

    # -- anchor ------------------------------------------------------------------------------------
    tokens: dict[str, Counter[str]] = defaultdict(Counter)
    a_counts: Counter[str] = Counter()
    implied_a = shown_a = parsed_pw = 0
    for row in iter_jsonl(folder.anchored_path):
        kind = row["kind"]
        a_counts[f"{kind}_calls"] += 1
        if not row.get("generated"):
            a_counts["failed"] += 1
            continue
        a_counts["generated"] += 1
        a_counts[f"{kind}_generated"] += 1
        if not row.get("parse_ok"):
            a_counts[f"{kind}_unparseable"] += 1
        if row.get("finish_reason") == "length":
            a_counts["truncated"] += 1
        u = row.get("usage") or {}
        tokens["anchor"]["prompt_tokens"] += u.get("prompt_tokens", 0)
        tokens["anchor"]["completion_tokens"] += u.get("completion_tokens", 0)
        if kind == "pairwise" and row.get("parse_ok"):
            parsed_pw += 1
            implied_a += row.get("implied") == "A"
            shown_a += row.get("shown_label") == "A"
    stats["anchor"] = {
        "calls": a_counts["pairwise_calls"] + a_counts["pointwise_calls"],
        "generated": a_counts["generated"],
        "failed_pending_retry": a_counts["failed"],
        "truncated_at_max_tokens": a_counts["truncated"],
        "pairwise": {"generated": a_counts["pairwise_generated"], "unparseable": a_counts["pairwise_unparseable"]},
        "pointwise": {"generated": a_counts["pointwise_generated"], "unparseable": a_counts["pointwise_unparseable"]},
        "samples": cfg.anchor.samples,
        "pointwise_samples": cfg.pointwise_samples if cfg.anchor.pointwise else 0,
        "orders": cfg.anchor.orders,
    }

    # -- repredict tokens ---------------------------------------------------------------------------
    rp_calls = rp_failed = 0
    for row in iter_jsonl(folder.repredict_path):
        rp_calls += 1
        if not row.get("generated"):
            rp_failed += 1
            continue
        u = row.get("usage") or {}
        tokens["repredict"]["prompt_tokens"] += u.get("prompt_tokens", 0)
        tokens["repredict"]["completion_tokens"] += u.get("completion_tokens", 0)

    # -- filter --------------------------------------------------------------------------------------
    f_counts: dict[str, Counter[str]] = {"pairwise": Counter(), "pointwise": Counter()}
    rejected: Counter[str] = Counter()
    kept_pairs: dict[str, set[str]] = {"pairwise": set(), "pointwise": set()}
    dims: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    na: Counter[str] = Counter()
    rp = Counter()
    n_filtered = 0
    for row in iter_jsonl(folder.filtered_path):
        n_filtered += 1
        kind = row["kind"]
        c = f_counts[kind]
        c["rationales"] += 1
        if row.get("pending"):
            c["pending"] += 1
            continue
        if row.get("kept"):
            c["kept"] += 1
            kept_pairs[kind].add(row["id"])
            _collect_scores(row, dims, na)
        elif row.get("reason") == "not_selected":
            c["passed_not_selected"] += 1
        else:
            c["rejected"] += 1
            rejected[f"{kind}:{row['reason']}"] += 1
        for reason in row.get("reasons") or []:
            c[f"reason:{reason}"] += 1
        r = row.get("repredict")
        if r and r.get("orders"):
            first = r["orders"][0]
            exp = r.get("expected")
            rp["n"] += 1
            rp["label_A"] += exp == "A"
            rp["pred_A"] += first.get("predicted") == "A"
            rp[f"correct_when_{exp}"] += first.get("predicted") == exp
            rp[f"n_when_{exp}"] += 1
            if len(r["orders"]) > 1:
                rp["both_orders"] += 1
                rp["order_disagreement"] += r["orders"][0].get("predicted") != r["orders"][1].get("predicted")
    filt: dict[str, Any] = {"rationales": n_filtered}
    for kind in ("pairwise", "pointwise"):
        c = f_counts[kind]
        filt[kind] = {
            "rationales": c["rationales"],
            "kept": c["kept"],
            "passed_not_selected": c["passed_not_selected"],
            "rejected": c["rejected"],
            "pending": c["pending"],
            "rejected_by_reason": {r: c[f"reason:{r}"] for r in REASONS if r != "not_selected" and c[f"reason:{r}"]},
            "first_reason": {r.split(":", 1)[1]: n for r, n in sorted(rejected.items()) if r.startswith(kind + ":")},
            "pairs_with_kept": len(kept_pairs[kind]),
            "keep_rate": _rate(c["kept"] + c["passed_not_selected"], c["rationales"] - c["pending"]),
        }
    filt["kept"] = f_counts["pairwise"]["kept"] + f_counts["pointwise"]["kept"]
    filt["rejected"] = f_counts["pairwise"]["rejected"] + f_counts["pointwise"]["rejected"]
    filt["pending"] = f_counts["pairwise"]["pending"] + f_counts["pointwise"]["pending"]
    filt["repredict_calls"] = rp_calls
    filt["repredict_failed_pending_retry"] = rp_failed
    filt["select"] = cfg.filter.select
    stats["filter"] = filt

    # -- distributions and bias -------------------------------------------------------------------
    stats["score_distributions"] = {
        "note": "kept rationales; preferred = the image the label prefers, other = the other one",
        **{group: {dim: _dist(vals, na[f"{group}:{dim}"]) for dim, vals in sorted(by_dim.items())}
           for group, by_dim in sorted(dims.items())},
    }
    stats["position_bias"] = {
        "anchor": {
            "note": "pairwise rationales that parsed; A = the image shown first",
            "n": parsed_pw,
            "shown_label_A_rate": _rate(shown_a, parsed_pw),
            "implied_A_rate": _rate(implied_a, parsed_pw),
        },
        "repredict": {
            "n": rp["n"],
            "label_A_rate": _rate(rp["label_A"], rp["n"]),
            "predicted_A_rate": _rate(rp["pred_A"], rp["n"]),
            "accuracy_when_label_A": _rate(rp["correct_when_A"], rp["n_when_A"]),
            "accuracy_when_label_B": _rate(rp["correct_when_B"], rp["n_when_B"]),
            "order_disagreement_rate": _rate(rp["order_disagreement"], rp["both_orders"]),
        },
    }

    # -- sft ---------------------------------------------------------------------------------------
    manifest_path = folder.sft_dir / "manifest.json"
    if manifest_path.is_file():
        m = json.loads(manifest_path.read_text(encoding="utf-8"))
        stats["sft"] = {"counts": m.get("counts"), "dropped": m.get("dropped")}

    # -- tokens and cost ---------------------------------------------------------------------------
    total_in = sum(t["prompt_tokens"] for t in tokens.values())
    total_out = sum(t["completion_tokens"] for t in tokens.values())
    stats["tokens"] = {
        "prompt": total_in,
        "completion": total_out,
        "by_phase": {phase: dict(t) for phase, t in sorted(tokens.items())},
    }
    pin, pout = cfg.teacher.price_input_per_mtok, cfg.teacher.price_output_per_mtok
    stats["cost"] = {
        "price_input_per_mtok": pin,
        "price_output_per_mtok": pout,
        "estimated_usd": None if pin is None and pout is None
        else round(total_in / 1e6 * (pin or 0.0) + total_out / 1e6 * (pout or 0.0), 4),
    }
    return stats


def _collect_scores(row: dict[str, Any], dims: dict[str, dict[str, list[float]]], na: Counter[str]) -> None:
    label = row.get("shown_label", row.get("label"))
    sa, sb = row.get("scores_a") or {}, row.get("scores_b") or {}
    if label == "tie":
        groups = (("tie", sa), ("tie", sb))
    elif label == "A":
        groups = (("preferred", sa), ("other", sb))
    else:
        groups = (("preferred", sb), ("other", sa))
    prefix = row["kind"]
    for group, scores in groups:
        for dim in keys_for(row["task"]):
            v = scores.get(dim)
            if v is None:
                na[f"{prefix}_{group}:{dim}"] += 1
                dims[f"{prefix}_{group}"].setdefault(dim, [])
            else:
                dims[f"{prefix}_{group}"][dim].append(float(v))


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def render_summary(stats: dict[str, Any]) -> str:
    """A short human-readable report (Markdown)."""
    p, a, f = stats["pairs"], stats["anchor"], stats["filter"]
    lines = [
        "# PARROT run summary",
        "",
        f"Output folder: `{stats['out']}`",
        "",
        "## Input",
        f"- pairs read: {p['in']} ({p['ok']} usable rows, {p['bad']} bad"
        + (": " + ", ".join(f"{k} {v}" for k, v in p["bad_reasons"].items()) if p["bad_reasons"] else "") + ")",
        f"- ties: {p['ties']} ({'used' if p['ties_used'] else 'kept aside, not trained on'}); "
        f"pairs sent to the teacher: {p['used']}",
        "",
        "## Phase 1: anchored generation",
        f"- teacher calls: {a['calls']} ({a['generated']} answered, {a['failed_pending_retry']} failed: rerun to retry; "
        f"{a['truncated_at_max_tokens']} cut at max_tokens)",
        f"- pairwise: {a['pairwise']['generated']} rationales ({a['pairwise']['unparseable']} unparseable); "
        f"pointwise: {a['pointwise']['generated']} critiques ({a['pointwise']['unparseable']} unparseable)",
        "",
        "## Phase 2: consistency filtering",
    ]
    for kind in ("pairwise", "pointwise"):
        k = f[kind]
        if not k["rationales"]:
            continue
        reasons = ", ".join(f"{r} {n}" for r, n in k["first_reason"].items()) or "none"
        lines.append(f"- {kind}: {k['rationales']} rationales, kept {k['kept']}, passed but not selected "
                     f"{k['passed_not_selected']}, rejected {k['rejected']} ({reasons}), pending {k['pending']}; "
                     f"pairs with a kept rationale: {k['pairs_with_kept']}; pass rate {_pct(k['keep_rate'])}")
    lines.append(f"- re-prediction calls: {f['repredict_calls']} ({f['repredict_failed_pending_retry']} failed)")
    pb = stats["position_bias"]
    lines += [
        "",
        "## Position bias (A = the image shown first)",
        f"- anchor: label on A {_pct(pb['anchor']['shown_label_A_rate'])}, "
        f"the rationale's scores favour A {_pct(pb['anchor']['implied_A_rate'])}",
        f"- re-prediction: predicts A {_pct(pb['repredict']['predicted_A_rate'])}; accuracy when A is right "
        f"{_pct(pb['repredict']['accuracy_when_label_A'])}, when B is right "
        f"{_pct(pb['repredict']['accuracy_when_label_B'])}; "
        f"order disagreement {_pct(pb['repredict']['order_disagreement_rate'])}",
    ]
    if "sft" in stats and stats["sft"].get("counts"):
        c = stats["sft"]["counts"]
        lines += ["", "## Phase 3: student data",
                  f"- train: {c['train']['examples']} examples ({c['train']['pairwise']} pairwise, "
                  f"{c['train']['pointwise']} pointwise) from {c['train']['pairs']} pairs",
                  f"- validation: {c['validation']['examples']} examples from {c['validation']['pairs']} pairs"]
    t, cost = stats["tokens"], stats["cost"]
    lines += ["", "## Teacher usage",
              f"- tokens: {t['prompt']} prompt + {t['completion']} completion",
              "- estimated cost: " + (f"${cost['estimated_usd']}" if cost["estimated_usd"] is not None
                                      else "not estimated (set teacher.price_input_per_mtok / price_output_per_mtok)")]
    return "\n".join(lines) + "\n"
