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
import warnings
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
    resize_sources: int | tuple[int, int] | None = None,
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
        resize_sources: ``(width, height)`` (or one int for a square) to resize every source
            image taken from ``metadata`` to before judging. flow_grpo's metadata holds the path
            of the ORIGINAL source image, while its edit generator saw that image resized to
            ``(resolution, resolution)``; pass ``resize_sources=config.resolution`` so the judge
            compares the edit with the source the generator actually got. Sources passed as
            ``ref_images`` are used as given.

    The function returns ``(scores, meta)`` with float32 numpy arrays and
    ``meta = {"valid", "filled_by", "failure_reasons", "stats", "critiques"}``. Sources come
    from ``ref_images`` (a list aligned with ``images``) or else from ``metadata``.
    """
    rr = _as_reward(reward, dict(reward_kwargs))
    if output not in ("dict", "array"):
        raise ValueError(f"output must be 'dict' or 'array', not {output!r}")
    keys_pinned = list(keys_for(task)) if task else None
    resize_to = _size_pair(resize_sources)

    def reward_fn(images: Any, prompts: Sequence[str], metadata: Any = None, ref_images: Any = None,
                  **_: Any) -> tuple[Any, dict[str, Any]]:
        import numpy as np

        prompt_list = list(prompts)
        n = len(prompt_list)
        if ref_images is not None:
            sources = ref_images
        else:
            sources = sources_from_metadata(metadata, n, source_keys, base_dir)
            if sources is not None and resize_to is not None:
                sources = [_resized_source(s, resize_to) for s in sources]
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


def _size_pair(size: int | tuple[int, int] | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"resize_sources must be a positive int or (width, height), not {size!r}")
    return (int(pair[0]), int(pair[1]))


def _resized_source(source: Any, size: tuple[int, int]) -> Any:
    """A metadata source (path, PIL image, array, or a list of them) resized as flow_grpo resizes
    the generator's input (``PIL.Image.resize`` with its default filter). A source that cannot
    be opened is passed on unchanged, so the reward reports it as that sample's failure."""
    from PIL import Image

    from .media import to_image

    if source is None:
        return None
    if isinstance(source, (list, tuple)):
        return [_resized_source(s, size) for s in source]
    img = to_image(source)
    if isinstance(img, (str, os.PathLike)) and not str(img).startswith("data:"):
        try:
            with Image.open(img) as opened:
                img = opened.convert("RGB")
        except OSError:
            return source
    if isinstance(img, Image.Image):
        return img.convert("RGB").resize(size)
    return source


def make_flow_grpo_score_factory(
    reward: Any = None,
    *,
    build: Callable[..., Any] | None = None,
    config: Mapping[str, Any] | None = None,
    **fn_kwargs: Any,
) -> Callable[..., Callable[..., tuple[Any, dict[str, Any]]]]:
    """An entry for flow_grpo's ``multi_score`` score table.

    flow_grpo does not call a table entry as the reward: it calls it as a factory, ``fn(device)``
    when the function has a ``device`` variable (it checks ``fn.__code__.co_varnames``) or else
    ``fn()``, and then calls the function that returns as ``scores, meta = f(images, prompts,
    metadata)``, multiplying ``scores`` by the entry's weight. This returns such a factory::

        # in flow_grpo/rewards.py
        from rationalrewards.rl import make_flow_grpo_score_factory
        rationalrewards_score = make_flow_grpo_score_factory(
            config={"base_url": "http://127.0.0.1:8000/v1", "model": "RationalRewards-8B-Edit"},
            source_keys=("image",), base_dir="dataset/kontext", resize_sources=512)
        # ... and in multi_score's table:  "rationalrewards": rationalrewards_score,
        # config.reward_fn = {"rationalrewards": 1.0}

    The judge comes from ``reward`` (a ``RationalReward``, ``RewardModel`` or ``RemoteReward``),
    ``build(device)`` (called once, in the factory, so nothing connects at import), or
    ``config`` (the keys of :func:`reward_from_config`). ``fn_kwargs`` go to
    :func:`make_flow_grpo_reward_fn` (``task``, ``source_keys``, ``base_dir``,
    ``resize_sources``, ``failure_policy``...); the returned function gives the scalar array
    (``output="array"``). ``multi_score`` passes no ``ref_images`` to table entries, so edit
    sources come from ``metadata`` (see ``resize_sources``).
    """
    given = sum(x is not None for x in (reward, build, config))
    if given != 1:
        raise TypeError("give exactly one of reward, build (a function of device) or config")
    if "output" in fn_kwargs:
        raise TypeError("a multi_score entry returns the scalar array; output cannot be changed")
    _size_pair(fn_kwargs.get("resize_sources"))  # a bad size fails here, not at the first reward call

    def rationalrewards_score(device: Any = None) -> Callable[..., tuple[Any, dict[str, Any]]]:
        if build is not None:
            judge = build(device)
        elif config is not None:
            judge = reward_from_config(dict(config))
        else:
            judge = reward
        return make_flow_grpo_reward_fn(judge, output="array", **fn_kwargs)

    return rationalrewards_score


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


