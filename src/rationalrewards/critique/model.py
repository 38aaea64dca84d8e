"""``RewardModel``: the one object users hold.

    rm = RewardModel.from_openai("http://127.0.0.1:8000/v1", model="RationalRewards-8B-T2I")
    rm = RewardModel.from_pretrained("TIGER-Lab/RationalRewards-8B-T2I", device="cuda")
    result = rm.critique("a red bicycle", "bike.png")
    verdict = rm.compare("a red bicycle", "a.png", "b.png", swap=True)

Every method has an ``a``-prefixed coroutine twin. Per-item problems (missing file, corrupt image,
server down, unparseable answer) come back as results with ``ok=False`` and an ``error_kind``;
they are never raised, so batch jobs keep going.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..backends import Backend, SamplingParams, backend_from_options
from ..images import DEFAULT_MAX_PIXELS, ImageInputError, PreparedImage, load_image
from .aggregate import (
    Aggregation,
    combine_orders,
    decide_by_rewards,
    flip,
    get_aggregation,
    reward_from_scores,
)
from .dimensions import AllowNA, keys_for, resolve_allow_na
from .parser import parse_comparison, parse_critique
from .prompts import (
    Mode,
    PromptInputError,
    TemplateSet,
    build_messages,
    check_request_text,
    resolve_templates,
)
from .schema import CompareResult, CritiqueResult, Usage, failed_compare, failed_critique

T = TypeVar("T")
REFINEMENT_MARKER = "# User Request Refinement"

# Problems with one item's inputs (unreadable image, bad prompt text, a path the OS cannot encode)
# become an ok=False result with error_kind "input"; they must never abort a batch.
_INPUT_ERRORS = (ImageInputError, PromptInputError, ValueError, TypeError, OSError)

# Options of ``from_options`` that configure the RewardModel itself, and those that build its
# default SamplingParams; everything else must be a parameter of ``backend_from_options``.
_MODEL_OPTIONS = ("templates", "aggregation", "allow_na")
_SAMPLING_OPTIONS = ("temperature", "max_tokens", "top_p", "seed", "stop")

#: Between image A's and image B's critiques in the ``raw`` text of a pointwise comparison.
POINTWISE_SEPARATOR = "\n\n=== image B ===\n\n"


@dataclass
class CritiqueItem:
    """One pointwise job. ``source`` present => edit task."""

    prompt: str
    image: Any
    source: Any = None
    id: str | None = None
    base_dir: str | None = None

    @property
    def task(self) -> Literal["t2i", "edit"]:
        return "edit" if _has_source(self.source) else "t2i"


@dataclass
class CompareItem:
    prompt: str
    image_a: Any
    image_b: Any
    source: Any = None
    id: str | None = None
    base_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> Literal["t2i", "edit"]:
        return "edit" if _has_source(self.source) else "t2i"


def _has_source(source: Any) -> bool:
    if source is None:
        return False
    if isinstance(source, (list, tuple)):
        return len(source) > 0
    return not (isinstance(source, str) and not source)


class BackgroundLoop:
    """An asyncio event loop running in a daemon thread: synchronous code submits coroutines to it
    with :meth:`run` (blocking) or ``asyncio.run_coroutine_threadsafe(coro, bg.loop)``, so every
    call reuses the clients and micro-batches that live on that one loop."""

    def __init__(self, name: str = "rationalrewards-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T]) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return fut.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class RewardModel:
    """A critique-before-score reward model behind any backend.

    Args:
        backend: an :class:`~rationalrewards.backends.Backend`.
        templates: a template folder, a :class:`TemplateSet`, or None for the built-in set.
        aggregation: preset name (``default``, ``release-edit-rl``, ``release-pairwise``),
            ``key=weight,...``, or an :class:`Aggregation`.
        sampling: :class:`SamplingParams` (default temperature 0.1, max_tokens 4096).
        max_pixels: images are downscaled to this many pixels (default: the training cap).
        concurrency: jobs in flight in the batch methods (the backend has its own limit on
            requests in flight; :meth:`from_options` sets both).
        allow_na: dimension keys the judge may answer N/A for (default ``{"text_rendering"}``);
            ``"all"`` accepts N/A everywhere (the release's lenient reading), ``"none"`` nowhere.
            N/A on any other dimension makes the item a parse failure naming the dimension.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        templates: str | Path | TemplateSet | None = None,
        aggregation: str | Aggregation | None = None,
        sampling: SamplingParams | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        concurrency: int = 32,
        allow_na: AllowNA = None,
    ):
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        self.backend = backend
        self.templates = resolve_templates(templates)
        self.aggregation = get_aggregation(aggregation)
        self.allow_na = resolve_allow_na(allow_na)
        self.sampling = sampling or SamplingParams()
        self.max_pixels = max_pixels
        self.concurrency = concurrency
        self._loop: BackgroundLoop | None = None

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_openai(
        cls,
        base_url: str | Sequence[str],
        model: str | None = None,
        api_key: str | None = None,
        *,
        cache: str | Path | None = None,
        backend_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> RewardModel:
        """A model behind one or several OpenAI-compatible servers (vLLM, SGLang, ...).

        ``backend_kwargs`` go to :class:`~rationalrewards.backends.openai_http.OpenAIBackend`
        (``concurrency``, ``timeout``, ``max_retries``, ...); the other keywords (``templates``,
        ``aggregation``, ``allow_na``, ``sampling``, ``max_pixels``, ``concurrency``) to
        :class:`RewardModel`. Use :meth:`from_options` to set one ``concurrency`` for both.
        """
        from ..backends.openai_http import OpenAIBackend

        _check_settings(kwargs)
        backend: Backend = OpenAIBackend(list(base_url) if not isinstance(base_url, str) else base_url,
                                         model, api_key, **(backend_kwargs or {}))
        if cache:
            from ..backends.cache import CachedBackend

            backend = CachedBackend(backend, cache)
        return cls(backend, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        *,
        device: str | None = "auto",
        dtype: str | None = "auto",
        batch_size: int = 8,
        adapter: str | Path | None = None,
        cache: str | Path | None = None,
        **kwargs: Any,
    ) -> RewardModel:
        """A checkpoint loaded in this process with transformers (folder or hub id).

        The other keywords (``templates``, ``aggregation``, ``allow_na``, ``sampling``,
        ``max_pixels``, ``concurrency``) go to :class:`RewardModel`.
        """
        from ..backends.transformers_local import TransformersBackend

        _check_settings(kwargs)  # before the weights are loaded: a typo should cost nothing
        backend: Backend = TransformersBackend(
            model, device=device, dtype=dtype, batch_size=batch_size, adapter=adapter,
            max_pixels=kwargs.get("max_pixels") or DEFAULT_MAX_PIXELS,
        )
        if cache:
            from ..backends.cache import CachedBackend

            backend = CachedBackend(backend, cache)
        return cls(backend, **kwargs)

    @classmethod
    def from_options(cls, **options: Any) -> RewardModel:
        """Build from the CLI's backend options; every option reaches the code it names.

        * ``concurrency`` limits both the batch methods and the backend's requests in flight;
        * ``max_pixels`` sizes the images this model sends (and the in-process processor's cap);
        * ``templates``, ``aggregation``, ``allow_na`` configure the model;
        * ``sampling`` (a :class:`SamplingParams`) and/or ``temperature``, ``max_tokens``,
          ``top_p``, ``seed``, ``stop`` (which override the fields of ``sampling``);
        * everything else (``base_url``, ``model``, ``api_key``, ``cache``, ``timeout``,
          ``max_retries``, ``device``, ``dtype``, ``batch_size``, ``adapter``) goes to
          :func:`~rationalrewards.backends.backend_from_options`.

        An option that nothing takes raises ``ValueError`` naming it (a silently dropped setting
        is worse than an error). ``None`` means "the default" for every option.
        """
        backend_opts, model_kwargs = split_options(options)
        backend = backend_from_options(**backend_opts)
        return cls(backend, **model_kwargs)

    # -- helpers ------------------------------------------------------------------------------
    def run_sync(self, coro: Awaitable[T]) -> T:
        """Run a coroutine on this model's private event loop (the one its sync methods use), so
        synchronous code shares one HTTP client with them."""
        return self._background().run(coro)

    _run = run_sync

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this model's synchronous methods run on (a :class:`BackgroundLoop`,
        started on first use). Code that submits coroutines from other threads, such as the RL
        reward's background scoring, uses it to share the model's HTTP client and batches."""
        return self._background().loop

    def _background(self) -> BackgroundLoop:
        if self._loop is None:
            self._loop = BackgroundLoop()
        return self._loop

    def _load(self, src: Any, base_dir: str | None, name: str) -> PreparedImage:
        return load_image(src, max_pixels=self.max_pixels, base_dir=base_dir, name=name)

    def _load_sources(self, source: Any, base_dir: str | None) -> list[PreparedImage]:
        if not _has_source(source):
            return []
        items = source if isinstance(source, (list, tuple)) else [source]
        return [self._load(s, base_dir, f"source[{i}]" if len(items) > 1 else "source") for i, s in enumerate(items)]

    async def _chat(self, messages: list[dict[str, Any]], params: SamplingParams | None) -> Any:
        return await self.backend.agenerate(messages, params or self.sampling)

    # -- pointwise ----------------------------------------------------------------------------
    async def acritique(
        self,
        prompt: str,
        image: Any,
        source: Any = None,
        *,
        id: str | None = None,
        base_dir: str | None = None,
        sampling: SamplingParams | None = None,
        scores_only: bool = False,
    ) -> CritiqueResult:
        """Critique one image (t2i) or one edit (when ``source`` is given).

        ``scores_only`` stops generation before the refinement tail (saves decode tokens when
        only the reward is needed).
        """
        task: Literal["t2i", "edit"] = "edit" if _has_source(source) else "t2i"
        try:
            # The text first: a bad prompt fails without decoding any image.
            check_request_text(prompt, "prompt")
            img, sources = await asyncio.to_thread(
                lambda: (self._load(image, base_dir, "image"), self._load_sources(source, base_dir))
            )
            messages = build_messages(task, "pointwise", prompt, [img], sources or None, self.templates,
                                      request_name="prompt")
        except _INPUT_ERRORS as exc:
            return failed_critique(task, "input", _input_error(exc), id=id)
        params = sampling or self.sampling
        if scores_only:
            params = params.replace(stop=(*tuple(params.stop or ()), REFINEMENT_MARKER))
        gen = await self._chat(messages, params)
        usage = Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                      latency_s=gen.latency_s, cached=gen.cached)
        if not gen.ok:
            result = failed_critique(task, "backend", gen.error or "backend failed", id=id)
            result.usage = usage
            return result
        result = parse_critique(gen.text, task, aggregation=self.aggregation, id=id, allow_na=self.allow_na)
        result.usage = usage
        if not result.ok and gen.finish_reason == "length":
            result.error = f"{result.error} (output cut at max_tokens={params.max_tokens})"
        return result

    def critique(self, prompt: str, image: Any, source: Any = None, **kwargs: Any) -> CritiqueResult:
        return self._run(self.acritique(prompt, image, source, **kwargs))

    async def acritique_batch(
        self,
        items: Iterable[CritiqueItem | dict[str, Any]],
        *,
        concurrency: int | None = None,
        on_result: Callable[[int, CritiqueResult], Any] | None = None,
        scores_only: bool = False,
    ) -> list[CritiqueResult]:
        """Critique many items concurrently; results in input order. ``on_result(index, result)``
        is called as each finishes (for incremental writing and progress bars)."""
        async def one(x: CritiqueItem | dict[str, Any]) -> CritiqueResult:
            try:
                it = _as_critique_item(x)
            except _INPUT_ERRORS as exc:
                return failed_critique("t2i", "input", _input_error(exc), id=_item_id(x))
            return await self.acritique(it.prompt, it.image, it.source, id=it.id, base_dir=it.base_dir,
                                        scores_only=scores_only)

        return await _bounded(list(items), one, concurrency or self.concurrency, on_result)

    def critique_batch(self, items: Iterable[CritiqueItem | dict[str, Any]], **kwargs: Any) -> list[CritiqueResult]:
        return self._run(self.acritique_batch(items, **kwargs))

    # -- pairwise -----------------------------------------------------------------------------
    async def _pairwise_once(
        self,
        task: Literal["t2i", "edit"],
        prompt: str,
        a: PreparedImage,
        b: PreparedImage,
        sources: list[PreparedImage],
        id: str | None,
        tie_tolerance: float | None,
        sampling: SamplingParams | None,
    ) -> CompareResult:
        messages = build_messages(task, "pairwise", prompt, [a, b], sources or None, self.templates,
                                  request_name="prompt")
        gen = await self._chat(messages, sampling)
        usage = Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                      latency_s=gen.latency_s, cached=gen.cached)
        if not gen.ok:
            res = failed_compare(task, "backend", gen.error or "backend failed", id=id)
        else:
            res = parse_comparison(gen.text, task, aggregation=self.aggregation, tie_tolerance=tie_tolerance,
                                   id=id, allow_na=self.allow_na)
        res.usage = usage
        return res

    async def _pointwise_pair(
        self,
        task: Literal["t2i", "edit"],
        prompt: str,
        a: PreparedImage,
        b: PreparedImage,
        sources: list[PreparedImage],
        id: str | None,
        tie_tolerance: float | None,
        sampling: SamplingParams | None,
    ) -> CompareResult:
        ca, cb = await asyncio.gather(
            self.acritique(prompt, a, sources or None, sampling=sampling, scores_only=True),
            self.acritique(prompt, b, sources or None, sampling=sampling, scores_only=True),
        )
        tol = self.aggregation.tie_tolerance if tie_tolerance is None else tie_tolerance
        res = CompareResult(
            id=id, task=task, mode="pointwise", ok=ca.ok and cb.ok,
            scores_a=ca.scores, scores_b=cb.scores,
            justifications={k: f"A: {ca.justifications.get(k) or ''}\nB: {cb.justifications.get(k) or ''}"
                            for k in keys_for(task)},
            raw=f"{ca.raw}{POINTWISE_SEPARATOR}{cb.raw}",
            usage=Usage(prompt_tokens=(ca.usage.prompt_tokens if ca.usage else 0) + (cb.usage.prompt_tokens if cb.usage else 0),
                        completion_tokens=(ca.usage.completion_tokens if ca.usage else 0)
                        + (cb.usage.completion_tokens if cb.usage else 0)),
        )
        res.critique_a = ca.to_json()  # type: ignore[attr-defined]
        res.critique_b = cb.to_json()  # type: ignore[attr-defined]
        if not res.ok:
            bad = [f"image {s}: {c.error}" for s, c in (("A", ca), ("B", cb)) if not c.ok]
            res.error = "; ".join(bad)
            kinds = {c.error_kind for c in (ca, cb) if not c.ok}
            res.error_kind = "input" if "input" in kinds else "backend" if "backend" in kinds else "parse"
            return res
        res.reward_a, res.reward_b = ca.reward, cb.reward
        res.winner = decide_by_rewards(ca.reward, cb.reward, tol)
        return res

    async def acompare(
        self,
        prompt: str,
        image_a: Any,
        image_b: Any,
        source: Any = None,
        *,
        mode: Mode = "pairwise",
        swap: bool = False,
        tie_tolerance: float | None = None,
        id: str | None = None,
        base_dir: str | None = None,
        sampling: SamplingParams | None = None,
    ) -> CompareResult:
        """Which of two images (or two edits of ``source``) is better.

        ``mode="pairwise"`` asks for one joint judgement; ``"pointwise"`` critiques each image
        and compares rewards. ``swap=True`` also judges B-vs-A and combines the two orders: a
        verdict that does not survive the swap becomes a tie.
        """
        task: Literal["t2i", "edit"] = "edit" if _has_source(source) else "t2i"
        try:
            if mode not in ("pairwise", "pointwise"):
                raise ValueError(f"unknown mode {mode!r}; use pairwise or pointwise")
            check_request_text(prompt, "prompt")
            a, b, sources = await asyncio.to_thread(
                lambda: (self._load(image_a, base_dir, "image_a"), self._load(image_b, base_dir, "image_b"),
                         self._load_sources(source, base_dir))
            )
        except _INPUT_ERRORS as exc:
            return failed_compare(task, "input", _input_error(exc), id=id,
                                  mode=mode if mode in ("pairwise", "pointwise") else "pairwise")
        judge = self._pairwise_once if mode == "pairwise" else self._pointwise_pair
        try:
            if not swap:
                res = await judge(task, prompt, a, b, sources, id, tie_tolerance, sampling)
                res.mode = mode
                return res
            first, second = await asyncio.gather(
                judge(task, prompt, a, b, sources, id, tie_tolerance, sampling),
                judge(task, prompt, b, a, sources, id, tie_tolerance, sampling),
            )
        except _INPUT_ERRORS as exc:
            return failed_compare(task, "input", _input_error(exc), id=id, mode=mode)
        return _combine_swapped(first, _map_back(second), task, mode, id, self.aggregation)

    def compare(self, prompt: str, image_a: Any, image_b: Any, source: Any = None, **kwargs: Any) -> CompareResult:
        return self._run(self.acompare(prompt, image_a, image_b, source, **kwargs))

    async def acompare_batch(
        self,
        items: Iterable[CompareItem | dict[str, Any]],
        *,
        mode: Mode = "pairwise",
        swap: bool = False,
        tie_tolerance: float | None = None,
        concurrency: int | None = None,
        on_result: Callable[[int, CompareResult], Any] | None = None,
    ) -> list[CompareResult]:
        async def one(x: CompareItem | dict[str, Any]) -> CompareResult:
            try:
                it = _as_compare_item(x)
            except _INPUT_ERRORS as exc:
                return failed_compare("t2i", "input", _input_error(exc), id=_item_id(x), mode=mode)
            return await self.acompare(it.prompt, it.image_a, it.image_b, it.source, mode=mode, swap=swap,
                                       tie_tolerance=tie_tolerance, id=it.id, base_dir=it.base_dir)

        return await _bounded(list(items), one, concurrency or self.concurrency, on_result)

    def compare_batch(self, items: Iterable[CompareItem | dict[str, Any]], **kwargs: Any) -> list[CompareResult]:
        return self._run(self.acompare_batch(items, **kwargs))

    # -- lifecycle ----------------------------------------------------------------------------
    async def aready(self, timeout: float = 60.0) -> bool:
        return await self.backend.aready(timeout)

    def ready(self, timeout: float = 60.0) -> bool:
        return self._run(self.aready(timeout))

    async def aclose(self) -> None:
        await self.backend.aclose()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run(self.backend.aclose())
            self._loop.stop()
            self._loop = None

    def __enter__(self) -> RewardModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "templates": self.templates.name, "aggregation": self.aggregation.name,
                "allow_na": sorted(self.allow_na)}


def _input_error(exc: BaseException) -> str:
    """The message of a per-item input error; exceptions that are not ours carry their type, so
    ``[Errno 36] File name too long`` still says what went wrong where."""
    if isinstance(exc, (ImageInputError, PromptInputError)):
        text = str(exc)
    elif isinstance(exc, UnicodeError):
        text = f"input is not valid Unicode: {exc}"
    else:
        text = str(exc) or type(exc).__name__
        if type(exc) is not ValueError:
            text = f"{type(exc).__name__}: {text}"
    # The message may quote the bad input (a path with a lone surrogate); escape what UTF-8
    # cannot carry so the result itself can always be written as JSON.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """:meth:`RewardModel.from_options`'s options -> ``(backend options, RewardModel keywords)``,
    validated (ValueError naming an unknown option or a bad setting) before anything is built.
    Executors that build the model elsewhere (a Ray actor) check the options here first."""
    opts = {k: v for k, v in options.items() if v is not None}
    sampling = opts.pop("sampling", None) or SamplingParams()
    if not isinstance(sampling, SamplingParams):
        raise ValueError(f"sampling must be a SamplingParams, not {type(sampling).__name__}")
    overrides = {k: opts.pop(k) for k in _SAMPLING_OPTIONS if k in opts}
    if overrides:
        sampling = sampling.replace(**overrides)
    model_kwargs: dict[str, Any] = {k: opts.pop(k) for k in _MODEL_OPTIONS if k in opts}
    if "concurrency" in opts:
        model_kwargs["concurrency"] = opts["concurrency"]  # also stays in opts: the backend's limit
    accepted = inspect.signature(backend_from_options).parameters
    unknown = sorted(k for k in opts if k not in accepted)
    if unknown:
        raise ValueError(f"unknown option(s) for RewardModel.from_options: {', '.join(unknown)}")
    _check_settings(model_kwargs)  # before the backend is built: a bad one costs no model load
    model_kwargs["sampling"] = sampling
    model_kwargs["max_pixels"] = opts.get("max_pixels") or DEFAULT_MAX_PIXELS
    return opts, model_kwargs


def _check_settings(kwargs: dict[str, Any]) -> None:
    """Resolve (and so validate) ``allow_na`` and ``aggregation`` in place; ValueError names the
    problem. Called by the constructors before they build a backend."""
    if "allow_na" in kwargs:
        kwargs["allow_na"] = resolve_allow_na(kwargs["allow_na"])
    if "aggregation" in kwargs:
        kwargs["aggregation"] = get_aggregation(kwargs["aggregation"])
    concurrency = kwargs.get("concurrency")
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise ValueError(f"concurrency must be an integer >= 1, not {concurrency!r}")


def _item_id(x: Any) -> str | None:
    """A batch item's id as the result's ``id`` (a str), whatever the item holds."""
    raw = x.id if isinstance(x, (CritiqueItem, CompareItem)) else x.get("id") if isinstance(x, dict) else None
    return None if raw is None else raw if isinstance(raw, str) else str(raw)


def _as_critique_item(x: CritiqueItem | dict[str, Any]) -> CritiqueItem:
    if isinstance(x, CritiqueItem):
        if x.id is not None and not isinstance(x.id, str):
            x = CritiqueItem(x.prompt, x.image, x.source, _item_id(x), x.base_dir)
        return x
    if not isinstance(x, dict):
        raise TypeError(f"a batch item must be a dict or CritiqueItem, not {type(x).__name__}")
    return CritiqueItem(prompt=x.get("prompt"), image=x.get("image"), source=x.get("source"),  # type: ignore[arg-type]
                        id=_item_id(x), base_dir=x.get("base_dir"))


def _as_compare_item(x: CompareItem | dict[str, Any]) -> CompareItem:
    if isinstance(x, CompareItem):
        if x.id is not None and not isinstance(x.id, str):
            x = CompareItem(x.prompt, x.image_a, x.image_b, x.source, _item_id(x), x.base_dir, x.extra)
        return x
    if not isinstance(x, dict):
        raise TypeError(f"a batch item must be a dict or CompareItem, not {type(x).__name__}")
    return CompareItem(prompt=x.get("prompt"), image_a=x.get("image_a"), image_b=x.get("image_b"),  # type: ignore[arg-type]
                       source=x.get("source"), id=_item_id(x), base_dir=x.get("base_dir"))


async def _bounded(jobs: list[Any], fn: Callable[[Any], Awaitable[T]], limit: int,
                   on_result: Callable[[int, T], Any] | None) -> list[T]:
    sem = asyncio.Semaphore(max(1, limit))
    results: list[T | None] = [None] * len(jobs)

    async def run(i: int, job: Any) -> None:
        async with sem:
            res = await fn(job)
        results[i] = res
        if on_result is not None:
            out = on_result(i, res)
            if asyncio.iscoroutine(out):
                await out

    await asyncio.gather(*(run(i, j) for i, j in enumerate(jobs)))
    return results  # type: ignore[return-value]


def _map_back(res: CompareResult) -> CompareResult:
    """A B-vs-A judgement expressed in the caller's A/B."""
    mapped = res.model_copy(deep=True)
    mapped.scores_a, mapped.scores_b = res.scores_b, res.scores_a
    mapped.reward_a, mapped.reward_b = res.reward_b, res.reward_a
    mapped.winner = flip(res.winner)
    mapped.dimension_winners = {k: flip(v) for k, v in res.dimension_winners.items()}
    extra = res.model_extra or {}
    if "critique_a" in extra:
        mapped.critique_a, mapped.critique_b = extra["critique_b"], extra["critique_a"]  # type: ignore[attr-defined]
    mapped.swapped = True  # type: ignore[attr-defined]
    return mapped


