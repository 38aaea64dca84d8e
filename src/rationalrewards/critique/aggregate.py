"""From per-dimension scores to a scalar reward and to a pairwise verdict.

The rules follow the release where it is sound and fix it where it is not:

* reward = (weighted mean of the non-N/A scores - 1) / 3, clamped to [0, 1];
* the pairwise verdict compares the (weighted) sums of the dimensions scored on BOTH sides,
  after rounding to 6 decimals so float noise is never a verdict; ``na_policy="release"``
  reproduces the release's rule instead (N/A counted as 2.5 on either side).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .dimensions import DIMENSION_KEYS, SCORE_MAX, SCORE_MIN, keys_for

NAPolicy = Literal["skip", "release"]
RELEASE_NA_VALUE = 2.5


def _check_weights(weights: Mapping[str, float]) -> None:
    unknown = [k for k in weights if k not in DIMENSION_KEYS]
    if unknown:
        raise ValueError(f"unknown dimension(s) in weights: {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(DIMENSION_KEYS)}")
    for key, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"weight of {key} must be a number, not {weight!r}")
        if not math.isfinite(weight):
            raise ValueError(f"weight of {key} must be finite, not {weight}")
        if weight < 0:
            raise ValueError(f"weight of {key} must be >= 0, not {weight:g}")
    if weights and not any(float(w) > 0 for w in weights.values()):
        raise ValueError("every weight is 0; nothing would be scored")
    if not weights:
        raise ValueError("no weights given; nothing would be scored")


@dataclass(frozen=True)
class Aggregation:
    """How scores become rewards and verdicts.

    ``weights`` maps dimension key -> weight; a dimension absent from ``weights`` (or with weight
    0) does not count. ``None`` means every dimension of the task with weight 1.

    Construction checks the settings (ValueError naming the problem): weights are finite numbers
    >= 0 on known dimensions, not all zero; the tie tolerance is finite and >= 0. A NaN weight
    would otherwise make every reward NaN, and an infinite one every reward NaN or 0/1.
    """

    name: str = "default"
    weights: Mapping[str, float] | None = None
    na_policy: NAPolicy = "skip"
    tie_tolerance: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        if self.na_policy not in ("skip", "release"):
            raise ValueError(f"na_policy must be 'skip' or 'release', not {self.na_policy!r}")
        tol = self.tie_tolerance
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise ValueError(f"tie_tolerance must be a finite number >= 0, not {tol!r}")
        if self.weights is not None:
            _check_weights(self.weights)

    def weights_for(self, task: str) -> dict[str, float]:
        keys = keys_for(task)
        if self.weights is None:
            return {k: 1.0 for k in keys}
        unknown = set(self.weights) - set(keys) - {"image_faithfulness"}
        if unknown:
            raise ValueError(f"unknown dimension(s) in weights: {sorted(unknown)}")
        return {k: float(self.weights[k]) for k in keys if float(self.weights.get(k, 0.0)) != 0.0}

    def with_(self, **changes: object) -> Aggregation:
        from dataclasses import replace

        return replace(self, **changes)  # type: ignore[arg-type]


PRESETS: dict[str, Aggregation] = {
    "default": Aggregation(
        name="default",
        description="All dimensions of the task, equal weights, N/A skipped.",
    ),
    "release-edit-rl": Aggregation(
        name="release-edit-rl",
        weights={"text_faithfulness": 1.0, "physical_quality": 1.0, "text_rendering": 1.0},
        description=(
            "The release's edit RL reward: text faithfulness, physical quality and text rendering; "
            "image faithfulness left out."
        ),
    ),
    "release-pairwise": Aggregation(
        name="release-pairwise",
        na_policy="release",
        description="The release's pairwise rule: N/A counted as 2.5 on either side.",
    ),
}


def parse_aggregation(spec: str | Mapping[str, float] | Aggregation | None) -> Aggregation:
    """The aggregation a setting names, checked: ValueError (naming the problem) otherwise.

    ``spec`` is a preset name (``default``, ``release-edit-rl``, ``release-pairwise``), custom
    weights ``key=weight,...`` (e.g. ``text_faithfulness=2,physical_quality=1``; dimensions left
    out do not count) or the same as a mapping, an :class:`Aggregation` (returned as is), or None
    for the default.
    Refused: an unknown preset or dimension, a repeated key, a weight that is not a number, NaN,
    infinite or negative, and weights that are all zero. The CLI calls this while parsing
    ``--aggregation``, so a bad spec is a usage error before any model is loaded.
    """
    if spec is None:
        return PRESETS["default"]
    if isinstance(spec, Aggregation):
        return spec
    if isinstance(spec, Mapping):
        try:
            return Aggregation(name="custom", weights=dict(spec))
        except ValueError as exc:
            raise ValueError(f"aggregation weights {dict(spec)!r}: {exc}") from None
    if not isinstance(spec, str):
        raise ValueError(f"aggregation must be a preset name or key=weight,..., not {type(spec).__name__}")
    text = spec.strip()
    if text in PRESETS:
        return PRESETS[text]
    if "=" not in text:
        raise ValueError(f"unknown aggregation preset {spec!r}; known: {', '.join(PRESETS)}, "
                         f"or custom weights key=weight,... over {', '.join(DIMENSION_KEYS)}")
    weights: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue  # a trailing comma
        key, sep, value = (x.strip() for x in part.partition("="))
        if not sep or not key:
            raise ValueError(f"bad weight {part.strip()!r} in {spec!r}; expected key=number")
        if key in weights:
            raise ValueError(f"dimension {key!r} is weighted twice in {spec!r}")
        try:
            weights[key] = float(value)
        except ValueError:
            raise ValueError(f"bad weight {part.strip()!r} in {spec!r}; expected key=number") from None
    try:
        return Aggregation(name="custom", weights=weights)
    except ValueError as exc:
        raise ValueError(f"aggregation {spec!r}: {exc}") from None


def get_aggregation(spec: str | Mapping[str, float] | Aggregation | None) -> Aggregation:
    """A preset by name, ``key=weight,...`` custom weights, or an ``Aggregation`` as is.

    Same as :func:`parse_aggregation` (bad specs raise ValueError naming the problem).
    """
    return parse_aggregation(spec)


def clamp_score(value: float) -> float:
    return min(SCORE_MAX, max(SCORE_MIN, value))


def reward_from_scores(
    scores: Mapping[str, float | None], task: str, aggregation: Aggregation | None = None
) -> float | None:
    """Scalar reward in [0, 1], or ``None`` when no counted dimension has a score."""
    agg = aggregation or PRESETS["default"]
    total = 0.0
    weight_sum = 0.0
    for key, weight in agg.weights_for(task).items():
        value = scores.get(key)
        if value is None:
            continue
        total += weight * clamp_score(value)
        weight_sum += weight
    if weight_sum == 0.0:
        return None
    mean = total / weight_sum
    return min(1.0, max(0.0, (mean - SCORE_MIN) / (SCORE_MAX - SCORE_MIN)))


@dataclass
class PairDecision:
    winner: Literal["A", "B", "tie"] | None
    sum_a: float
    sum_b: float
    counted: list[str] = field(default_factory=list)
    reason: str | None = None


def decide_pair(
    scores_a: Mapping[str, float | None],
    scores_b: Mapping[str, float | None],
    task: str,
    aggregation: Aggregation | None = None,
    tie_tolerance: float | None = None,
) -> PairDecision:
    """Verdict from two score maps; ``winner`` is None only when nothing could be compared."""
    agg = aggregation or PRESETS["default"]
    tol = agg.tie_tolerance if tie_tolerance is None else tie_tolerance
    sum_a = sum_b = 0.0
    counted: list[str] = []
    for key, weight in agg.weights_for(task).items():
        a, b = scores_a.get(key), scores_b.get(key)
        if agg.na_policy == "release":
            a = RELEASE_NA_VALUE if a is None else a
            b = RELEASE_NA_VALUE if b is None else b
        elif a is None or b is None:
            continue
        sum_a += weight * clamp_score(a)
        sum_b += weight * clamp_score(b)
        counted.append(key)
    if not counted:
        return PairDecision(None, 0.0, 0.0, counted, "no dimension was scored on both sides")
    diff = round(sum_a, 6) - round(sum_b, 6)
    if abs(round(diff, 6)) <= tol:
        winner: Literal["A", "B", "tie"] = "tie"
    else:
        winner = "A" if diff > 0 else "B"
    return PairDecision(winner, sum_a, sum_b, counted)


def decide_by_rewards(
    reward_a: float | None, reward_b: float | None, tie_tolerance: float = 0.0
) -> Literal["A", "B", "tie"] | None:
    if reward_a is None or reward_b is None:
        return None
    diff = round(reward_a, 6) - round(reward_b, 6)
    if abs(round(diff, 6)) <= tie_tolerance:
        return "tie"
    return "A" if diff > 0 else "B"


def flip(winner: Literal["A", "B", "tie"] | None) -> Literal["A", "B", "tie"] | None:
    return {"A": "B", "B": "A"}.get(winner, winner) if winner else winner  # type: ignore[return-value]


def combine_orders(
    first: Literal["A", "B", "tie"] | None, second_mapped: Literal["A", "B", "tie"] | None
) -> Literal["A", "B", "tie"] | None:
    """Combine the verdicts of both image orders (the second already mapped back to A/B).

    Agreement keeps the verdict; any disagreement (a flip with the order, or one order calling
    a tie) is a tie, because the preference did not survive the swap.
    """
    if first is None or second_mapped is None:
        return None
    return first if first == second_mapped else "tie"
