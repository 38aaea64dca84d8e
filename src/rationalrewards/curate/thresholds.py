"""Keep-or-reject rules and the reasons they give.

A decision is a pure function of one critique and the thresholds, so changing the thresholds
re-splits a dataset from cached critiques without calling the judge again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..critique.dimensions import DIMENSION_KEYS, SCORE_MAX, SCORE_MIN

# Short names accepted on the command line (``--min pq=3``); the keys themselves always work.
DIMENSION_ALIASES: dict[str, str] = {
    "tf": "text_faithfulness",
    "if": "image_faithfulness",
    "pq": "physical_quality",
    "tr": "text_rendering",
    "text": "text_faithfulness",
    "faithfulness": "text_faithfulness",
    "physical": "physical_quality",
    "quality": "physical_quality",
    "rendering": "text_rendering",
}


def resolve_dimension(name: str) -> str:
    """The dimension key for a key, a short alias (``pq``) or a header (``Physical and Visual Quality``)."""
    norm = name.strip().lower().replace("-", "_").replace(" ", "_")
    if norm in DIMENSION_KEYS:
        return norm
    if norm in DIMENSION_ALIASES:
        return DIMENSION_ALIASES[norm]
    if norm == "physical_and_visual_quality":
        return "physical_quality"
    raise ValueError(
        f"unknown dimension {name!r}; use one of {', '.join(DIMENSION_KEYS)} "
        f"(or the short forms {', '.join(sorted(k for k in DIMENSION_ALIASES if len(k) == 2))})"
    )


@dataclass(frozen=True)
class Thresholds:
    """Minimum overall reward and per-dimension scores an item needs to be kept (inclusive, >=).

    A dimension the critique scored N/A (e.g. text rendering when no text was asked for) or that
    the task does not have (image faithfulness on a text-to-image item) passes its threshold:
    there is nothing there to be bad at.
    """

    min_reward: float | None = None
    min_scores: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.min_reward is not None and not 0.0 <= self.min_reward <= 1.0:
            raise ValueError(f"min reward must be within [0, 1], got {self.min_reward}")
        checked = {}
        for name, value in self.min_scores.items():
            key = resolve_dimension(name)
            if not SCORE_MIN <= float(value) <= SCORE_MAX:
                raise ValueError(f"minimum for {key} must be within [{SCORE_MIN:g}, {SCORE_MAX:g}], got {value}")
            checked[key] = float(value)
        object.__setattr__(self, "min_scores", checked)

    @classmethod
    def from_specs(cls, min_reward: float | None = None, specs: Iterable[str] = ()) -> Thresholds:
        """Build from command-line specs ``DIM=VALUE`` (repeating a dimension keeps the last value)."""
        mins: dict[str, float] = {}
        for spec in specs:
            name, sep, value = spec.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise ValueError(f"--min expects DIM=VALUE (e.g. physical_quality=3), got {spec!r}")
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"--min {spec!r}: {value!r} is not a number") from None
            mins[resolve_dimension(name)] = number
        return cls(min_reward=min_reward, min_scores=mins)

    def to_json(self) -> dict[str, Any]:
        return {"min_reward": self.min_reward, "min_scores": dict(self.min_scores)}

    @property
    def empty(self) -> bool:
        return self.min_reward is None and not self.min_scores


@dataclass(frozen=True)
class Check:
    """One threshold applied to one item: what was compared, and whether it passed."""

    check: str  # "min_reward", a dimension key, or "critique"
    value: float | None
    threshold: float | None
    passed: bool

    def describe(self) -> str:
        if self.check == "critique":
            return "critique ok" if self.passed else "critique failed"
        name = "reward" if self.check == "min_reward" else self.check
        if self.value is None:
            return f"{name} N/A (threshold {self.threshold:g} not applied)"
        op = ">=" if self.passed else "<"
        return f"{name} {self.value:.4g} {op} {self.threshold:g}"

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "value": self.value, "threshold": self.threshold, "passed": self.passed}


@dataclass(frozen=True)
class Decision:
    """Keep or reject, with the human-readable reason and the structured checks behind it."""

    kept: bool
    reason: str
    checks: tuple[Check, ...]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def decide(critique: Mapping[str, Any], thresholds: Thresholds) -> Decision:
    """Apply ``thresholds`` to one critique (a ``CritiqueResult`` JSON object).

    A failed critique (``ok`` false) is always rejected, whatever the thresholds: an item the
    judge could not score must never slip into the kept set.
    """
    if not critique.get("ok"):
        kind = critique.get("error_kind") or "unknown"
        error = critique.get("error") or "no reason given"
        check = Check("critique", None, None, False)
        return Decision(False, f"critique failed ({kind}): {error}", (check,))
    checks: list[Check] = []
    if thresholds.min_reward is not None:
        reward = critique.get("reward")
        if reward is None:
            # An ok critique always has a reward; if it does not, refuse rather than guess.
            checks.append(Check("min_reward", None, thresholds.min_reward, False))
        else:
            checks.append(Check("min_reward", float(reward), thresholds.min_reward, float(reward) >= thresholds.min_reward))
    scores = critique.get("scores") or {}
    for key, minimum in thresholds.min_scores.items():
        value = scores.get(key)
        if value is None:
            checks.append(Check(key, None, minimum, True))
        else:
            checks.append(Check(key, float(value), minimum, float(value) >= minimum))
    failed = [c for c in checks if not c.passed]
    if failed:
        parts = []
        for c in failed:
            parts.append("reward missing" if c.value is None else c.describe())
        return Decision(False, "; ".join(parts), tuple(checks))
    if not checks:
        return Decision(True, "no thresholds set", ())
    return Decision(True, "passed: " + "; ".join(c.describe() for c in checks), tuple(checks))
