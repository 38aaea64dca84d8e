"""Where a batch stage's judging runs: in this process (``local``) or on a Ray cluster (``ray``).

A stage keeps its own bookkeeping (which items are done, the output files, their order, resume)
in the driver; an executor only decides where each judgement is computed. So the files a stage
writes do not depend on the executor, and a run killed under one executor resumes under the
other.

``ray`` starts a pool of Ray actors, each holding one judge built from the same options as a
local run (HTTP to one or several OpenAI-compatible servers, or an in-process model on a GPU
actor), and sends them the items, not the images: an actor reads each image where it runs.
Ray restarts an actor whose process dies and retries the calls it had in flight, so a lost
worker costs time, never an item. Ray is imported only when this executor is chosen
(extra ``rationalrewards[ray]``).
"""

from __future__ import annotations

from typing import Any

from .options import EXECUTORS, LOCAL, ExecutorOptions


def reward_model(options: dict[str, Any], executor: ExecutorOptions | None = None) -> Any:
    """A :class:`~rationalrewards.critique.model.RewardModel` built from ``options`` (those of
    :meth:`RewardModel.from_options`), judging here or on Ray actors.

    The Ray model is a ``RewardModel`` too: every stage that takes one takes it unchanged.
    """
    from ..critique.model import RewardModel

    if executor is None or executor.is_local:
        return RewardModel.from_options(**options)
    from .ray_executor import RayRewardModel

    return RayRewardModel(options, executor)


__all__ = ["EXECUTORS", "LOCAL", "ExecutorOptions", "reward_model"]
