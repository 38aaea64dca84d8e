"""Accuracy protocols: pure functions from judged records to named, reproducible numbers.

Every protocol is computed over *units* (a pair, a pair's two order-judgements, or a K-way
group), each with a ``correct`` and ``total`` weight and a ``failed`` flag. Failed items (no
parseable verdict) are always in the denominator and never correct; the ``excluding_failed``
view drops them and says so. Tie-calibrated protocols (Deutsch et al., 2023) choose the tie
threshold epsilon on the score margin that maximises accuracy over the data and report it; their
bootstrap interval re-chooses epsilon in every resample, because choosing it is part of the
estimator.

Protocols
---------
``3way``                  prediction (A, B or tie at the run's tie tolerance) equals the label;
                          both kinds of human tie count as tie.
``no_ties``               pairs whose label is A or B only; a predicted tie is wrong.
``4way``                  GenAI-Bench: A, B, tie (good) or both bad; a predicted tie is "both bad"
                          when the mean reward of the two images is below ``bothbad_threshold``.
``both_orders``           MMRB2: every judged order counts as one judgement (the B-first verdict
                          mapped back to the caller's A/B); labels A/B only; ties are wrong.
``tie_calibrated``        3-way with tie <=> |margin| <= epsilon, epsilon chosen on the data.
``group``                 K-way rankings: a group is correct when every pair in it is (3-way).
``group_tie_calibrated``  the same with the tie threshold chosen on the data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .labels import three_way

INF = math.inf


@dataclass
class OrderView:
    """One judged order of a pair, in the caller's A/B (``first`` = the image shown first)."""

    ok: bool
    winner: str | None
    margin: float | None
    first: str
    error_kind: str | None = None
    scores_a: dict[str, float | None] = field(default_factory=dict)
    scores_b: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Record:
    """A pair with its ground truth and (if judged) the verdict."""

    id: str
    label: str
    category: str | None = None
    group: str | None = None
    judged: bool = False
    ok: bool = False
    prediction: str | None = None
    margin: float | None = None
    reward_a: float | None = None
    reward_b: float | None = None
    orders: list[OrderView] = field(default_factory=list)
    error_kind: str | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return not (self.judged and self.ok)


@dataclass
class Unit:
    key: str
    category: str | None
    failed: bool
    correct: float
    total: float
    # Calibrated protocols: the set of thresholds for which this unit is correct, [lo, hi).
    interval: tuple[float, float] | None = None
    # Multi-judgement units: (correct, total) over the judgements that did not fail, so the
    # excluding-failed view can skip single failed judgements (MMRB2's reference behaviour).
    ok_part: tuple[float, float] | None = None


@dataclass
class ProtocolResult:
    """A protocol's units and its headline number (failures counted as wrong)."""

    name: str
    description: str
    unit: str
    units: list[Unit]
    calibrated: bool = False
    epsilon: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> float:
        return sum(u.correct for u in self.units)

    @property
    def total(self) -> float:
        return sum(u.total for u in self.units)

    @property
    def accuracy(self) -> float | None:
        t = self.total
        return None if t == 0 else self.correct / t


# -- per-pair helpers ------------------------------------------------------------------------------
def pair_interval(label: str, margin: float | None, failed: bool) -> tuple[float, float]:
    """Thresholds epsilon for which the pair is right when tie <=> |margin| <= epsilon."""
    if failed or margin is None:
        return (0.0, 0.0)
    m = round(margin, 6)
    lab = three_way(label)  # type: ignore[arg-type]
    if lab == "tie":
        return (abs(m), INF)
    if (lab == "A" and m > 0) or (lab == "B" and m < 0):
        return (0.0, abs(m))
    return (0.0, 0.0)


def _nonempty(iv: tuple[float, float] | None) -> bool:
    return iv is not None and iv[0] < iv[1]


def best_threshold(units: Sequence[Unit], weights: Sequence[float] | None = None) -> tuple[float, float, float]:
    """(epsilon, correct weight, total weight) maximising the weight of units whose interval holds
    epsilon; the smallest such epsilon wins ties (the least tie-happy rule)."""
    w = list(weights) if weights is not None else [1.0] * len(units)
    total = sum(w)
    events: list[tuple[float, int, float]] = []
    for u, wu in zip(units, w, strict=True):
        if wu and _nonempty(u.interval):
            lo, hi = u.interval  # type: ignore[misc]
            events.append((lo, 1, wu))
            if hi != INF:
                events.append((hi, 0, -wu))  # kind 0 sorts first: [lo, hi) excludes hi
    events.sort()
    best_eps, best, running = 0.0, 0.0, 0.0
    i = 0
    while i < len(events):
        pos = events[i][0]
        while i < len(events) and events[i][0] == pos:
            running += events[i][2]
            i += 1
        if running > best + 1e-12:
            best, best_eps = running, pos
    return best_eps, best, total


