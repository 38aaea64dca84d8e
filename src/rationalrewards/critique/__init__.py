"""The critique engine: dimensions, typed results, prompt templates, parser and aggregation.

Nothing here imports torch, transformers or an HTTP client.
"""

from .aggregate import (
    PRESETS,
    Aggregation,
    decide_pair,
    get_aggregation,
    parse_aggregation,
    reward_from_scores,
)
from .dimensions import DEFAULT_ALLOW_NA, DIMENSION_KEYS, TASKS, dimensions_for, keys_for, resolve_allow_na
from .parser import parse_comparison, parse_critique, parse_final_verdict, parse_score
from .schema import CompareResult, CritiqueResult

__all__ = [
    "DEFAULT_ALLOW_NA",
    "DIMENSION_KEYS",
    "PRESETS",
    "TASKS",
    "Aggregation",
    "CompareResult",
    "CritiqueResult",
    "decide_pair",
    "dimensions_for",
    "get_aggregation",
    "keys_for",
    "parse_aggregation",
    "parse_comparison",
    "parse_critique",
    "parse_final_verdict",
    "parse_score",
    "resolve_allow_na",
    "reward_from_scores",
]
