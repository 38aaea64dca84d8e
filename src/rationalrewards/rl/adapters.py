"""Adapters for the reward contracts of RL frameworks (reference.md §8).

1. Functional, as in flow_grpo and DiffusionNFT::

       reward_fn = make_flow_grpo_reward_fn(RewardModel.from_openai(URL, model=NAME))
       scores, meta = reward_fn(images, prompts, metadata)           # t2i
       scores, meta = reward_fn(images, prompts, metadata, ref_images)  # edit (flow_grpo's 4th arg)
       scores["avg"], scores["text_faithfulness"], ...                # float32 numpy arrays

2. Class-based, in the style of Flow-Factory (a pointwise model called with ``prompt``,
   ``image`` and ``condition_images``, returning an object with ``rewards`` and
   ``extra_info``; a groupwise variant called once per group; remote variants that call a
   ``rationalrewards serve`` instance). :mod:`rationalrewards.rl.flow_factory` turns them into
   real Flow-Factory reward models when that package is installed.

Failures: the adapters default to ``retry:1,group-mean,batch-mean,raise``. A NaN reaching a
framework's group statistics would poison a whole batch, and a constant (the group's or the
batch's mean) gives the failed sample zero advantage instead of a fake low score; if nothing
in the batch could be judged, the call raises instead of inventing rewards. ``meta`` /
``extra_info`` always carry the validity mask and the reasons.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..critique.dimensions import DIMENSION_KEYS, keys_for
from .reward import RationalReward, RewardBatch

ADAPTER_FAILURE_POLICY = "retry:1,group-mean,batch-mean,raise"
DEFAULT_SOURCE_KEYS: tuple[str, ...] = ("source_image", "source_images", "ref_image", "ref_images")
DEFAULT_NA_VALUE = 0.5


def _as_reward(reward: Any, reward_kwargs: dict[str, Any]) -> RationalReward:
    if isinstance(reward, RationalReward):
        if reward_kwargs:
            raise TypeError(f"options {sorted(reward_kwargs)} apply when building a RationalReward; "
                            "pass them to RationalReward(...) instead")
        return reward
    reward_kwargs.setdefault("failure_policy", ADAPTER_FAILURE_POLICY)
    return RationalReward(reward, **reward_kwargs)


def _resolve_path(value: Any, base_dir: str | None) -> Any:
    if base_dir and isinstance(value, str) and not value.startswith("data:") and not os.path.isabs(value):
        return os.path.join(base_dir, value)
    if isinstance(value, (list, tuple)):
        return [_resolve_path(v, base_dir) for v in value]
    return value


def sources_from_metadata(metadata: Any, n: int, keys: Sequence[str], base_dir: str | None = None) -> list[Any] | None:
    """Per-sample source images from metadata dicts: the first of ``keys`` present in each.

    Returns None when no sample has any of the keys (a t2i batch). Path strings are resolved
    against ``base_dir``.
    """
    if not isinstance(metadata, (list, tuple)) or len(metadata) != n:
        return None
    found = False
    out: list[Any] = []
    for md in metadata:
        value = None
        if isinstance(md, Mapping):
            for key in keys:
                if md.get(key) is not None:
                    value = md[key]
                    break
        found = found or value is not None
        out.append(_resolve_path(value, base_dir))
    return out if found else None


def make_flow_grpo_reward_fn(
    reward: Any,
    *,
    output: Literal["dict", "array"] = "dict",
    task: Literal["t2i", "edit"] | None = None,
    source_keys: Sequence[str] = DEFAULT_SOURCE_KEYS,
    base_dir: str | None = None,
    dimension_scale: Literal["unit", "raw"] = "unit",
    na_value: float | None = DEFAULT_NA_VALUE,
    include_critiques: bool = True,
    **reward_kwargs: Any,
) -> Callable[..., tuple[Any, dict[str, Any]]]:
    """A flow_grpo / DiffusionNFT reward function: ``fn(images, prompts, metadata, ref_images=None)``.

    Args:
        reward: a :class:`RationalReward`, or a scorer (``RewardModel`` / ``RemoteReward``) to
            wrap with ``reward_kwargs`` (``failure_policy`` defaults to
            ``"retry:1,group-mean,batch-mean,raise"``; also ``aggregation``, ``weights``,
            ``scores_only``...).
        output: ``"dict"`` returns ``{"avg": ..., <dimension>: ...}`` (replaces flow_grpo's
            ``multi_score`` function); ``"array"`` returns only the scalar (to register as one
            entry of ``multi_score``'s table).
        task: pin the dimension keys (``t2i``: 3, ``edit``: 4). Default: the tasks in the
            batch. Multi-GPU runs gather every key on every rank, so all ranks must produce the
            same keys: pin ``task`` when a rank could see a batch of the other task.
        source_keys: metadata keys that hold an edit's source image(s), tried in order, when
            ``ref_images`` is not passed. Values: PIL images, arrays/tensors, bytes or paths
            (resolved against ``base_dir``), or lists of them.
        dimension_scale: per-dimension arrays on ``unit`` [0, 1] (same scale as ``avg`` with
            ``aggregation="sum"``) or ``raw`` 1-4.
        na_value: a dimension missing for a sample (N/A, or a failed critique) takes its group's
            mean, else this constant (a constant adds nothing to a group-normalised
            advantage); None keeps NaN.
        include_critiques: put every critique (as JSON) in ``meta["critiques"]``.

    The function returns ``(scores, meta)`` with float32 numpy arrays and
    ``meta = {"valid", "filled_by", "failure_reasons", "stats", "critiques"}``. Sources come
    from ``ref_images`` (a list aligned with ``images``) or else from ``metadata``.
    """
    rr = _as_reward(reward, dict(reward_kwargs))
    if output not in ("dict", "array"):
        raise ValueError(f"output must be 'dict' or 'array', not {output!r}")
    keys_pinned = list(keys_for(task)) if task else None

    def reward_fn(images: Any, prompts: Sequence[str], metadata: Any = None, ref_images: Any = None,
                  **_: Any) -> tuple[Any, dict[str, Any]]:
        import numpy as np

        prompt_list = list(prompts)
        n = len(prompt_list)
        sources = ref_images if ref_images is not None else sources_from_metadata(metadata, n, source_keys, base_dir)
        meta_list = list(metadata) if isinstance(metadata, (list, tuple)) and len(metadata) == n else None
        batch = rr(images, prompt_list, sources=sources, metadata=meta_list)
        keys = keys_pinned or list(batch.scores)
        scores: dict[str, Any] = {"avg": np.asarray(batch.rewards, dtype=np.float32)}
        for key in keys:
            scores[key] = np.asarray(batch.dimension(key, scale=dimension_scale, fill="group-mean",
                                                     na_value=na_value), dtype=np.float32)
        meta: dict[str, Any] = {
            "valid": np.asarray(batch.valid, dtype=bool),
            "filled_by": list(batch.filled_by),
            "failure_reasons": list(batch.failure_reasons),
            "stats": batch.stats(),
        }
        if include_critiques:
            meta["critiques"] = [c.to_json() for c in batch.critiques]
        return (scores if output == "dict" else scores["avg"]), meta

    reward_fn.reward = rr  # type: ignore[attr-defined]
    return reward_fn


# -- Flow-Factory style --------------------------------------------------------------------------


@dataclass
class RewardOutput:
    """What a Flow-Factory reward model returns: ``rewards`` (a float32 tensor when torch is
    installed, else a list) and ``extra_info``."""

    rewards: Any
    extra_info: dict[str, Any] | None = None


def _config_get(config: Any, name: str, default: Any = None) -> Any:
    if config is None:
        return default
    if isinstance(config, Mapping):
        return config.get(name, default)
    value = getattr(config, name, None)
    if value is None:
        extra = getattr(config, "extra_kwargs", None) or getattr(config, "kwargs", None)
        if isinstance(extra, Mapping):
            value = extra.get(name)
    return default if value is None else value


_SHARED: dict[Hashable, RationalReward] = {}
_SHARED_LOCK = threading.Lock()


def reward_from_config(config: Any, *, remote: bool | None = None) -> RationalReward:
    """A :class:`RationalReward` from a Flow-Factory-style reward config (attributes or a dict).

    Keys: ``server_url`` + ``token`` (a ``rationalrewards serve`` instance), or ``base_url`` +
    ``model`` (+ ``api_key``) for an OpenAI-compatible judge, or ``model`` alone for an
    in-process checkpoint; ``failure_policy``, ``aggregation``, ``weights``, ``scores_only``,
    ``timeout``, ``concurrency``. Rewards built from equal settings are shared (one critique
    per image even when several reward heads, e.g. one per dimension, read it).
    """
    server_url = _config_get(config, "server_url")
    if remote and not server_url:
        raise ValueError("server_url is required for a remote RationalRewards reward")
    base_url = _config_get(config, "base_url")
    model = _config_get(config, "model") or _config_get(config, "model_name_or_path")
    settings = {
        "failure_policy": _config_get(config, "failure_policy", ADAPTER_FAILURE_POLICY),
        "aggregation": _config_get(config, "aggregation", "sum"),
        "weights": _config_get(config, "weights"),
        "scores_only": bool(_config_get(config, "scores_only", True)),
    }
    timeout = float(_config_get(config, "timeout", 300.0))
    concurrency = int(_config_get(config, "concurrency", 32))
    token = _config_get(config, "token")
    key = (server_url, token, base_url, model, timeout, concurrency, json.dumps(settings, sort_keys=True, default=str))
    with _SHARED_LOCK:
        if key in _SHARED:
            return _SHARED[key]
        scorer: Any
        if server_url:
            from ..serve.client import RemoteReward

            scorer = RemoteReward(server_url, token, timeout=timeout, concurrency=max(1, concurrency // 8))
        elif base_url or model:
            from ..critique.model import RewardModel

            if base_url:
                scorer = RewardModel.from_openai(base_url, model, _config_get(config, "api_key"),
                                                 backend_kwargs={"concurrency": concurrency, "timeout": timeout})
            else:
                scorer = RewardModel.from_pretrained(model, device=_config_get(config, "device_map", "auto"))
        else:
            raise ValueError("a RationalRewards reward config needs server_url, base_url (+ model) or model")
        rr = RationalReward(scorer, memo_size=4096, **settings)
        _SHARED[key] = rr
        return rr


def _to_tensor(values: list[float], device: Any) -> Any:
    try:
        import torch
    except ImportError:
        return values
    return torch.tensor(values, dtype=torch.float32, device=device)


class PointwiseReward:
    """Flow-Factory-style pointwise reward model.

    Called with ``prompt`` (list of N strings), ``image`` (N PIL images or C x H x W tensors)
    and, for edits, ``condition_images`` (N lists of source images); returns
    :class:`RewardOutput` with N rewards. ``dimension="reward"`` returns the scalar; a
    dimension key (``text_faithfulness``, ...) returns that dimension on [0, 1], so one head
    per dimension lets the framework's own ``gdpo`` aggregation normalise each within the group
    (the heads share one critique per image).

    Construct it directly (``PointwiseReward(RewardModel.from_openai(...))``) or the
    Flow-Factory way, ``PointwiseReward(config=cfg, accelerator=acc)``, with the keys of
    :func:`reward_from_config` plus ``dimension`` and ``na_value`` in ``cfg``.
    """

    required_fields: tuple[str, ...] = ("prompt", "image")
    use_tensor_inputs: bool = False
    groupwise: bool = False

    def __init__(
        self,
        reward: Any = None,
        *,
        dimension: str = "reward",
        na_value: float | None = DEFAULT_NA_VALUE,
        task: Literal["t2i", "edit"] | None = None,
        device: Any = None,
        config: Any = None,
        accelerator: Any = None,
        **reward_kwargs: Any,
    ) -> None:
        self.config = config
        self.accelerator = accelerator
        if reward is None:
            if config is None:
                raise TypeError("pass a reward (RationalReward, RewardModel or RemoteReward) or a config")
            reward = self._reward_from_config(config)
            dimension = _config_get(config, "dimension", dimension)
            na_value = _config_get(config, "na_value", na_value)
            task = _config_get(config, "task", task)
        self.reward = _as_reward(reward, dict(reward_kwargs))
        if dimension != "reward" and dimension not in DIMENSION_KEYS:
            raise ValueError(f"dimension must be 'reward' or one of {', '.join(DIMENSION_KEYS)}, not {dimension!r}")
        if self.reward.aggregation.method == "gdpo" and not self.groupwise:
            raise ValueError("aggregation='gdpo' normalises within a group: use GroupwiseReward (called once per "
                             "group), or one PointwiseReward per dimension with the framework's gdpo aggregation")
        self.dimension = dimension
        self.na_value = na_value
        if task == "edit":
            self.required_fields = (*self.required_fields, "condition_images")
        self.device = device if device is not None else getattr(accelerator, "device", None)
        self.last_batch: RewardBatch | None = None

    def _reward_from_config(self, config: Any) -> RationalReward:
        return reward_from_config(config)

    def _group_ids(self, n: int) -> list[Hashable] | None:
        return None

    def __call__(
        self,
        prompt: Sequence[str],
        image: Any = None,
        condition_images: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> RewardOutput:
        if image is None:
            raise ValueError("this reward judges images: 'image' is required")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        n = len(prompts)
        batch = self.reward(image, prompts, sources=condition_images, group_ids=self._group_ids(n))
        self.last_batch = batch
        if self.dimension == "reward":
            values = list(batch.rewards)
        else:
            values = batch.dimension(self.dimension, fill="group-mean", na_value=self.na_value)
        extra = {
            "valid": list(batch.valid),
            "failure_reasons": list(batch.failure_reasons),
            "filled_by": list(batch.filled_by),
            "scores": {k: batch.dimension(k) for k in batch.scores},
            "stats": batch.stats(),
        }
        if any(math.isnan(v) for v in values) and self.dimension != "reward":
            extra["warning"] = f"{self.dimension}: NaN where neither a group value nor na_value was available"
        return RewardOutput(_to_tensor(values, self.device), extra)

    def to(self, device: Any) -> PointwiseReward:
        self.device = device
        return self


class GroupwiseReward(PointwiseReward):
    """Called once per group (all K samples of one prompt / source): ``aggregation="gdpo"``
    normalises every dimension within exactly that group."""

    groupwise = True

    def _group_ids(self, n: int) -> list[Hashable] | None:
        return [0] * n


class RemotePointwiseReward(PointwiseReward):
    """:class:`PointwiseReward` that calls a ``rationalrewards serve`` instance over HTTP.

    ``RemotePointwiseReward("http://127.0.0.1:8080", token="t")`` or, from a Flow-Factory
    config, ``RemotePointwiseReward(config=cfg, accelerator=acc)`` with ``server_url`` and
    ``token`` in ``cfg``.
    """

    def __init__(self, server_url: str | None = None, token: str | None = None, *, timeout: float = 300.0,
                 config: Any = None, accelerator: Any = None, **kwargs: Any) -> None:
        reward = None
        if server_url is not None:
            from ..serve.client import RemoteReward

            reward = RemoteReward(server_url, token, timeout=timeout)
        super().__init__(reward, config=config, accelerator=accelerator, **kwargs)

    def _reward_from_config(self, config: Any) -> RationalReward:
        return reward_from_config(config, remote=True)


class RemoteGroupwiseReward(RemotePointwiseReward):
    """:class:`GroupwiseReward` over HTTP."""

    groupwise = True

    def _group_ids(self, n: int) -> list[Hashable] | None:
        return [0] * n
