"""Preference-prediction benchmarks with stated, reproducible protocols.

    from rationalrewards import RewardModel
    from rationalrewards.eval import evaluate

    rm = RewardModel.from_openai("http://127.0.0.1:8000/v1", model="RationalRewards-8B-T2I")
    report = evaluate(rm, "mmrb2-t2i", "data/mmrb2_t2i/", "runs/mmrb2-t2i")
    print(report["protocol"], report["accuracy"], report["ci95"])

Benchmarks (``BENCHMARKS``): genai-bench-t2i, genai-bench-edit, mmrb2-t2i, mmrb2-edit,
editreward-bench, pairs; add more with :func:`register_benchmark`. Heavy libraries (pyarrow,
datasets) are imported only when a file needs them.
"""

from __future__ import annotations

from .benchmarks import BENCHMARKS, Benchmark, PairItem, get_benchmark, register_benchmark
from .labels import normalize_label, parse_ranking
from .report import compare_reports, compute_report, load_report, write_report
from .results import EvalResults, RunStats, read_results
from .runner import Evaluation, evaluate
from .sources import open_source

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "EvalResults",
    "Evaluation",
    "PairItem",
    "RunStats",
    "compare_reports",
    "compute_report",
    "evaluate",
    "get_benchmark",
    "load_report",
    "normalize_label",
    "open_source",
    "parse_ranking",
    "read_results",
    "register_benchmark",
    "write_report",
]