# Flow-Factory's own reward-model key names (its built-in rational_rewards_t2i / _edit entries)
# and ours: a Flow-Factory YAML switches to this reward by changing only ``reward_model``.
FLOW_FACTORY_ALIASES: dict[str, str] = {
    "api_base_url": "base_url",
    "vlm_model": "model",
    "max_concurrent": "concurrency",
}
# Read by the adapters themselves (ours), or Flow-Factory's aliases of them.
_OUR_KEYS = frozenset({
    "server_url", "token", "base_url", "model", "model_name_or_path", "api_key", "failure_policy", "aggregation",
    "weights", "scores_only", "timeout", "concurrency", "max_retries", "temperature", "max_tokens", "aspects",
    "device_map", "dimension", "na_value", "task",
})
# Fields of Flow-Factory's RewardArguments that Flow-Factory itself consumes (batching, device,
# weighting): never a reason to warn.
_FLOW_FACTORY_FIELDS = frozenset({
    "name", "reward_model", "weight", "dtype", "device", "batch_size", "async_reward", "num_workers", "extra_kwargs",
})


def _config_keys(config: Any) -> list[str]:
    """The keys a user wrote in a reward entry (Flow-Factory keeps unknown ones in extra_kwargs)."""
    if config is None:
        return []
    if isinstance(config, Mapping):
        return [str(k) for k in config]
    extra = getattr(config, "extra_kwargs", None)
    if isinstance(extra, Mapping):
        return [str(k) for k in extra]
    return [k for k in getattr(config, "__dict__", {}) if not k.startswith("_")]


def _option(config: Any, name: str, default: Any = None) -> Any:
    """Our key, else its Flow-Factory alias."""
    value = _config_get(config, name)
    if value is None:
        for alias, ours in FLOW_FACTORY_ALIASES.items():
            if ours == name:
                value = _config_get(config, alias)
                if value is not None:
                    break
    return default if value is None else value


def _aspects_to_weights(aspects: Any) -> str:
    """Flow-Factory's ``aspects`` (the dimensions to average, N/A skipped, mean mapped by
    (m - 1) / 3) are equal weights on those dimensions."""
    if isinstance(aspects, str):
        aspects = [a.strip() for a in aspects.split(",") if a.strip()]
    if not isinstance(aspects, (list, tuple)) or not aspects or not all(isinstance(a, str) for a in aspects):
        raise ValueError(f"aspects must be a non-empty list of dimension names, not {aspects!r}")
    unknown = [a for a in aspects if a not in DIMENSION_KEYS]
    if unknown:
        raise ValueError(f"unknown aspect(s) {unknown}; known: {', '.join(DIMENSION_KEYS)}")
    return ",".join(f"{a}=1" for a in dict.fromkeys(aspects))


