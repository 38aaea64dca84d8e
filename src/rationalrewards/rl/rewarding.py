"""The trainer's side of rewards: any reward object scored in the background, normalised results.

:class:`RewardClient` runs a reward object (``submit()``, ``async score()`` or a plain callable)
without blocking sampling; :class:`ScoredBatch` is a result in the trainer's terms whatever the
reward returned; :func:`build_reward` makes the reward a config names.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..critique.model import BackgroundLoop
from .config import ConfigError, NFTConfig


class RewardUnavailableError(RuntimeError):
    """No sample of several consecutive iterations got a valid reward (the judge is down or broken)."""



@dataclass
class ScoredBatch:
    """A reward result in the trainer's terms (any reward object is normalised to this)."""

    rewards: list[float]
    valid: list[bool]
    base: list[float]
    scores: dict[str, list[float]]
    failure_kinds: list[str | None]
    critiques: list[Any] | None = None

    @classmethod
    def from_result(cls, result: Any, n: int) -> ScoredBatch:
        """Accepts a :class:`~rationalrewards.rl.RewardBatch`, anything with ``rewards`` (and
        optionally ``valid``, ``scores``, ``base_rewards``, ``critiques``), a dict with those
        keys, or a plain sequence of floats."""
        if isinstance(result, dict):
            get = result.get
        elif hasattr(result, "rewards"):
            def get(k: str, d: Any = None) -> Any:
                return getattr(result, k, d)
        else:
            values = list(result)
            result = {"rewards": values}
            get = result.get
        rewards = [_float(x) for x in list(get("rewards"))]
        if len(rewards) != n:
            raise ValueError(f"reward returned {len(rewards)} values for {n} images")
        valid_in = get("valid")
        valid = [bool(v) for v in valid_in] if valid_in is not None else [not math.isnan(r) for r in rewards]
        valid = [v and not math.isnan(r) for v, r in zip(valid, rewards, strict=True)]
        rewards = [r if v else math.nan for r, v in zip(rewards, valid, strict=True)]
        base_in = get("base_rewards")
        base = [_float(b) for b in base_in] if base_in is not None else list(rewards)
        base = [b if v else math.nan for b, v in zip(base, valid, strict=True)]
        scores = {str(k): [_float(x) for x in col] for k, col in dict(get("scores") or {}).items()}
        critiques = get("critiques")
        kinds: list[str | None]
        if hasattr(result, "failure_kinds") and callable(result.failure_kinds):
            kinds = list(result.failure_kinds())
        elif critiques is not None:
            kinds = [None if ok else (getattr(c, "error_kind", None) or "invalid") for c, ok in zip(critiques, valid, strict=True)]
        else:
            kinds = [None if ok else "invalid" for ok in valid]
        kinds = [None if ok else (k or "invalid") for k, ok in zip(kinds, valid, strict=True)]
        return cls(rewards, valid, base, scores, kinds, list(critiques) if critiques is not None else None)

    @staticmethod
    def concat(parts: Sequence[ScoredBatch]) -> ScoredBatch:
        keys: list[str] = []
        for p in parts:
            keys.extend(k for k in p.scores if k not in keys)
        scores = {k: [x for p in parts for x in p.scores.get(k, [math.nan] * len(p.rewards))] for k in keys}
        has_crit = any(p.critiques is not None for p in parts)
        return ScoredBatch(
            rewards=[x for p in parts for x in p.rewards],
            valid=[x for p in parts for x in p.valid],
            base=[x for p in parts for x in p.base],
            scores=scores,
            failure_kinds=[x for p in parts for x in p.failure_kinds],
            critiques=[c for p in parts for c in (p.critiques or [None] * len(p.rewards))] if has_crit else None,
        )


def _float(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


class BrightnessReward:
    """A deterministic test reward: mean luminance in [0, 1], reported as dimension ``brightness``.

    It follows the reward protocol the trainer expects (``async score(images, prompts,
    sources=None, group_ids=None)``), so it stands in for the judge in tests and benchmarks.
    """

    async def score(self, images: Sequence[Any], prompts: Sequence[str], sources: Any = None,
                    group_ids: Sequence[Any] | None = None) -> dict[str, Any]:
        from PIL import ImageStat

        values = [ImageStat.Stat(img.convert("L")).mean[0] / 255.0 for img in images]
        return {"rewards": values, "valid": [True] * len(values), "scores": {"brightness": list(values)}}


class RewardClient:
    """Runs any supported reward object in the background and returns futures.

    Supported: objects with ``submit(images, prompts, sources=, group_ids=)`` returning a
    future (:class:`~rationalrewards.rl.RationalReward`), objects with an ``async score(...)``,
    or plain callables ``fn(images, prompts, sources) -> rewards``.
    """

    def __init__(self, reward: Any) -> None:
        self.reward = reward
        self._loop: BackgroundLoop | None = None
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, images: list[Any], prompts: list[str], sources: list[Any] | None,
               group_ids: list[str]) -> Future[Any]:
        r = self.reward
        if hasattr(r, "submit"):
            return r.submit(images, prompts, sources=sources, group_ids=group_ids)
        score = getattr(r, "score", None)
        if score is not None and inspect.iscoroutinefunction(score):
            if self._loop is None:
                self._loop = BackgroundLoop("nft-reward-loop")
            coro = score(images, prompts, sources=sources, group_ids=group_ids)
            return asyncio.run_coroutine_threadsafe(coro, self._loop.loop)
        fn = score if score is not None else r
        if not callable(fn):
            raise TypeError(f"unsupported reward object {type(r).__name__}: give it submit(), async score() or __call__")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nft-reward")
        return self._pool.submit(fn, images, prompts, sources)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def build_reward(cfg: NFTConfig) -> Any:
    """The reward object named by the config's ``reward_*`` fields."""
    kind = cfg.reward_kind
    if kind == "brightness":
        return BrightnessReward()
    if kind == "python":
        import importlib

        module, _, name = (cfg.reward_target or "").partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"reward_target {cfg.reward_target!r} cannot be imported: {exc}") from None
        return factory(**cfg.reward_kwargs)
    from .reward import RationalReward

    if kind == "server":
        from ..serve.client import RemoteReward

        scorer: Any = RemoteReward(cfg.reward_server_url or "", cfg.reward_token, timeout=cfg.reward_timeout,
                                   max_retries=cfg.reward_max_retries, concurrency=max(1, cfg.reward_concurrency // 4),
                                   aggregation=cfg.reward_weights)
    else:
        from ..backends import SamplingParams
        from ..critique.model import RewardModel

        scorer = RewardModel.from_options(
            base_url=cfg.reward_base_url, model=cfg.reward_model,
            api_key=cfg.reward_api_key or os.environ.get("OPENAI_API_KEY"),
            concurrency=cfg.reward_concurrency, timeout=cfg.reward_timeout, max_retries=cfg.reward_max_retries,
            device=cfg.reward_device, dtype=cfg.reward_dtype,
            aggregation=cfg.reward_weights or "default",
            sampling=SamplingParams(temperature=cfg.reward_temperature, max_tokens=cfg.reward_max_tokens),
        )
    return RationalReward(scorer, failure_policy=cfg.reward_failure_policy, scores_only=cfg.reward_scores_only,
                          aggregation=cfg.reward_aggregation, weights=cfg.reward_weights,
                          concurrency=cfg.reward_concurrency)