def _with_epsilon(units: list[Unit], eps: float) -> None:
    for u in units:
        u.correct = 1.0 if (u.interval is not None and u.interval[0] <= eps < u.interval[1]) else 0.0


# -- protocols ---------------------------------------------------------------------------------------
def three_way_acc(records: Sequence[Record], tie_tolerance: float) -> ProtocolResult:
    units = [Unit(r.id, r.category, r.failed, float(not r.failed and r.prediction == three_way(r.label)), 1.0)  # type: ignore[arg-type]
             for r in records]
    return ProtocolResult(
        "3way", f"3-way accuracy (A / B / tie) over all pairs; a verdict is a tie when the margin is within the "
        f"tie tolerance {tie_tolerance:g}; human 'tie' and 'both bad' both count as tie; failures count as wrong.",
        "pairs", units, extra={"tie_tolerance": tie_tolerance})


def no_ties_acc(records: Sequence[Record]) -> ProtocolResult:
    units = [Unit(r.id, r.category, r.failed, float(not r.failed and r.prediction == r.label), 1.0)
             for r in records if r.label in ("A", "B")]
    return ProtocolResult(
        "no_ties", "Accuracy over pairs whose human label is A or B (ground-truth ties excluded); a predicted "
        "tie is wrong; failures count as wrong.", "pairs", units)


def four_way_acc(records: Sequence[Record], bothbad_threshold: float) -> ProtocolResult:
    def pred4(r: Record) -> str | None:
        if r.prediction != "tie":
            return r.prediction
        if r.reward_a is None or r.reward_b is None:
            return "tie"
        return "tie" if (r.reward_a + r.reward_b) / 2 >= bothbad_threshold else "bothbad"

    units = [Unit(r.id, r.category, r.failed, float(not r.failed and pred4(r) == r.label), 1.0) for r in records]
    return ProtocolResult(
        "4way", "GenAI-Bench 4-way exact match (A>B, B>A, tie, both bad); a predicted tie is 'both bad' when the "
        f"mean reward of the two images is below {bothbad_threshold:g}, else 'tie'; failures count as wrong.",
        "pairs", units, extra={"bothbad_threshold": bothbad_threshold})


def both_orders_acc(records: Sequence[Record], swap: bool) -> ProtocolResult:
    n_orders = 2 if swap else 1
    units = []
    for r in records:
        if r.label not in ("A", "B"):
            continue
        correct = sum(1.0 for o in r.orders if o.ok and o.winner == r.label)
        n_ok = float(sum(1 for o in r.orders if o.ok))
        units.append(Unit(r.id, r.category, r.failed, correct, float(n_orders), ok_part=(correct, n_ok)))
    if swap:
        desc = ("MMRB2 protocol: each pair judged in both orders; the B-first verdict is mapped back (flipped) "
                "and both judgements count; labels A/B only; a tie verdict is wrong; failed judgements count "
                "as wrong (the reference script skips them: that is the excluding_failed view).")
    else:
        desc = ("Single-order judgements (run without --swap, so NOT the MMRB2 both-orders protocol); "
                "labels A/B only; ties and failures wrong.")
    return ProtocolResult("both_orders", desc, "judgements", units, extra={"orders_per_pair": n_orders})


def tie_calibrated_acc(records: Sequence[Record], margin_unit: str) -> ProtocolResult:
    units = [Unit(r.id, r.category, r.failed, 0.0, 1.0, pair_interval(r.label, r.margin, r.failed)) for r in records]
    eps, _, _ = best_threshold(units)
    _with_epsilon(units, eps)
    return ProtocolResult(
        "tie_calibrated", "Tie-calibrated 3-way accuracy (Deutsch et al., 2023): a verdict is a tie when "
        f"|margin| <= epsilon, epsilon chosen to maximise accuracy on these pairs (margin: {margin_unit}); "
        "failures count as wrong.", "pairs", units, calibrated=True, epsilon=eps, extra={"margin_unit": margin_unit})