def reward_from_config(config: Any, *, remote: bool | None = None) -> RationalReward:
    """A :class:`RationalReward` from a Flow-Factory-style reward config (attributes, a dict, or
    Flow-Factory's ``RewardArguments`` with its ``extra_kwargs``).

    Keys: ``server_url`` + ``token`` (a ``rationalrewards serve`` instance), or ``base_url`` +
    ``model`` (+ ``api_key``) for an OpenAI-compatible judge, or ``model`` alone for an
    in-process checkpoint; ``failure_policy``, ``aggregation``, ``weights``, ``scores_only``,
    ``timeout``, ``concurrency``, ``max_retries``, ``temperature``, ``max_tokens``.

    Flow-Factory's own names for its built-in RationalRewards entries work too: ``api_base_url``
    (= ``base_url``), ``vlm_model`` (= ``model``), ``max_concurrent`` (= ``concurrency``) and
    ``aspects`` (the dimensions to average: equal ``weights`` on them). A key that nothing here
    reads is reported with ``warnings.warn`` (Flow-Factory's own fields such as ``batch_size``,
    ``device`` or ``weight`` are not). Rewards built from equal settings are shared (one critique
    per image even when several reward heads, e.g. one per dimension, read it).
    """
    ignored = [k for k in _config_keys(config)
               if k not in _OUR_KEYS and k not in FLOW_FACTORY_ALIASES and k not in _FLOW_FACTORY_FIELDS]
    if ignored:
        warnings.warn(f"RationalRewards reward config: ignoring key(s) {sorted(ignored)} (nothing reads them; "
                      f"known: {', '.join(sorted(_OUR_KEYS | set(FLOW_FACTORY_ALIASES)))})", UserWarning, stacklevel=3)
    server_url = _option(config, "server_url")
    if remote and not server_url:
        raise ValueError("server_url is required for a remote RationalRewards reward")
    base_url = _option(config, "base_url")
    model = _option(config, "model") or _config_get(config, "model_name_or_path")
    weights = _config_get(config, "weights")
    aspects = _config_get(config, "aspects")
    if aspects is not None:
        if weights is not None:
            raise ValueError("give either aspects (Flow-Factory's name) or weights, not both")
        weights = _aspects_to_weights(aspects)
    settings = {
        "failure_policy": _config_get(config, "failure_policy", ADAPTER_FAILURE_POLICY),
        "aggregation": _config_get(config, "aggregation", "sum"),
        "weights": weights,
        "scores_only": bool(_config_get(config, "scores_only", True)),
    }
    timeout = float(_config_get(config, "timeout", 300.0))
    concurrency = int(_option(config, "concurrency", 32))
    max_retries = _config_get(config, "max_retries")
    sampling = {"temperature": _config_get(config, "temperature"), "max_tokens": _config_get(config, "max_tokens")}
    token = _config_get(config, "token")
    api_key = _config_get(config, "api_key")
    key = (server_url, token, base_url, model, api_key, timeout, concurrency, max_retries,
           json.dumps([settings, sampling], sort_keys=True, default=str))
    with _SHARED_LOCK:
        if key in _SHARED:
            return _SHARED[key]
        scorer: Any
        if server_url:
            from ..serve.client import RemoteReward

            retries = {"max_retries": int(max_retries)} if max_retries is not None else {}
            scorer = RemoteReward(server_url, token, timeout=timeout, concurrency=max(1, concurrency // 8), **retries)
        elif base_url:
            from ..critique.model import RewardModel

            scorer = RewardModel.from_options(
                base_url=base_url, model=model, api_key=api_key, concurrency=concurrency, timeout=timeout,
                max_retries=None if max_retries is None else int(max_retries),
                temperature=None if sampling["temperature"] is None else float(sampling["temperature"]),
                max_tokens=None if sampling["max_tokens"] is None else int(sampling["max_tokens"]),
            )
        elif model:
            from ..critique.model import RewardModel

            scorer = RewardModel.from_pretrained(model, device=_config_get(config, "device_map", "auto"))
        else:
            raise ValueError("a RationalRewards reward config needs server_url, base_url (Flow-Factory: "
                             "api_base_url) + model (vlm_model), or model alone")
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
            aspects = _config_get(config, "aspects")
            if task is None and isinstance(aspects, (list, tuple)) and "image_faithfulness" in aspects:
                # Image faithfulness exists only for edits: Flow-Factory's edit entry has no task key.
                task = "edit"
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
