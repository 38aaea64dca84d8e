"""The critique engine: dimensions, typed results, prompt templates, parser and aggregation.

Nothing here imports torch, transformers or an HTTP client.
"""

from .aggregate import PRESETS, Aggregation, decide_pair, get_aggregation, reward_from_scores
from .dimensions import DIMENSION_KEYS, TASKS, dimensions_for, keys_for
from .parser import parse_comparison, parse_critique, parse_final_verdict, parse_score
from .schema import CompareResult, CritiqueResult

__all__ = [
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
    "parse_comparison",
    "parse_critique",
    "parse_final_verdict",
    "parse_score",
    "reward_from_scores",
]
