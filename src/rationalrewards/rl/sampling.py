"""Sampling for the RL trainer: the deterministic ODE sampler and the group sampler.

:func:`ode_sample` integrates the probability-flow ODE with a family's velocity;
:class:`GroupSampler` samples whole prompt groups with one LoRA adapter and hands each finished
group to the reward in the background, so the judge works while the next groups are sampled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .data import PromptRow, open_source
from .families import Cond, FlowFamily
from .lora import POLICY, activate
from .rewarding import RewardClient, ScoredBatch

if TYPE_CHECKING:
    import torch


def ode_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    sampler: str = "heun",
) -> torch.Tensor:
    """Integrate the probability-flow ODE from ``sigmas[0]`` to ``sigmas[-1]`` (deterministic).

    ``velocity(x, sigma)`` returns ``dx/dsigma``. ``euler`` takes one evaluation per step;
    ``heun`` (2nd order) averages it with the slope at the end of the step, except on the last
    step into sigma = 0 where that slope is undefined in practice.
    """
    import torch

    if sampler not in ("euler", "heun"):
        raise ValueError(f"unknown sampler {sampler!r}; use euler or heun")
    x = x.float()
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        ds = float(s_next - s)
        v = velocity(x, s.reshape(1)).float()
        x_euler = x + ds * v
        if sampler == "heun" and float(s_next) > 0:
            v2 = velocity(x_euler, s_next.reshape(1)).float()
            x = x + ds * 0.5 * (v + v2)
        else:
            x = x_euler
    return x.to(torch.float32)


def chunks(seq: Sequence[Any] | Iterable[Any], size: int) -> list[list[Any]]:
    items = list(seq)
    return [items[i : i + size] for i in range(0, len(items), size)]


class GroupSampler:
    """Samples prompt groups with a family's own components and scores them in the background.

    Args:
        family: the pipeline family (its encoders, velocity and decoder are used).
        transformer: the transformer holding the LoRA adapters (adapters are switched on it).
        model: what the forward passes call: the transformer as ``accelerator.prepare`` wrapped
            it (under FSDP only the wrapper gathers sharded parameters); default ``transformer``.
        accelerator: for the device and autocast.
        client: where finished groups are sent for scoring.
        sigmas: the sampler's noise levels (from ``family.sampling_sigmas``).
        task: ``t2i`` or ``edit`` (edits encode and send the rows' sources).
        batch_size: images per sampling forward pass.
        sampler: ``euler`` or ``heun``.
        say: where warnings go (a failed reward call masks its samples and is reported).
    """

    def __init__(self, family: FlowFamily, transformer: Any, accelerator: Any, client: RewardClient, sigmas: Any, *,
                 task: str, batch_size: int, sampler: str, say: Callable[[str], None], model: Any = None) -> None:
        self.family = family
        self.transformer = transformer
        self.model = model if model is not None else transformer
        self.accelerator = accelerator
        self.device = accelerator.device
        self.client = client
        self.sigmas = sigmas
        self.task = task
        self.batch_size = batch_size
        self.sampler = sampler
        self.say = say

    def encode(self, rows: Sequence[PromptRow]) -> tuple[Cond, list[list[Any]] | None]:
        """Conditioning for ``rows`` (one entry per group) and, for edits, each group's sources."""
        sources = [[open_source(p) for p in r.sources] for r in rows] if self.task == "edit" else None
        return self.family.encode([r.prompt for r in rows], sources), sources

    def velocity_fn(self, cond: Cond) -> Callable[[Any, Any], Any]:
        def velocity(x: Any, sigma: Any) -> Any:
            with self.accelerator.autocast():
                return self.family.velocity(self.model, x.to(self.device), sigma.to(self.device), cond)

        return velocity

    def generate(
        self,
        rows: Sequence[PromptRow],
        per_row: int,
        noise: Any,
        adapter: str,
        *,
        tag: str,
    ) -> tuple[Any, Cond, Any, list[Any], list[ScoredBatch], dict[str, float]]:
        """Sample ``per_row`` images per row from ``noise`` with ``adapter``, scoring finished
        groups in the background. Returns (x0, group cond, sample->group index, images, scored
        parts, timings)."""
        import torch

        t0 = time.perf_counter()
        cond, sources = self.encode(rows)
        sample_group = torch.arange(len(rows)).repeat_interleave(per_row)
        n = len(rows) * per_row
        prompts = [rows[int(g)].prompt for g in sample_group]
        keys = [rows[int(g)].key for g in sample_group]
        srcs = [_reward_source(sources[int(g)]) for g in sample_group] if sources is not None else None
        x0_parts: list[Any] = []
        images: list[Any] = []
        futures: list[Future[Any]] = []
        spans: list[tuple[int, int]] = []
        done_groups = 0
        activate(self.transformer, adapter)
        try:
            with torch.no_grad():
                for idx in chunks(range(n), self.batch_size):
                    sel = torch.tensor(idx)
                    x = noise.index_select(0, sel).to(self.device)
                    velocity = self.velocity_fn(cond.take(sample_group.index_select(0, sel)))
                    x0 = ode_sample(velocity, x, self.sigmas, sampler=self.sampler)
                    x0_parts.append(x0)
                    images.extend(self.family.decode(x0))
                    complete = len(images) // per_row
                    if complete > done_groups:
                        a, b = done_groups * per_row, complete * per_row
                        futures.append(self.client.submit(
                            images[a:b], prompts[a:b], srcs[a:b] if srcs is not None else None, keys[a:b]))
                        spans.append((a, b))
                        done_groups = complete
        finally:
            activate(self.transformer, POLICY)
        t1 = time.perf_counter()
        parts = []
        for (a, b), fut in zip(spans, futures, strict=True):
            try:
                parts.append(ScoredBatch.from_result(fut.result(), b - a))
            except Exception as exc:
                # One failed reward call masks its samples, it does not kill the run; the
                # consecutive-failure guard stops a run whose judge is gone.
                self.say(f"warning: {tag} reward call failed for samples {a}-{b}: {type(exc).__name__}: {exc}")
                parts.append(ScoredBatch([math.nan] * (b - a), [False] * (b - a), [math.nan] * (b - a), {},
                                         ["reward-error"] * (b - a)))
        t2 = time.perf_counter()
        x0_all = torch.cat(x0_parts)
        return x0_all, cond, sample_group, images, parts, {"sample_s": t1 - t0, "reward_wait_s": t2 - t1}


def _reward_source(group_sources: list[Any]) -> Any:
    """What the reward gets as a sample's source: the image, or the list when there are several."""
    return group_sources[0] if len(group_sources) == 1 else list(group_sources)