def _groups(records: Sequence[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(r.group or r.id, []).append(r)
    return out


def group_acc(records: Sequence[Record], tie_tolerance: float) -> ProtocolResult:
    units = []
    for gid, members in _groups(records).items():
        failed = any(m.failed for m in members)
        good = not failed and all(m.prediction == three_way(m.label) for m in members)  # type: ignore[arg-type]
        units.append(Unit(gid, members[0].category, failed, float(good), 1.0))
    return ProtocolResult(
        "group", "K-way ranking accuracy: a group (one instruction with K candidates) is correct when every one "
        f"of its K(K-1)/2 pairwise relations is predicted right, ties included (tie tolerance {tie_tolerance:g}); "
        "a group with a failed pair is wrong.", "groups", units, extra={"tie_tolerance": tie_tolerance})


def group_tie_calibrated_acc(records: Sequence[Record], margin_unit: str) -> ProtocolResult:
    units = []
    for gid, members in _groups(records).items():
        failed = any(m.failed for m in members)
        lo, hi = 0.0, INF
        for m in members:
            a, b = pair_interval(m.label, m.margin, m.failed)
            lo, hi = max(lo, a), min(hi, b)
        units.append(Unit(gid, members[0].category, failed, 0.0, 1.0, (lo, hi)))
    eps, _, _ = best_threshold(units)
    _with_epsilon(units, eps)
    return ProtocolResult(
        "group_tie_calibrated", "K-way ranking accuracy with tie calibration: a group is correct when every "
        "pairwise relation is right with tie <=> |margin| <= epsilon, epsilon chosen to maximise group accuracy on "
        f"the data (margin: {margin_unit}); a group with a failed pair is wrong.", "groups", units,
        calibrated=True, epsilon=eps, extra={"margin_unit": margin_unit})


# -- derived views -----------------------------------------------------------------------------------
def excluding_failed(p: ProtocolResult) -> dict[str, Any]:
    """The same protocol without failures (a view, never the headline): failed units are dropped,
    or, for units of several judgements, only their failed judgements."""
    if any(u.ok_part is not None for u in p.units):
        units = [Unit(u.key, u.category, False, *u.ok_part) for u in p.units if u.ok_part and u.ok_part[1] > 0]
    else:
        units = [Unit(u.key, u.category, u.failed, u.correct, u.total, u.interval) for u in p.units if not u.failed]
    out: dict[str, Any] = {"units": len(units)}
    if p.calibrated:
        eps, correct, total = best_threshold(units)
        out.update(epsilon=eps, correct=correct, total=total, accuracy=None if total == 0 else correct / total)
    else:
        correct, total = sum(u.correct for u in units), sum(u.total for u in units)
        out.update(correct=correct, total=total, accuracy=None if total == 0 else correct / total)
    return out


def by_category(p: ProtocolResult) -> dict[str, dict[str, Any]]:
    """Accuracy per category at the protocol's global epsilon (not re-calibrated per category)."""
    cats: dict[str, list[Unit]] = {}
    for u in p.units:
        cats.setdefault(u.category or "(none)", []).append(u)
    out = {}
    for cat in sorted(cats):
        us = cats[cat]
        total = sum(u.total for u in us)
        out[cat] = {"units": len(us), "accuracy": None if total == 0 else sum(u.correct for u in us) / total}
    return out


def bootstrap_ci(p: ProtocolResult, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval over units (epsilon re-chosen in each resample when calibrated).

    Uses numpy when it is installed (fast); otherwise a pure-Python path with the same estimator.
    """
    n = len(p.units)
    if n == 0 or n_boot <= 0 or p.total == 0:
        return None
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with pyarrow/datasets/torch
        return _bootstrap_python(p, n_boot, seed, level)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    if p.calibrated:
        stats = _calibrated_stats_np(np, p.units, counts)
    else:
        c = np.array([u.correct for u in p.units])
        t = np.array([u.total for u in p.units])
        tot = counts @ t
        with np.errstate(invalid="ignore", divide="ignore"):
            stats = np.where(tot > 0, (counts @ c) / np.where(tot > 0, tot, 1), np.nan)
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return None
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return [float(lo), float(hi)]


def _calibrated_stats_np(np: Any, units: Sequence[Unit], counts: Any) -> Any:
    """Best-threshold accuracy for every resample at once: the thresholds are sorted once, each
    resample only re-weights them (a bincount and a cumulative sum)."""
    keep = [i for i, u in enumerate(units) if _nonempty(u.interval)]
    totals = counts.sum(axis=1)
    if not keep:
        return np.zeros(len(counts))
    lo = np.array([units[i].interval[0] for i in keep])  # type: ignore[index]
    hi = np.array([units[i].interval[1] for i in keep])  # type: ignore[index]
    positions = np.unique(np.concatenate([lo, hi[np.isfinite(hi)]]))
    n_pos = len(positions)
    lo_idx = np.searchsorted(positions, lo)
    hi_idx = np.where(np.isfinite(hi), np.searchsorted(positions, np.where(np.isfinite(hi), hi, 0.0)), n_pos)
    w = counts[:, keep]
    stats = np.empty(len(counts))
    for b in range(len(counts)):
        delta = np.bincount(lo_idx, w[b], minlength=n_pos + 1) - np.bincount(hi_idx, w[b], minlength=n_pos + 1)
        best = max(float(np.cumsum(delta)[:n_pos].max()), 0.0)
        stats[b] = best / totals[b] if totals[b] else np.nan
    return stats


def _calibrated_stat(units: Sequence[Unit], weights: Iterable[float]) -> float:
    _, correct, total = best_threshold(units, list(weights))
    return correct / total if total else math.nan


def _bootstrap_python(p: ProtocolResult, n_boot: int, seed: int, level: float) -> list[float] | None:
    rng = random.Random(seed)
    n = len(p.units)
    stats = []
    for _ in range(n_boot):
        w = [0.0] * n
        for i in rng.choices(range(n), k=n):
            w[i] += 1.0
        if p.calibrated:
            s = _calibrated_stat(p.units, w)
        else:
            tot = sum(wi * u.total for wi, u in zip(w, p.units, strict=True))
            s = sum(wi * u.correct for wi, u in zip(w, p.units, strict=True)) / tot if tot else math.nan
        if not math.isnan(s):
            stats.append(s)
    if not stats:
        return None
    stats.sort()
    alpha = (1 - level) / 2

    def q(x: float) -> float:
        pos = x * (len(stats) - 1)
        lo, frac = int(pos), pos - int(pos)
        return stats[lo] if lo + 1 >= len(stats) else stats[lo] * (1 - frac) + stats[lo + 1] * frac

    return [q(alpha), q(1 - alpha)]


# -- other report statistics -------------------------------------------------------------------------
def position_bias(records: Sequence[Record]) -> dict[str, Any] | None:
    """How often the verdict depends on which image is shown first (needs both orders)."""
    both = [r for r in records if len(r.orders) == 2 and all(o.ok for o in r.orders)]
    if not any(len(r.orders) == 2 for r in records):
        return None
    flips = sum(1 for r in both if r.orders[0].winner != r.orders[1].winner)
    strict = sum(1 for r in both if {r.orders[0].winner, r.orders[1].winner} == {"A", "B"})
    decided = [o for r in both for o in r.orders if o.winner in ("A", "B")]
    first = sum(1 for o in decided if o.winner == o.first)
    return {
        "pairs": len(both),
        "rate": None if not both else flips / len(both),
        "strict_flip_rate": None if not both else strict / len(both),
        "first_position_rate": None if not decided else first / len(decided),
        "description": "rate: share of pairs (both orders judged) whose verdict changes with the order; "
                       "strict_flip_rate: share where A and B swap; first_position_rate: share of decisive "
                       "order-judgements that chose the image shown first (0.5 = no position preference).",
    }


def dimension_agreement(records: Sequence[Record], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per dimension: how often its own A-vs-B score order agrees with the human winner
    (pairs labelled A or B, every judged order counted)."""
    out = {}
    for key in keys:
        agree = disagree = ties = 0
        for r in records:
            if r.label not in ("A", "B"):
                continue
            for o in r.orders:
                a, b = o.scores_a.get(key), o.scores_b.get(key)
                if not o.ok or a is None or b is None:
                    continue
                if a == b:
                    ties += 1
                elif ("A" if a > b else "B") == r.label:
                    agree += 1
                else:
                    disagree += 1
        n = agree + disagree + ties
        out[key] = {"n": n, "agreement": None if n == 0 else agree / n,
                    "tie_rate": None if n == 0 else ties / n, "disagreement": None if n == 0 else disagree / n}
    return out


def summarize(p: ProtocolResult, *, n_boot: int, seed: int) -> dict[str, Any]:
    """The JSON block of one protocol."""
    out: dict[str, Any] = {
        "name": p.name,
        "description": p.description,
        "accuracy": p.accuracy,
        "correct": p.correct,
        "total": p.total,
        "unit": p.unit,
        "units": len(p.units),
        "ci95": bootstrap_ci(p, n_boot=n_boot, seed=seed),
        "excluding_failed": excluding_failed(p),
    }
    if p.calibrated:
        out["epsilon"] = p.epsilon
    out.update(p.extra)
    return out


ProtocolFn = Callable[..., ProtocolResult]
