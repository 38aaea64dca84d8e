"""A reward-hacking monitor for RL against a critique-before-score judge.

Two symptoms are watched:

``trend``
    Over the last ``window`` iterations the scalar reward rose while one of its dimensions fell
    (fitted linear change, so a single noisy step does not trip it). The policy is buying reward
    on some dimensions by giving up another, e.g. prettier images that follow the prompt less.
``justification``
    A critique gives a high score (``>= severe_score``, default 3.5 on the 1-4 scale) to a
    dimension whose own justification names a severe flaw ("severely distorted", "the text is
    garbled", "the cat is missing"). The judge is being fooled, or its scores drift away from its
    reasoning, and the policy will exploit that gap. Negated mentions ("no severe artifacts",
    "nothing is missing") do not count.

The monitor only reports (flags are logged with the step and the evidence); it never changes
rewards. Standard library only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .config import DEFAULT_SEVERE_KEYWORDS

# The judge's dimensions are scored 1-4: a fall of ``min_change`` on the [0, 1] reward scale
# corresponds to ``3 * min_change`` score points.
SCORE_RANGE = 3.0
_KNOWN_RAW_DIMENSIONS = ("text_faithfulness", "image_faithfulness", "physical_quality", "text_rendering")
_NEGATORS = {"no", "not", "without", "nothing", "none", "never", "nor", "free", "absence", "lacks", "lack",
             "isn't", "aren't", "wasn't", "weren't", "doesn't", "don't", "didn't", "hardly", "barely"}
_CLAUSE_SPLIT = re.compile(r"[.;!?\n]|,\s*(?:but|however|although|though|yet)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z']+")


@dataclass
class HackingFlag:
    """One monitor finding."""

    kind: Literal["trend", "justification"]
    step: int
    message: str
    dimension: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fitted_change(values: Sequence[float]) -> float:
    """Least-squares slope times the span: the change over the series a straight line sees."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    if len(pts) < 2:
        return 0.0
    n = len(pts)
    mx = sum(i for i, _ in pts) / n
    my = sum(v for _, v in pts) / n
    var = sum((i - mx) ** 2 for i, _ in pts)
    if var == 0:
        return 0.0
    slope = sum((i - mx) * (v - my) for i, v in pts) / var
    return slope * (pts[-1][0] - pts[0][0])


def severe_mentions(text: str, keywords: Iterable[str]) -> list[str]:
    """Keywords from ``keywords`` that ``text`` uses affirmatively (not under a nearby negation
    in the same clause), lower-cased, in order of first use."""
    found: list[str] = []
    if not text:
        return found
    kws = sorted({k.lower().strip() for k in keywords if k.strip()}, key=len, reverse=True)
    for clause in _CLAUSE_SPLIT.split(text.lower()):
        for kw in kws:
            for m in re.finditer(r"(?<![a-z])" + re.escape(kw) + r"(?![a-z])", clause):
                before = _WORD.findall(clause[: m.start()])[-4:]
                if any(w in _NEGATORS for w in before):
                    continue
                if kw not in found:
                    found.append(kw)
                break
    return found


class RewardHackingMonitor:
    """Watch per-iteration reward statistics and critiques for signs of reward hacking.

    Args:
        window: iterations over which trends are fitted (flags need a full window).
        min_change: the reward must rise, and a dimension fall, by more than this (on the [0, 1]
            scale; the judge's 1-4 dimensions are compared in score points x 3).
        severe_score: scores at or above this with a severe-flaw justification are flagged.
        keywords: words or phrases that name a severe flaw.
        max_examples: justification flags kept per iteration (the count is always exact).
    """

    def __init__(
        self,
        *,
        window: int = 20,
        min_change: float = 0.02,
        severe_score: float = 3.5,
        keywords: Iterable[str] = DEFAULT_SEVERE_KEYWORDS,
        max_examples: int = 8,
    ) -> None:
        if window < 2:
            raise ValueError("window must be >= 2")
        self.window = int(window)
        self.min_change = float(min_change)
        self.severe_score = float(severe_score)
        self.keywords = [k for k in keywords if k.strip()]
        self.max_examples = int(max_examples)
        self.history: list[dict[str, Any]] = []
        self.active: set[str] = set()

    # -- trends ---------------------------------------------------------------------------------
    def observe(self, step: int, reward: float, dimensions: Mapping[str, float]) -> list[HackingFlag]:
        """Record one iteration's mean reward and per-dimension means; return new trend flags.

        A dimension is flagged when the condition starts to hold and again only after it has
        cleared (no flag every step of one episode).
        """
        self.history.append({"step": int(step), "reward": _num(reward),
                             "dims": {k: _num(v) for k, v in dimensions.items()}})
        del self.history[: -self.window]
        if len(self.history) < self.window:
            return []
        rise = fitted_change([h["reward"] for h in self.history])
        flags = []
        dims = sorted({k for h in self.history for k in h["dims"]})
        for dim in dims:
            series = [h["dims"].get(dim, math.nan) for h in self.history]
            scale = SCORE_RANGE if dim in _KNOWN_RAW_DIMENSIONS else 1.0
            fall = -fitted_change(series) / scale
            hacking = rise > self.min_change and fall > self.min_change
            if hacking and dim not in self.active:
                self.active.add(dim)
                flags.append(HackingFlag(
                    kind="trend", step=int(step), dimension=dim,
                    message=(f"reward rose by {rise:.3f} over the last {self.window} steps while {dim} fell by "
                             f"{fall:.3f} (on the [0, 1] scale)"),
                    details={"reward_change": rise, "dimension_change": -fall, "window": self.window,
                             "first_step": self.history[0]["step"]},
                ))
            elif not hacking:
                self.active.discard(dim)
        return flags

    # -- critiques ------------------------------------------------------------------------------
    def check_critiques(
        self,
        step: int,
        critiques: Sequence[Any],
        prompts: Sequence[str] | None = None,
        ids: Sequence[Any] | None = None,
    ) -> tuple[list[HackingFlag], int]:
        """Flag high scores whose justification lists a severe flaw.

        ``critiques`` are :class:`~rationalrewards.critique.schema.CritiqueResult` objects (or
        anything with ``ok``, ``scores`` and ``justifications``). Returns the first
        ``max_examples`` flags and the total number of flagged (critique, dimension) pairs.
        """
        flags: list[HackingFlag] = []
        total = 0
        for i, crit in enumerate(critiques):
            if crit is None or not getattr(crit, "ok", False):
                continue
            scores = getattr(crit, "scores", None) or {}
            justifications = getattr(crit, "justifications", None) or {}
            for dim, text in justifications.items():
                score = scores.get(dim)
                if score is None or isinstance(score, str) or math.isnan(float(score)):
                    continue
                if float(score) < self.severe_score:
                    continue
                words = severe_mentions(text or "", self.keywords)
                if not words:
                    continue
                total += 1
                if len(flags) < self.max_examples:
                    flags.append(HackingFlag(
                        kind="justification", step=int(step), dimension=dim,
                        message=f"{dim} scored {float(score):.2f} but its justification names {', '.join(words)}",
                        details={"index": i, "score": float(score), "keywords": words,
                                 "justification": (text or "")[:500],
                                 "prompt": prompts[i] if prompts is not None and i < len(prompts) else None,
                                 "id": ids[i] if ids is not None and i < len(ids) else None},
                    ))
        return flags, total

    # -- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "active": sorted(self.active)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = [dict(h) for h in state.get("history", [])][-self.window:]
        self.active = set(state.get("active", []))


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v
