"""The options of an executor (where a batch stage's judging runs); see the package docstring."""

from __future__ import annotations

import math
from dataclasses import dataclass

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorOptions:
    """How a batch stage spreads its judging.

    Args:
        kind: ``local`` (this process) or ``ray``.
        address: the Ray cluster to join (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``); ``None``
            joins the cluster named by ``RAY_ADDRESS`` or starts a local Ray instance.
        workers: Ray actors (judges) to start; ``None`` = as many as the cluster has room for
            (its CPUs / ``num_cpus``, or its GPUs / ``num_gpus`` for GPU actors).
        num_cpus: CPUs Ray reserves per actor.
        num_gpus: GPUs per actor (for an in-process ``--model`` on GPU nodes; 0 for HTTP judges).
    """

    kind: str = "local"
    address: str | None = None
    workers: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"unknown executor {self.kind!r}; use {' or '.join(EXECUTORS)}")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise ValueError(f"workers must be an integer >= 1, not {self.workers!r}")
        for name in ("num_cpus", "num_gpus"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if self.kind == "local" and (self.address or self.workers or self.num_gpus):
            raise ValueError("--ray-address, --ray-workers and --ray-num-gpus need --executor ray")

    @property
    def is_local(self) -> bool:
        return self.kind == "local"


LOCAL = ExecutorOptions()
