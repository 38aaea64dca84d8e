"""From per-dimension critique scores to the scalar an RL trainer optimises.

Two methods, selectable:

``sum``
    The weighted combination of the dimensions, i.e. the critique's own reward
    ``(weighted mean of the non-N/A scores - 1) / 3`` in [0, 1]. The trainer then normalises the
    scalar within each prompt group as usual.
``gdpo``
    Normalise EACH dimension within its group first (``(x - group mean) / (group std + eps)``),
    then take the weighted sum. A dimension on which every sample of a group scores the same
    contributes nothing, so one loud dimension cannot drown out the others (GDPO-style
    decoupled normalisation). The result is already advantage-like (centred per group).

Everything here is plain Python on short lists (a batch is tens to hundreds of samples), so the
module imports neither numpy nor torch.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..critique.aggregate import Aggregation, clamp_score, get_aggregation, reward_from_scores

Method = Literal["sum", "gdpo"]
METHODS: tuple[Method, ...] = ("sum", "gdpo")
NAN = float("nan")


@dataclass(frozen=True)
class DimensionAggregation:
    """How per-dimension scores become the per-sample scalar.

    Args:
        method: ``"sum"`` (weighted combination, in [0, 1]) or ``"gdpo"`` (per-dimension group
            normalisation, then weighted sum).
        weights: which dimensions count and how much: a core preset name (``default``,
            ``release-edit-rl``), ``"key=weight,..."`` or an :class:`Aggregation`. ``None``
            uses the reward model's own aggregation.
        eps: added to the group standard deviation in ``gdpo``.
    """

    method: Method = "sum"
    weights: Aggregation | str | None = None
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown aggregation method {self.method!r}; use one of {', '.join(METHODS)}")
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise ValueError(f"eps must be a finite number >= 0, not {self.eps!r}")

    def resolve_weights(self, default: Aggregation | None) -> Aggregation:
        if self.weights is None:
            return default or get_aggregation(None)
        return get_aggregation(self.weights)


def parse_dimension_aggregation(
    spec: str | DimensionAggregation | None, weights: Aggregation | str | None = None
) -> DimensionAggregation:
    """``"sum"``, ``"gdpo"`` or a :class:`DimensionAggregation` (returned as is)."""
    if isinstance(spec, DimensionAggregation):
        return spec
    return DimensionAggregation(method=(spec or "sum"), weights=weights)  # type: ignore[arg-type]


def is_missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def group_index(keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Positions of each group key, in first-seen order."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def normalize_within_groups(
    values: Sequence[float | None], groups: Sequence[Hashable], *, eps: float = 1e-6
) -> list[float]:
    """``(x - group mean) / (group std + eps)`` with the population std; missing values (None or
    NaN) stay NaN and do not enter the statistics. A group with one value (or all equal) maps to 0."""
    if len(values) != len(groups):
        raise ValueError(f"{len(values)} values but {len(groups)} group keys")
    out = [NAN] * len(values)
    for members in group_index(groups).values():
        present = [i for i in members if not is_missing(values[i])]
        if not present:
            continue
        xs = [float(values[i]) for i in present]  # type: ignore[arg-type]
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
        for i, x in zip(present, xs, strict=True):
            # Equal values give exactly 0 instead of float noise divided by eps.
            out[i] = 0.0 if x == mean else (x - mean) / (std + eps)
    return out


def combine_dimensions(
    scores: Sequence[Mapping[str, float | None]],
    tasks: Sequence[str],
    usable: Sequence[bool],
    groups: Sequence[Hashable],
    aggregation: DimensionAggregation,
    weights: Aggregation,
) -> list[float]:
    """Per-sample scalar (NaN where ``usable`` is False or nothing counted could be combined).

    ``scores`` are raw 1-4 dimension scores (None = N/A); ``tasks`` decide which dimensions
    exist for each sample; ``groups`` are the group keys ``gdpo`` normalises within.
    """
    n = len(scores)
    if not (len(tasks) == len(usable) == len(groups) == n):
        raise ValueError("scores, tasks, usable and groups must have the same length")
    if aggregation.method == "sum":
        out: list[float] = []
        for row, task, ok in zip(scores, tasks, usable, strict=True):
            value = reward_from_scores(row, task, weights) if ok else None
            out.append(NAN if value is None else value)
        return out

    # gdpo: one normalised column per weighted dimension, then the weighted sum per sample.
    per_sample_weights = [weights.weights_for(task) for task in tasks]
    keys: list[str] = []
    for w in per_sample_weights:
        keys.extend(k for k in w if k not in keys)
    total = [0.0] * n
    counted = [False] * n
    for key in keys:
        column: list[float | None] = [
            clamp_score(row[key]) if ok and key in w and not is_missing(row.get(key)) else None  # type: ignore[arg-type]
            for row, ok, w in zip(scores, usable, per_sample_weights, strict=True)
        ]
        z = normalize_within_groups(column, groups, eps=aggregation.eps)
        for i, value in enumerate(z):
            if not math.isnan(value):
                total[i] += per_sample_weights[i][key] * value
                counted[i] = True
    return [t if c else NAN for t, c in zip(total, counted, strict=True)]
