"""RL in parameter space: the reward object, framework adapters and per-dimension aggregation.

Nothing heavy is imported here: torch and numpy load only when a tensor or array is handed over
or asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .adapters import (
        GroupwiseReward,
        PointwiseReward,
        RemoteGroupwiseReward,
        RemotePointwiseReward,
        RewardOutput,
        make_flow_grpo_reward_fn,
        make_flow_grpo_score_factory,
    )
    from .aggregation import DimensionAggregation, combine_dimensions, normalize_within_groups
    from .config import NFTConfig
    from .monitor import RewardHackingMonitor
    from .reward import FailurePolicy, RationalReward, RewardBatch, RewardFailure
    from .trainer import NFTTrainer

_LAZY = {
    "RationalReward": ".reward",
    "RewardBatch": ".reward",
    "FailurePolicy": ".reward",
    "RewardFailure": ".reward",
    "DimensionAggregation": ".aggregation",
    "combine_dimensions": ".aggregation",
    "normalize_within_groups": ".aggregation",
    "make_flow_grpo_reward_fn": ".adapters",
    "make_flow_grpo_score_factory": ".adapters",
    "PointwiseReward": ".adapters",
    "GroupwiseReward": ".adapters",
    "RemotePointwiseReward": ".adapters",
    "RemoteGroupwiseReward": ".adapters",
    "RewardOutput": ".adapters",
    "NFTConfig": ".config",
    "NFTTrainer": ".trainer",
    "RewardHackingMonitor": ".monitor",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "DimensionAggregation",
    "FailurePolicy",
    "GroupwiseReward",
    "NFTConfig",
    "NFTTrainer",
    "PointwiseReward",
    "RationalReward",
    "RemoteGroupwiseReward",
    "RemotePointwiseReward",
    "RewardBatch",
    "RewardFailure",
    "RewardHackingMonitor",
    "RewardOutput",
    "combine_dimensions",
    "make_flow_grpo_reward_fn",
    "make_flow_grpo_score_factory",
    "normalize_within_groups",
]
