"""The reward object RL trainers call.

    from rationalrewards import RewardModel
    from rationalrewards.rl import RationalReward

    rm = RewardModel.from_openai("http://127.0.0.1:8000/v1", model="RationalRewards-8B-T2I")
    reward = RationalReward(rm, failure_policy="mask", aggregation="sum")
    batch = reward(images, prompts)                 # images: N x C x H x W tensor in [0, 1] or PILs
    batch.rewards, batch.valid, batch.scores["text_faithfulness"], batch.critiques[0].summary

A batch goes to the judge all at once (the backend batches or runs it concurrently), only up to
the end of the scores when ``scores_only`` (the refinement tail is never decoded), and every
failed critique is handled by an explicit, configurable :class:`FailurePolicy`: by default it is
masked (reward NaN, ``valid`` False) — never silently turned into the worst reward.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from ..critique.aggregate import Aggregation
from ..critique.dimensions import DIMENSION_KEYS, SCORE_MAX, SCORE_MIN, keys_for
from ..critique.schema import CritiqueResult, failed_critique
from ..images import DEFAULT_MAX_PIXELS, ImageInputError, PreparedImage, load_image
from .aggregation import (
    DimensionAggregation,
    combine_dimensions,
    group_index,
    parse_dimension_aggregation,
)
from .media import as_image_list, as_source_list

NAN = float("nan")
FillStep = Literal["group-mean", "batch-mean", "value"]
DEFAULT_RETRIES = 2
# Only these failures can turn out differently when asked again; an unreadable image cannot.
RETRYABLE_KINDS = ("parse", "backend")


class RewardFailure(RuntimeError):
    """Raised by a failure policy ending in ``raise`` when failed samples remain unresolved."""


@dataclass(frozen=True)
class FailurePolicy:
    """What a failed critique (or one with no usable score) becomes.

    Written as steps separated by commas, applied in order to whatever is still unresolved:

    ``retry`` / ``retry:N``  ask the judge again, up to N times (default 2), for parse and backend
                             failures (a new seed each time when the backend takes one);
    ``group-mean``           the mean reward of the valid samples of the same group;
    ``batch-mean``           the mean reward of the valid samples of the whole batch;
    ``value:X``              the constant X (explicitly chosen; e.g. ``value:0.5``);
    ``mask``                 (final, the default) leave the reward NaN;
    ``raise``                (final) raise :class:`RewardFailure` if anything is still NaN.

    Examples: ``"mask"``, ``"retry"``, ``"group-mean"``, ``"value:0.5"``,
    ``"retry:1,group-mean,batch-mean,raise"``. ``valid`` stays False for every failed sample
    whatever fills its reward, so trainers and logs can still count and exclude them.
    """

    retries: int = 0
    fills: tuple[tuple[FillStep, float | None], ...] = ()
    final: Literal["mask", "raise"] = "mask"
    spec: str = "mask"

    @classmethod
    def parse(cls, spec: str | FailurePolicy | None) -> FailurePolicy:
        if isinstance(spec, FailurePolicy):
            return spec
        text = "mask" if spec is None else str(spec).strip()
        steps = [s.strip() for s in text.split(",") if s.strip()]
        if not steps:
            raise ValueError("empty failure policy; use mask, retry[:N], group-mean, batch-mean, value:X, raise")
        retries = 0
        fills: list[tuple[FillStep, float | None]] = []
        final: Literal["mask", "raise"] = "mask"
        for pos, step in enumerate(steps):
            name, _, arg = step.partition(":")
            name = name.strip().lower()
            last = pos == len(steps) - 1
            if name in ("mask", "raise"):
                if not last:
                    raise ValueError(f"failure policy {text!r}: {name!r} must be the last step")
                final = name  # type: ignore[assignment]
            elif name == "retry":
                try:
                    retries = int(arg) if arg else DEFAULT_RETRIES
                except ValueError:
                    raise ValueError(f"failure policy {text!r}: retry count must be an integer, not {arg!r}") from None
                if retries < 1:
                    raise ValueError(f"failure policy {text!r}: retry count must be >= 1")
            elif name in ("group-mean", "batch-mean"):
                if arg:
                    raise ValueError(f"failure policy {text!r}: {name} takes no argument")
                fills.append((name, None))  # type: ignore[arg-type]
            elif name == "value":
                try:
                    value = float(arg)
                except ValueError:
                    raise ValueError(f"failure policy {text!r}: value:X needs a number, got {arg!r}") from None
                if not math.isfinite(value):
                    raise ValueError(f"failure policy {text!r}: value:X must be finite")
                fills.append(("value", value))
            else:
                raise ValueError(
                    f"unknown failure policy step {step!r} in {text!r}; "
                    "use mask, retry[:N], group-mean, batch-mean, value:X, raise"
                )
        return cls(retries=retries, fills=tuple(fills), final=final, spec=text)


@dataclass
class RewardBatch:
    """Rewards for one batch, aligned with the inputs.

    Attributes:
        rewards: the per-sample scalar; NaN where a failure was masked.
        valid: True where the critique succeeded and produced a scalar.
        scores: raw 1-4 score per dimension key (NaN where N/A, failed, or not a dimension of
            the sample's task). Keys: the dimensions of the tasks present in the batch.
        critiques: the full :class:`CritiqueResult` of every sample.
        failure_reasons: None for valid samples, else why (``"parse: missing dimension ..."``).
        filled_by: None for valid samples, else the policy step that set the reward
            (``group-mean``, ``batch-mean``, ``value``) or ``mask``.
        base_rewards: the weighted [0, 1] reward (NaN where invalid); equals ``rewards`` on
            valid samples with ``aggregation="sum"``.
        group_keys: the group of each sample (``gdpo`` and ``group-mean`` work within groups).
        tasks: ``t2i`` or ``edit`` per sample.
        attempts: judge calls spent on each sample (0 when its input could not be read).
        method: the aggregation method (``sum`` or ``gdpo``).
    """

    rewards: list[float]
    valid: list[bool]
    scores: dict[str, list[float]]
    critiques: list[CritiqueResult]
    failure_reasons: list[str | None]
    filled_by: list[str | None]
    base_rewards: list[float]
    group_keys: list[Hashable]
    tasks: list[str]
    attempts: list[int]
    method: str = "sum"
    metadata: list[Any] | None = None
    policy: str = "mask"
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def n_valid(self) -> int:
        return sum(self.valid)

    @property
    def n_failed(self) -> int:
        return len(self.valid) - self.n_valid

    @property
    def masked(self) -> list[bool]:
        """True where the reward is NaN (a failure the policy left unresolved)."""
        return [math.isnan(r) for r in self.rewards]

    def failure_kinds(self) -> list[str | None]:
        """``input`` / ``parse`` / ``backend`` / ``no-score`` per failed sample, None when valid."""
        out: list[str | None] = []
        for ok, c in zip(self.valid, self.critiques, strict=True):
            if ok:
                out.append(None)
            elif not c.ok:
                out.append(c.error_kind or "backend")
            else:
                out.append("no-score")
        return out

    def failure_counts(self) -> dict[str, int]:
        counts = {"input": 0, "parse": 0, "backend": 0, "no-score": 0}
        for kind in self.failure_kinds():
            if kind is not None:
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    @property
    def parse_failure_rate(self) -> float:
        return self.failure_counts()["parse"] / len(self) if len(self) else 0.0

    def tensor(self, device: Any = None, dtype: Any = None) -> Any:
        """``rewards`` as a 1-d float tensor (imports torch)."""
        import torch

        return torch.tensor(self.rewards, dtype=dtype or torch.float32, device=device)

    def numpy(self) -> Any:
        """``rewards`` as a float32 numpy array."""
        import numpy as np

        return np.asarray(self.rewards, dtype=np.float32)

    def dimension(
        self,
        key: str,
        *,
        scale: Literal["unit", "raw"] = "unit",
        fill: Literal["none", "group-mean"] = "none",
        na_value: float | None = None,
    ) -> list[float]:
        """One dimension per sample: ``unit`` maps 1-4 to [0, 1], ``raw`` keeps 1-4.

        Missing values (N/A, failed samples) are NaN, or with ``fill="group-mean"`` the mean of
        the group's present values; whatever is still missing then becomes ``na_value`` if given.
        A constant fill adds nothing to a group-normalised advantage when a whole group lacks
        the dimension (e.g. Text Rendering on prompts without text).
        """
        if key not in DIMENSION_KEYS:
            raise ValueError(f"unknown dimension {key!r}; expected one of {', '.join(DIMENSION_KEYS)}")
        raw = self.scores.get(key, [NAN] * len(self))
        values = [v if scale == "raw" else (v - SCORE_MIN) / (SCORE_MAX - SCORE_MIN) for v in raw]
        if fill == "group-mean":
            values = _fill_group_mean(values, self.group_keys)
        if na_value is not None:
            values = [na_value if math.isnan(v) else v for v in values]
        return values

    def stats(self, prefix: str = "") -> dict[str, float]:
        """Numbers worth logging every step (reward over valid samples, failure rates by kind,
        mean of every dimension, decode tokens)."""
        n = len(self)
        counts = self.failure_counts()
        good = [r for r, ok in zip(self.rewards, self.valid, strict=True) if ok]
        out: dict[str, float] = {
            "n": float(n),
            "n_valid": float(len(good)),
            "failure_rate": (n - len(good)) / n if n else 0.0,
            **{f"failure_rate/{k}": (v / n if n else 0.0) for k, v in counts.items()},
            "masked": float(sum(self.masked)),
            "reward_mean": statistics.fmean(good) if good else NAN,
            "reward_std": statistics.pstdev(good) if len(good) > 1 else 0.0 if good else NAN,
            "completion_tokens": float(sum(c.usage.completion_tokens for c in self.critiques if c.usage)),
            "retries": float(sum(max(0, a - 1) for a in self.attempts)),
        }
        for key, column in self.scores.items():
            present = [v for v in column if not math.isnan(v)]
            out[f"score/{key}"] = statistics.fmean(present) if present else NAN
        return {prefix + k: v for k, v in out.items()}


def _fill_group_mean(values: list[float], groups: Sequence[Hashable]) -> list[float]:
    out = list(values)
    for members in group_index(groups).values():
        present = [values[i] for i in members if not math.isnan(values[i])]
        if present and len(present) < len(members):
            mean = statistics.fmean(present)
            for i in members:
                if math.isnan(out[i]):
                    out[i] = mean
    return out


@dataclass
class _Prepared:
    prompt: str
    image: PreparedImage
    sources: list[PreparedImage]

    @property
    def task(self) -> Literal["t2i", "edit"]:
        return "edit" if self.sources else "t2i"


class RationalReward:
    """Per-sample rewards from critiques, for RL.

    Args:
        scorer: a :class:`~rationalrewards.RewardModel` (in process or over an OpenAI-compatible
            server) or a :class:`~rationalrewards.serve.RemoteReward` (a ``rationalrewards
            serve`` instance).
        failure_policy: see :class:`FailurePolicy` (default ``"mask"``).
        scores_only: stop the judge at the end of the scores (before the refinement tail),
            saving decode tokens; the critiques then have no ``refined_request``.
        aggregation: ``"sum"`` (weighted reward in [0, 1]) or ``"gdpo"`` (normalise each
            dimension within its group, then sum), or a :class:`DimensionAggregation`.
        weights: dimension weights (core preset, ``key=weight,...`` or ``Aggregation``);
            default: the scorer's own aggregation.
        concurrency: critiques in flight at once (default: the scorer's ``concurrency``).
        memo_size: keep this many recent successful critiques in memory, keyed by prompt and
            image content, and reuse them (0 = off). Useful when several reward heads read the
            same critique (one per dimension).
    """

    def __init__(
        self,
        scorer: Any,
        *,
        failure_policy: str | FailurePolicy = "mask",
        scores_only: bool = True,
        aggregation: str | DimensionAggregation | None = "sum",
        weights: Aggregation | str | None = None,
        concurrency: int | None = None,
        memo_size: int = 0,
    ) -> None:
        if not (hasattr(scorer, "acritique") or hasattr(scorer, "acritique_items")):
            raise TypeError(
                f"scorer must be a RewardModel or RemoteReward (something with acritique), not {type(scorer).__name__}"
            )
        self.scorer = scorer
        self.policy = FailurePolicy.parse(failure_policy)
        self.aggregation = parse_dimension_aggregation(aggregation, weights)
        self.weights = self.aggregation.resolve_weights(getattr(scorer, "aggregation", None))
        self.scores_only = scores_only
        self.concurrency = max(1, int(concurrency or getattr(scorer, "concurrency", 32) or 32))
        self.max_pixels = getattr(scorer, "max_pixels", DEFAULT_MAX_PIXELS)
        self.memo_size = max(0, int(memo_size))
        self._memo: OrderedDict[tuple[Any, ...], CritiqueResult] = OrderedDict()
        self._own_loop: Any = None

    # -- public API ---------------------------------------------------------------------------
    async def score(
        self,
        images: Any,
        prompts: Sequence[str],
        sources: Any = None,
        metadata: Sequence[Any] | None = None,
        group_ids: Sequence[Hashable] | None = None,
    ) -> RewardBatch:
        """Critique and reward a batch.

        Args:
            images: ``N x C x H x W`` tensor in [0, 1] (or uint8), numpy ``N x H x W x C``, or a
                list of PIL images / paths / bytes / arrays.
            prompts: N prompts (the edit instruction for edits).
            sources: None (t2i), or N entries each None, one source image or a list of them.
            metadata: optional N dicts carried through; a ``"id"`` key names the critique.
            group_ids: the group of each sample for ``gdpo`` and ``group-mean``; default: the
                pair (prompt, source images' content), so two edits of different sources with
                the same instruction are never one group.
        """
        imgs = as_image_list(images)
        n = len(imgs)
        prompt_list = _check_prompts(prompts, n)
        src_list = as_source_list(sources, n)
        meta = list(metadata) if metadata is not None else None
        if meta is not None and len(meta) != n:
            raise ValueError(f"metadata has {len(meta)} entries but there are {n} images")
        if group_ids is not None and len(group_ids) != n:
            raise ValueError(f"group_ids has {len(group_ids)} entries but there are {n} images")
        ids = [_id_of(meta[i]) if meta is not None else None for i in range(n)]

        loaded = await self._prepare_all(prompt_list, imgs, src_list, ids)
        prepared = [job for job, _ in loaded]
        critiques, attempts = await self._critique_all(prepared, ids)
        groups: list[Hashable] = (
            list(group_ids) if group_ids is not None
            else [(prompt_list[i], src_key) for i, (_, src_key) in enumerate(loaded)]
        )
        return self._assemble(critiques, attempts, groups, meta)

    def __call__(
        self,
        images: Any,
        prompts: Sequence[str],
        sources: Any = None,
        metadata: Sequence[Any] | None = None,
        group_ids: Sequence[Hashable] | None = None,
    ) -> RewardBatch:
        """Synchronous :meth:`score` (runs on a private event loop; use ``await score`` in async code)."""
        return self.submit(images, prompts, sources, metadata, group_ids).result()

    def submit(
        self,
        images: Any,
        prompts: Sequence[str],
        sources: Any = None,
        metadata: Sequence[Any] | None = None,
        group_ids: Sequence[Hashable] | None = None,
    ) -> Future[RewardBatch]:
        """Start scoring in the background and return at once: a trainer keeps sampling the next
        batch while the judge works, then calls ``.result()``."""
        loop = self._loop()
        return asyncio.run_coroutine_threadsafe(self.score(images, prompts, sources, metadata, group_ids), loop)

    def close(self) -> None:
        """Stop the private event loop (the scorer stays open; close it yourself)."""
        if self._own_loop is not None:
            self._own_loop.stop()
            self._own_loop = None

    def __enter__(self) -> RationalReward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {
            "failure_policy": self.policy.spec,
            "aggregation": self.aggregation.method,
            "weights": self.weights.name,
            "scores_only": self.scores_only,
        }

    # -- internals ----------------------------------------------------------------------------
    def _loop(self) -> asyncio.AbstractEventLoop:
        from ..critique.model import BackgroundLoop, RewardModel

        if isinstance(self.scorer, RewardModel):
            # The in-process backend batches futures of ONE loop: share the model's own loop.
            return self.scorer.event_loop
        if self._own_loop is None:
            self._own_loop = BackgroundLoop()
        return self._own_loop.loop

    async def _prepare_all(
        self, prompts: list[str], images: list[Any], sources: list[Any], ids: list[str | None]
    ) -> list[tuple[_Prepared | CritiqueResult, Hashable]]:
        """Read every image once (downscaled to the judge's cap); returns (job or input failure,
        source content key) per sample."""

        def load(i: int) -> tuple[_Prepared | CritiqueResult, Hashable]:
            src = sources[i]
            src_items = [] if src is None else list(src) if isinstance(src, (list, tuple)) else [src]
            task: Literal["t2i", "edit"] = "edit" if src_items else "t2i"
            # Sources first: their content keys the group even when the generated image is bad.
            try:
                srcs = [
                    load_image(s, max_pixels=self.max_pixels, allow_base64=True,
                               name=f"sources[{i}]" + (f"[{k}]" if len(src_items) > 1 else ""))
                    for k, s in enumerate(src_items)
                ]
            except ImageInputError as exc:
                return failed_critique(task, "input", str(exc), id=ids[i]), ("unreadable source", i)
            src_key = tuple(s.sha256 for s in srcs)
            try:
                img = load_image(images[i], max_pixels=self.max_pixels, allow_base64=True, name=f"images[{i}]")
            except ImageInputError as exc:
                return failed_critique(task, "input", str(exc), id=ids[i]), src_key
            return _Prepared(prompts[i], img, srcs), src_key

        sem = asyncio.Semaphore(8)

        async def run(i: int) -> tuple[_Prepared | CritiqueResult, Hashable]:
            async with sem:
                return await asyncio.to_thread(load, i)

        return list(await asyncio.gather(*(run(i) for i in range(len(images)))))

    async def _critique_all(
        self, prepared: list[_Prepared | CritiqueResult], ids: list[str | None]
    ) -> tuple[list[CritiqueResult], list[int]]:
        n = len(prepared)
        results: list[CritiqueResult | None] = [p if isinstance(p, CritiqueResult) else None for p in prepared]
        attempts = [0] * n
        todo: list[int] = []
        for i, p in enumerate(prepared):
            if isinstance(p, _Prepared):
                hit = self._memo_get(p)
                if hit is not None:
                    results[i] = hit.model_copy(update={"id": ids[i]})
                else:
                    todo.append(i)
        attempt = 0
        while todo:
            jobs = [prepared[i] for i in todo]
            outs = await self._run_scorer(jobs, [ids[i] for i in todo], attempt)  # type: ignore[arg-type]
            for i, res in zip(todo, outs, strict=True):
                results[i] = res
                attempts[i] += 1
                if res.ok:
                    self._memo_put(prepared[i], res)  # type: ignore[arg-type]
            if attempt >= self.policy.retries:
                break
            attempt += 1
            todo = [i for i in todo if not results[i].ok and results[i].error_kind in RETRYABLE_KINDS]  # type: ignore[union-attr]
        return results, attempts  # type: ignore[return-value]

    async def _run_scorer(self, jobs: list[_Prepared], ids: list[str | None], attempt: int) -> list[CritiqueResult]:
        scorer = self.scorer
        if hasattr(scorer, "acritique_items"):
            return list(await scorer.acritique_items(
                [(j.prompt, j.image, j.sources or None, id_) for j, id_ in zip(jobs, ids, strict=True)],
                scores_only=self.scores_only,
            ))
        sampling = None
        base = getattr(scorer, "sampling", None)
        if attempt > 0 and base is not None:
            # A retry with the same seed would often reproduce the same unparseable answer.
            sampling = base.replace(seed=(base.seed or 0) + attempt)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(job: _Prepared, id_: str | None) -> CritiqueResult:
            async with sem:
                return await scorer.acritique(job.prompt, job.image, job.sources or None, id=id_,
                                              sampling=sampling, scores_only=self.scores_only)

        return list(await asyncio.gather(*(one(j, i) for j, i in zip(jobs, ids, strict=True))))

    def _memo_key(self, p: _Prepared) -> tuple[Any, ...]:
        return (p.prompt, p.image.sha256, tuple(s.sha256 for s in p.sources), self.scores_only)

    def _memo_get(self, p: _Prepared) -> CritiqueResult | None:
        if not self.memo_size:
            return None
        key = self._memo_key(p)
        hit = self._memo.get(key)
        if hit is not None:
            self._memo.move_to_end(key)
        return hit

    def _memo_put(self, p: _Prepared, res: CritiqueResult) -> None:
        if not self.memo_size:
            return
        self._memo[self._memo_key(p)] = res
        while len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)

    def _assemble(
        self, critiques: list[CritiqueResult], attempts: list[int], groups: list[Hashable], meta: list[Any] | None
    ) -> RewardBatch:
        n = len(critiques)
        tasks = [c.task for c in critiques]
        present_tasks = [t for t in ("t2i", "edit") if t in tasks] or ["t2i"]
        keys = [k for k in DIMENSION_KEYS if any(k in keys_for(t) for t in present_tasks)]
        scores = {
            k: [NAN if (not c.ok or k not in keys_for(c.task) or c.scores.get(k) is None) else float(c.scores[k])  # type: ignore[arg-type]
                for c in critiques]
            for k in keys
        }
        usable = [c.ok for c in critiques]
        rows = [c.scores for c in critiques]
        base = combine_dimensions(rows, tasks, usable, groups, DimensionAggregation("sum"), self.weights)
        final = base if self.aggregation.method == "sum" else combine_dimensions(
            rows, tasks, usable, groups, self.aggregation, self.weights)
        valid = [c.ok and not math.isnan(f) for c, f in zip(critiques, final, strict=True)]
        reasons: list[str | None] = []
        for c, ok in zip(critiques, valid, strict=True):
            if ok:
                reasons.append(None)
            elif not c.ok:
                reasons.append(f"{c.error_kind}: {c.error}")
            else:
                reasons.append(f"no-score: none of the weighted dimensions ({self.weights.name}) was scored")
        rewards = [f if ok else NAN for f, ok in zip(final, valid, strict=True)]
        filled: list[str | None] = [None if ok else "mask" for ok in valid]
        for step, value in self.policy.fills:
            open_ = [i for i in range(n) if math.isnan(rewards[i])]
            if not open_:
                break
            if step == "value":
                for i in open_:
                    rewards[i], filled[i] = float(value), "value"  # type: ignore[arg-type]
            elif step == "batch-mean":
                good = [rewards[i] for i in range(n) if valid[i]]
                if good:
                    mean = statistics.fmean(good)
                    for i in open_:
                        rewards[i], filled[i] = mean, "batch-mean"
            else:  # group-mean
                for members in group_index(groups).values():
                    good = [rewards[i] for i in members if valid[i]]
                    if not good:
                        continue
                    mean = statistics.fmean(good)
                    for i in members:
                        if math.isnan(rewards[i]):
                            rewards[i], filled[i] = mean, "group-mean"
        batch = RewardBatch(
            rewards=rewards, valid=valid, scores=scores, critiques=critiques, failure_reasons=reasons,
            filled_by=filled, base_rewards=[b if ok else NAN for b, ok in zip(base, valid, strict=True)], group_keys=groups,
            tasks=tasks, attempts=attempts, method=self.aggregation.method, metadata=meta, policy=self.policy.spec,
        )
        if self.policy.final == "raise" and any(batch.masked):
            bad = [i for i, m in enumerate(batch.masked) if m]
            first = reasons[bad[0]]
            raise RewardFailure(
                f"{len(bad)} of {n} samples have no reward after failure policy {self.policy.spec!r} "
                f"(failures by kind: {batch.failure_counts()}); first: sample {bad[0]}: {first}"
            )
        return batch


def _check_prompts(prompts: Sequence[str], n: int) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list with one prompt per image, not a single string")
    out = list(prompts)
    if len(out) != n:
        raise ValueError(f"{len(out)} prompts for {n} images")
    for i, p in enumerate(out):
        if not isinstance(p, str):
            raise TypeError(f"prompts[{i}] is {type(p).__name__}, expected str")
    return out


def _id_of(meta: Any) -> str | None:
    if isinstance(meta, dict) and meta.get("id") is not None:
        return str(meta["id"])
    return None