def _mean_scores(x: dict[str, float | None], y: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (None if x.get(k) is None or y.get(k) is None else (x[k] + y[k]) / 2) for k in x}  # type: ignore[operator]


def _combine_swapped(first: CompareResult, second: CompareResult, task: Literal["t2i", "edit"], mode: Mode,
                     id: str | None, aggregation: Aggregation) -> CompareResult:
    ok = first.ok and second.ok
    res = CompareResult(id=id, task=task, mode=mode, ok=ok, orders=[first, second],
                        raw=f"{first.raw}\n\n=== swapped order (B shown first) ===\n\n{second.raw}",
                        justifications=first.justifications,
                        usage=Usage(prompt_tokens=sum(o.usage.prompt_tokens for o in (first, second) if o.usage),
                                    completion_tokens=sum(o.usage.completion_tokens for o in (first, second) if o.usage)))
    if not ok:
        bad = [f"{name}: {o.error}" for name, o in (("order A-B", first), ("order B-A", second)) if not o.ok]
        res.error = "; ".join(bad)
        kinds = {o.error_kind for o in (first, second) if not o.ok}
        res.error_kind = "input" if "input" in kinds else "backend" if "backend" in kinds else "parse"
        return res
    res.scores_a = _mean_scores(first.scores_a, second.scores_a)
    res.scores_b = _mean_scores(first.scores_b, second.scores_b)
    res.reward_a = reward_from_scores(res.scores_a, task, aggregation)
    res.reward_b = reward_from_scores(res.scores_b, task, aggregation)
    res.winner = combine_orders(first.winner, second.winner)
    res.position_consistent = first.winner == second.winner  # type: ignore[attr-defined]
    return res
