"""Phase 2 checks that need no model: completeness, label consistency, anchor leaks.

Rejection reasons (stable strings, counted in ``stats.json``):

``unparseable``        the rationale misses a required dimension or a readable score
``inconsistent``       its own scores imply the other label (pairwise: sum A vs sum B; pointwise:
                       the preferred image's reward is not above the other's)
``low_margin``         the scores agree with the label but by no more than the margin
``leak``               it reveals that the label was given (``the human preferred...``)
``repredict_wrong``    the teacher, without the label, predicts another label from it
``repredict_unparseable``  the re-prediction answer has neither a verdict nor scores
``repredict_order_disagreement``  (both orders) one order predicts the label, the other not
``not_selected``       it passed every check but another sample of the pair was kept
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..critique.aggregate import Aggregation, decide_by_rewards, decide_pair

REASONS = (
    "unparseable",
    "inconsistent",
    "low_margin",
    "leak",
    "repredict_unparseable",
    "repredict_wrong",
    "repredict_order_disagreement",
    "not_selected",
)

# Phrases that give the anchor away, each with words one of which must occur in the text for the
# pattern to possibly match (a cheap substring test spares most regex scans). Bare "label" is
# deliberately absent: critiques of text rendering talk about labels on bottles and signs.
LEAK_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"\bhumans?'?\s+(?:\w+\s+){0,2}(?:prefer\w*|choice|chose|vote[sd]?|voting|judge[sd]?|judgements?|"
     r"judgments?|raters?|annotat\w*|label\w*|evaluators?|evaluations?)\b", ("human",)),
    (r"\bground[\s-]*truth\b", ("ground",)),
    (r"\bannotat(?:or|ors|ion|ions|ed)\b", ("annotat",)),
    (r"\b(?:raters?|voters?|labell?ers?)\b", ("rater", "voter", "labeler", "labeller")),
    (r"\bas\s+labell?ed\b", ("labeled", "labelled")),
    (r"\b(?:preference|human|gold|given|provided|true|correct)\s+labels?\b", ("label",)),
    (r"\blabell?ed\s+(?:as\s+)?(?:the\s+)?(?:preferred|better|winner|best)\b", ("labeled", "labelled")),
    (r"\b(?:was|were|been|am|are)\s+told\b", ("told",)),
    (r"\bpreferred\s+by\s+(?:the\s+)?(?:humans?|users?|annotators?|raters?|people|evaluators?|judges?)\b",
     ("preferred",)),
    (r"\b(?:human|annotator|rater|people)'?s?\s+preferences?\b", ("preference",)),
    (r"\b(?:the\s+)?(?:given|provided|stated|known|expected)\s+(?:preference|outcome|verdict|answer)\b",
     ("given", "provided", "stated", "known", "expected")),
    (r"\bpeople\s+(?:who\s+\w+(?:\s+\w+){0,6}\s+)?(?:judged|preferred|chose|picked|voted|found|rated)\b",
     ("people",)),
)
# Pointwise critiques must not talk about the candidate the student will never see.
POINTWISE_LEAK_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"\b(?:the\s+other|another|alternative|competing|rival)\s+(?:candidate|option|version|submission)\b",
     ("candidate", "option", "version", "submission")),
    (r"\b(?:won|lost)\s+(?:the|its|this)\s+comparison\b", ("comparison",)),
    (r"\bside[\s-]by[\s-]side\s+comparison\b", ("comparison",)),
)


class LeakDetector:
    """Finds anchor-revealing phrases; ``extra`` patterns are added to the built-in ones."""

    def __init__(self, extra: Iterable[str] = (), *, pointwise: bool = False):
        pats: list[tuple[str, tuple[str, ...]]] = [*LEAK_PATTERNS, *(POINTWISE_LEAK_PATTERNS if pointwise else ())]
        pats += [(p, ()) for p in extra]
        try:
            self._re = [(re.compile(p, re.IGNORECASE), hints) for p, hints in pats]
        except re.error as exc:
            raise ValueError(f"bad leak pattern: {exc}") from None

    def find(self, text: str) -> list[str]:
        """The matched phrases, in order of the patterns (empty when clean)."""
        lower = text.lower()
        hits = []
        for pat, hints in self._re:
            if hints and not any(h in lower for h in hints):
                continue
            m = pat.search(text)
            if m:
                hits.append(m.group(0))
        return hits


def pairwise_consistency(
    scores_a: dict[str, float | None], scores_b: dict[str, float | None], task: str, shown_label: str,
    *, margin: float = 0.0, tie_tolerance: float = 0.0, aggregation: Aggregation | None = None,
) -> tuple[str | None, float, str | None]:
    """(reason or None, signed margin towards the label, implied winner).

    The margin is sum(preferred) - sum(other); for a tie label it is minus the absolute gap.
    """
    d = decide_pair(scores_a, scores_b, task, aggregation, tie_tolerance)
    if d.winner is None:
        return "unparseable", 0.0, None
    gap = round(d.sum_a - d.sum_b, 6)
    if shown_label == "tie":
        return (None if d.winner == "tie" else "inconsistent"), -abs(gap), d.winner
    signed = gap if shown_label == "A" else -gap
    if d.winner != shown_label:
        return "inconsistent", signed, d.winner
    if margin > 0 and signed <= margin:
        return "low_margin", signed, d.winner
    return None, signed, d.winner


def pointwise_consistency(
    reward_a: float | None, reward_b: float | None, label: str, *, margin: float = 0.0, tie_tolerance: float = 0.0,
) -> tuple[str | None, float, str | None]:
    """Same contract as :func:`pairwise_consistency`, on the two pointwise rewards."""
    implied = decide_by_rewards(reward_a, reward_b, tie_tolerance)
    if implied is None or reward_a is None or reward_b is None:
        return "unparseable", 0.0, None
    gap = round(reward_a - reward_b, 6)
    if label == "tie":
        return (None if implied == "tie" else "inconsistent"), -abs(gap), implied
    signed = gap if label == "A" else -gap
    if implied != label:
        return "inconsistent", signed, implied
    if margin > 0 and signed <= margin:
        return "low_margin", signed, implied
    return None, signed, implied
