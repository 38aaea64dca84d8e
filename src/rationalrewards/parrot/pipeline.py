"""The PARROT pipeline over one output folder: ingest -> anchor -> filter -> build-sft.

Output folder layout::

    DIR/config.json          options of the last run (no API keys)
    DIR/pairs.jsonl          normalised pairs (image paths relative to DIR)
    DIR/bad_pairs.jsonl      rows that could not be used: {"id", "reason", "error"}
    DIR/images/ab/<sha>.png  every image once, named by the SHA-256 of its bytes
    DIR/anchored.jsonl       phase 1: one row per teacher call (pair, kind, sample, order/side)
    DIR/work/repredict.jsonl phase 2: one row per re-prediction call
    DIR/filtered.jsonl       phase 2: one row per rationale (kept, or the reason it was rejected)
    DIR/sft/                 phase 3: TRL and LLaMA-Factory exports + manifest.json
    DIR/stats.json, DIR/summary.md

Every phase is incremental: teacher answers are appended as they arrive (``RowLog``), finished
work is skipped on rerun, failed calls are retried, and the final files are rewritten in a fixed
order, so a run killed at any moment and restarted gives byte-identical outputs. A teacher answer
is reused only while the request that produced it (prompt, images, sampling) is unchanged: each
row stores a digest of its request, and a changed setting regenerates exactly the rows it affects.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..backends import Backend, SamplingParams
from ..critique.aggregate import flip, get_aggregation
from ..critique.parser import parse_comparison, parse_critique, parse_final_verdict
from ..critique.prompts import resolve_templates
from ..executors import LOCAL, ExecutorOptions
from ..io import InputFileError, atomic_write_json
from .checks import REASONS, LeakDetector, pairwise_consistency, pointwise_consistency
from .config import SAVED_CONFIG, ParrotConfig, changed_settings, load_saved
from .data import ColumnMap, ImageStore, Pair, PairError, iter_rows, normalise_row, peek_good_row, row_id
from .layout import ParrotFolder
from .prompts import (
    TeacherTemplates,
    anchor_pairwise_messages,
    anchor_pointwise_messages,
    as_notes,
    clean_rationale,
    repredict_messages,
    swap_letters,
)
from .remote import StoredMessages, StoredTeacher, generate_stored
from .store import RowLog, iter_jsonl, write_jsonl_atomic

Advance = Callable[[int], None]
ProgressFactory = Callable[[str, int], AbstractContextManager[Advance]]
Hook = Callable[[str, int], None]


@contextmanager
def _no_progress(_desc: str, _total: int) -> Iterator[Advance]:
    yield lambda n=1: None


class ParrotError(RuntimeError):
    """The run cannot proceed (no pairs, no teacher...); the message says what to do."""


@dataclass
class Unit:
    """A rationale as the filter sees it: one pairwise answer, or the two pointwise critiques of a
    pair written with the same sample index."""

    key: str
    kind: str
    pair: Pair
    sample: int
    order: str | None  # pairwise: "AB" (as given) or "BA" (swapped)
    anchored: list[str]

    @property
    def shown_label(self) -> str:
        return self.pair.label if self.order != "BA" else (flip(self.pair.label) or "tie")  # type: ignore[arg-type]


@dataclass
class Evaluation:
    """Result of the checks that need no model."""

    pending: bool = False
    reasons: list[str] = field(default_factory=list)
    margin: float | None = None
    implied: str | None = None
    leak: list[str] = field(default_factory=list)
    parse_error: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    rationale: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Job:
    """One teacher request. Messages are built only when it is sent: a 100k-pair run has
    hundreds of thousands of jobs, and each prompt holds a few KB of template text."""

    key: str
    pair: Pair
    kind: str
    build: Callable[[], list[dict[str, Any]]]
    params: SamplingParams
    digest: str
    meta: dict[str, Any]


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()


def row_digest(row: dict[str, Any]) -> str:
    """Fingerprint of an input row's content (image bytes by hash; line bookkeeping ignored)."""

    def norm(v: Any) -> Any:
        if isinstance(v, (bytes, bytearray, memoryview)):
            return "sha256:" + hashlib.sha256(bytes(v)).hexdigest()
        if isinstance(v, dict):
            return {str(k): norm(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        if hasattr(v, "tobytes") and hasattr(v, "size"):  # a PIL image
            return f"pil:{v.size}:{hashlib.sha256(v.tobytes()).hexdigest()}"
        return repr(v)

    return _sha({k: norm(v) for k, v in row.items() if k not in ("_line", "_file")})[:16]


def _generated(row: dict[str, Any]) -> bool:
    return bool(row.get("generated"))


class Parrot:
    """One PARROT run over ``cfg.out``.

    Args:
        cfg: the resolved options (:func:`~.config.resolve_config`).
        backend: a teacher :class:`~rationalrewards.backends.Backend`; built from ``cfg.teacher``
            on first need when omitted (phases with nothing to generate never contact a teacher).
        progress: ``progress(description, total)`` -> context manager yielding ``advance(n)``.
        log: receives one-line human messages (the CLI prints them on stderr).
        hook: ``hook(phase, rows_written)`` after every row written (tests inject crashes here).
        executor: where teacher calls run (:class:`~rationalrewards.executors.ExecutorOptions`):
            here (default), or on Ray actors that each build the teacher from ``cfg.teacher``
            and read the stored images from the run folder themselves (``--executor ray``). The
            files written are the same either way.
    """

    def __init__(self, cfg: ParrotConfig, *, backend: Backend | None = None, progress: ProgressFactory | None = None,
                 log: Callable[[str], None] | None = None, hook: Hook | None = None,
                 executor: ExecutorOptions | None = None):
        if not cfg.out:
            raise ParrotError("no output folder: pass --out DIR")
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.folder = ParrotFolder(self.out)
        self._backend = backend
        self.progress = progress or _no_progress
        self.log = log or (lambda _msg: None)
        self.hook = hook
        self.judge = resolve_templates(cfg.teacher.templates)
        self.teacher_templates = TeacherTemplates.load(cfg.teacher.teacher_templates)
        self.aggregation = get_aggregation(cfg.filter.aggregation)
        self.store = ImageStore(self.out, cfg.teacher.max_pixels)
        self.leaks = LeakDetector(cfg.filter.leak_patterns)
        self.pointwise_leaks = LeakDetector(cfg.filter.leak_patterns, pointwise=True)
        self._template_digest = _sha([
            self.judge.name, [self.judge.text(t, m) for t in ("t2i", "edit") for m in ("pairwise", "pointwise")],
            self.judge.system_pointwise, self.teacher_templates.anchor_pairwise, self.teacher_templates.anchor_pointwise,
            self.teacher_templates.repredict, self.teacher_templates.phrases,
        ])
        self.images = StoredMessages(self.store)
        self.executor = executor or LOCAL
        self._pool: Any = None
        self._written = 0
        self.timing: dict[str, Any] = {}

    # -- paths (named once, in layout.ParrotFolder) ---------------------------------------------
    @property
    def pairs_path(self) -> Path:
        return self.folder.pairs_path

    @property
    def bad_path(self) -> Path:
        return self.folder.bad_path

    @property
    def anchored_path(self) -> Path:
        return self.folder.anchored_path

    @property
    def repredict_path(self) -> Path:
        return self.folder.repredict_path

    @property
    def filtered_path(self) -> Path:
        return self.folder.filtered_path

    @property
    def sft_dir(self) -> Path:
        return self.folder.sft_dir

    # -- plumbing -------------------------------------------------------------------------------
    def _tick(self, phase: str) -> None:
        self._written += 1
        if self.hook is not None:
            self.hook(phase, self._written)

    def backend(self) -> Backend:
        if self._backend is None:
            from ..backends import backend_from_options

            self._backend = backend_from_options(**self.teacher_options())
        return self._backend

    def teacher_options(self, concurrency: int | None = None) -> dict[str, Any]:
        """``cfg.teacher`` as :func:`~rationalrewards.backends.backend_from_options` keywords."""
        t = self.cfg.teacher
        if not t.base_url and not t.model:
            raise ParrotError("no teacher configured: pass --teacher-base-url URL --teacher-model NAME "
                              "(or set teacher.base_url in the config)")
        return dict(base_url=list(t.base_url) or None, model=t.model, api_key=t.api_key, cache=t.cache,
                    concurrency=concurrency or t.concurrency, timeout=t.timeout, max_retries=t.max_retries,
                    device=t.device, dtype=t.dtype, batch_size=t.batch_size, max_pixels=t.max_pixels)

    def _remote(self) -> Any:
        """The Ray actors of ``--executor ray``, started on first need."""
        if self._pool is None:
            from ..executors.ray_executor import RayPool

            total = self.cfg.teacher.concurrency
            self._pool = RayPool(
                StoredTeacher, (str(self.out), self.cfg.teacher.max_pixels), executor=self.executor,
                per_worker=lambda n: {"backend_options": self.teacher_options(max(1, -(-total // n)))})
        return self._pool

    async def _generate(self, job: _Job) -> Any:
        if self.executor.is_local:
            return await generate_stored(self.images, self.backend(), job.build(), job.params)
        from ..backends import Generation

        return await self._remote().call_or_failed(lambda lost: Generation(text=None, error=lost),
                                                   "agenerate_stored", job.build(), job.params)

    async def aclose(self) -> None:
        # Closes this event loop's HTTP clients (also of an injected backend: they belong to a
        # loop that ends with the run).
        if self._backend is not None:
            await self._backend.aclose()
        if self._pool is not None:
            await self._pool.aclose("aclose")
            self._pool = None

    async def _run_jobs(self, jobs: list[_Job], desc: str, handle: Callable[[_Job, Any], None]) -> None:
        """Send jobs to the teacher with bounded concurrency; ``handle(job, generation)`` writes."""
        if not jobs:
            return
        if self.executor.is_local:
            self.backend()  # a missing teacher is an error before the progress bar starts
        it = iter(jobs)

        with self.progress(desc, len(jobs)) as advance:

            async def worker() -> None:
                for job in it:
                    gen = await self._generate(job)
                    handle(job, gen)
                    advance(1)

            await _gather_all([worker() for _ in range(min(self.cfg.teacher.concurrency, len(jobs)))])

    # -- phase 0: ingest ------------------------------------------------------------------------
    def ingest(self) -> dict[str, int]:
        """Read ``cfg.pairs`` into ``DIR/pairs.jsonl`` (+ ``bad_pairs.jsonl``), storing images.

        Without ``cfg.pairs`` an existing ``pairs.jsonl`` is used as is.
        """
        t0 = time.perf_counter()
        cfg = self.cfg
        if not cfg.pairs:
            if not self.pairs_path.exists():
                raise ParrotError(f"{self.out} has no pairs.jsonl yet: pass --pairs PAIRS")
            return {"pairs": sum(1 for _ in iter_jsonl(self.pairs_path))}
        self.out.mkdir(parents=True, exist_ok=True)
        rows, base = iter_rows(cfg.pairs, split=cfg.input.split)
        first, rows = peek_good_row(rows)
        cmap = ColumnMap.build(cfg.input.preset, dict(cfg.input.columns), cfg.input.label_format, first)
        image_base = Path(cfg.input.image_root).expanduser() if cfg.input.image_root else base
        log = RowLog(self.out / "work" / "ingest.jsonl", key="id", is_done=lambda r: bool(r.get("ok")), tag="digest")
        order: list[str] = []
        seen: set[str] = set()
        dup: list[dict[str, Any]] = []
        todo = 0
        inflight: dict[Future[Any], tuple[str, str]] = {}

        def record(fut: Future[Any], pid: str, digest: str) -> None:
            try:
                pair = fut.result()
                log.append({"id": pid, "ok": True, "digest": digest, "pair": pair.to_json()})
            except PairError as exc:
                log.append({"id": pid, "ok": False, "digest": digest, "reason": exc.kind, "error": str(exc)})
            self._tick("ingest")

        with self.progress("ingest", 0) as advance, ThreadPoolExecutor(max(1, cfg.input.workers)) as pool:
            for i, row in enumerate(rows):
                if cfg.input.limit is not None and i >= cfg.input.limit:
                    break
                pid = row_id(row, cmap, i)
                if pid in seen:
                    dup.append({"id": pid, "reason": "duplicate_id", "error": f"duplicate id {pid!r} (row {i + 1})"})
                    continue
                seen.add(pid)
                order.append(pid)
                # A row edited in place (same id, new label or image) is read again.
                digest = row_digest(row)
                if log.is_key_done(pid) and log.tag_of(pid) == digest:
                    continue
                todo += 1
                inflight[pool.submit(normalise_row, row, cmap, self.store, image_base, pid)] = (pid, digest)
                if len(inflight) >= 4 * max(1, cfg.input.workers):
                    done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                    for fut in done:
                        record(fut, *inflight.pop(fut))
                        advance(1)
            for fut in list(inflight):
                record(fut, *inflight.pop(fut))
                advance(1)
        log.finalize(order, keep_others=False)
        good: list[dict[str, Any]] = []
        bad: list[dict[str, Any]] = []
        for _, row in log.read_many(order):
            if row is None:
                continue
            if row.get("ok"):
                good.append(row["pair"])
            else:
                bad.append({"id": row["id"], "reason": row["reason"], "error": row["error"]})
        log.close()
        write_jsonl_atomic(self.pairs_path, good)
        write_jsonl_atomic(self.bad_path, bad + dup)
        for b in bad + dup:
            self.log(f"skipped pair {b['id']}: {b['error']}")
        self.timing["ingest_s"] = round(time.perf_counter() - t0, 3)
        return {"rows": len(order) + len(dup), "pairs": len(good), "bad": len(bad) + len(dup), "normalised_now": todo}

    def pairs(self) -> list[Pair]:
        if not self.pairs_path.exists():
            raise ParrotError(f"{self.out} has no pairs.jsonl: run `parrot run` or `parrot anchor` with --pairs first")
        return [Pair.from_json(r) for r in iter_jsonl(self.pairs_path)]

    def usable(self, pairs: list[Pair]) -> list[Pair]:
        """Pairs the teacher works on: ties only when ``input.include_ties``."""
        return [p for p in pairs if p.label != "tie" or self.cfg.input.include_ties]

    # -- phase 1: anchored generation -----------------------------------------------------------
    def orders_for(self, pair: Pair) -> list[str]:
        mode = self.cfg.anchor.orders
        if mode == "as-is":
            return ["AB"]
        if mode == "both":
            return ["AB", "BA"]
        h = int(hashlib.sha256(f"{self.cfg.anchor.seed}:{pair.id}".encode()).hexdigest()[:8], 16)
        return ["AB" if h % 2 == 0 else "BA"]

    def _anchor_params(self, sample: int) -> SamplingParams:
        a = self.cfg.anchor
        return SamplingParams(temperature=a.temperature, max_tokens=a.max_tokens, top_p=a.top_p,
                              seed=None if a.seed is None else a.seed + sample)

    def anchor_jobs(self, pairs: list[Pair]) -> list[_Job]:
        """Every phase-1 request, in output order (pair by pair)."""
        a = self.cfg.anchor
        jobs: list[_Job] = []
        for pair in self.usable(pairs):
            for k in range(a.samples):
                for order in self.orders_for(pair):
                    shown = [pair.image_a, pair.image_b] if order == "AB" else [pair.image_b, pair.image_a]
                    label = pair.label if order == "AB" else (flip(pair.label) or "tie")  # type: ignore[arg-type]
                    msgs = partial(anchor_pairwise_messages, pair.task, pair.prompt, shown[0], shown[1], pair.source,
                                   label, self.judge, self.teacher_templates)
                    params = self._anchor_params(k)
                    key = f"{pair.id}|pairwise|s{k}|{order}"
                    digest = _sha([self._template_digest, "anchor-pairwise", pair.task, pair.prompt, shown,
                                   pair.source, label, params.key()])[:16]
                    jobs.append(_Job(key, pair, "pairwise", msgs, params, digest,
                                     {"sample": k, "order": order, "shown_label": label}))
            if a.pointwise:
                for k in range(self.cfg.pointwise_samples):
                    for side in ("A", "B"):
                        image = pair.image_a if side == "A" else pair.image_b
                        standing = "tie" if pair.label == "tie" else ("won" if pair.label == side else "lost")
                        msgs = partial(anchor_pointwise_messages, pair.task, pair.prompt, image, pair.source,
                                       standing, self.judge, self.teacher_templates)
                        params = self._anchor_params(k)
                        key = f"{pair.id}|pointwise|s{k}|{side}"
                        digest = _sha([self._template_digest, "anchor-pointwise", pair.task, pair.prompt, image,
                                       pair.source, standing, params.key()])[:16]
                        jobs.append(_Job(key, pair, "pointwise", msgs, params, digest,
                                         {"sample": k, "side": side, "standing": standing}))
        return jobs

    def _anchor_row(self, job: _Job, gen: Any) -> dict[str, Any]:
        pair = job.pair
        row: dict[str, Any] = {"key": job.key, "id": pair.id, "kind": job.kind, **job.meta, "task": pair.task,
                               "label": pair.label, "generated": gen.ok, "digest": job.digest}
        if not gen.ok:
            row.update(reason="teacher_error", error=gen.error)
            return row
        row.update(finish_reason=gen.finish_reason, raw=gen.text,
                   usage={"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens})
        if job.kind == "pairwise":
            res = parse_comparison(gen.text, pair.task, aggregation=self.aggregation,
                                   tie_tolerance=self.cfg.filter.tie_tolerance)
            row.update(parse_ok=res.ok, parse_error=res.error, scores_a=res.scores_a, scores_b=res.scores_b,
                       implied=res.winner)
        else:
            crit = parse_critique(gen.text, pair.task, aggregation=self.aggregation)
            row.update(parse_ok=crit.ok, parse_error=crit.error, scores=crit.scores, reward=crit.reward)
        return row

    async def aanchor(self) -> dict[str, int]:
        """Phase 1: generate the anchored rationales that are not on disk yet."""
        t0 = time.perf_counter()
        jobs = self.anchor_jobs(self.pairs())
        log = RowLog(self.anchored_path, key="key", is_done=_generated, tag="digest")
        stale = 0
        todo = []
        for job in jobs:
            if log.is_key_done(job.key):
                if log.tag_of(job.key) == job.digest:
                    continue
                stale += 1
            todo.append(job)
        if stale:
            self.log(f"{stale} anchored rationale(s) were generated with other settings and will be regenerated")
        self.log(f"anchor: {len(jobs)} teacher calls, {len(jobs) - len(todo)} already done, {len(todo)} to run")
        failed = 0

        def handle(job: _Job, gen: Any) -> None:
            nonlocal failed
            failed += not gen.ok
            log.append(self._anchor_row(job, gen))
            self._tick("anchor")

        try:
            await self._run_jobs(todo, "anchor", handle)
        finally:
            log.sync()
        log.finalize([j.key for j in jobs])
        log.close()
        if failed:
            self.log(f"anchor: {failed} teacher call(s) failed; rerun the same command to retry them")
        self.timing["anchor_s"] = round(time.perf_counter() - t0, 3)
        return {"jobs": len(jobs), "ran": len(todo), "failed": failed, "stale": stale}

    # -- phase 2: consistency filtering ---------------------------------------------------------
    def units(self, pair: Pair) -> list[Unit]:
        if pair.label == "tie" and not self.cfg.input.include_ties:
            return []
        out = []
        for k in range(self.cfg.anchor.samples):
            for order in self.orders_for(pair):
                key = f"{pair.id}|pairwise|s{k}|{order}"
                out.append(Unit(key, "pairwise", pair, k, order, [key]))
        if self.cfg.anchor.pointwise:
            for k in range(self.cfg.pointwise_samples):
                out.append(Unit(f"{pair.id}|pointwise|s{k}", "pointwise", pair, k, None,
                                [f"{pair.id}|pointwise|s{k}|A", f"{pair.id}|pointwise|s{k}|B"]))
        return out

    def evaluate(self, unit: Unit, rows: list[dict[str, Any] | None], digests: dict[str, str]) -> Evaluation:
        """The model-free checks of one unit (see :mod:`.checks` for the reasons)."""
        ev = Evaluation()
        if any(r is None or not r.get("generated") or r.get("digest") != digests.get(r["key"]) for r in rows):
            ev.pending = True
            return ev
        f = self.cfg.filter
        task = unit.pair.task
        rows_ = [r for r in rows if r is not None]
        if unit.kind == "pairwise":
            raw = rows_[0]["raw"]
            res = parse_comparison(raw, task, aggregation=self.aggregation, tie_tolerance=f.tie_tolerance)
            if not res.ok:
                ev.reasons.append("unparseable")
                ev.parse_error = res.error
            else:
                reason, margin, implied = pairwise_consistency(
                    res.scores_a, res.scores_b, task, unit.shown_label, margin=f.margin,
                    tie_tolerance=f.tie_tolerance, aggregation=self.aggregation)
                ev.margin, ev.implied = margin, implied
                ev.extra = {"scores_a": res.scores_a, "scores_b": res.scores_b}
                if reason:
                    ev.reasons.append(reason)
            ev.leak = self.leaks.find(clean_rationale(raw))
            ev.rationale = {"pairwise": clean_rationale(raw)}
            ev.notes = {"AB": as_notes(raw, f.keep_scores)}
        else:
            crit = {r["side"]: parse_critique(r["raw"], task, aggregation=self.aggregation) for r in rows_}
            bad = [f"image {s}: {c.error}" for s, c in crit.items() if not c.ok]
            if bad:
                ev.reasons.append("unparseable")
                ev.parse_error = "; ".join(bad)
            else:
                # tie_tolerance is a gap between score sums (1-4 per dimension); on the 0-1 reward
                # scale the same gap is tolerance / (3 * number of dimensions).
                n_dims = max(1, len(self.aggregation.weights_for(task)))
                reason, margin, implied = pointwise_consistency(
                    crit["A"].reward, crit["B"].reward, unit.pair.label, margin=f.pointwise_margin,
                    tie_tolerance=f.tie_tolerance / (3 * n_dims))
                ev.margin, ev.implied = margin, implied
                ev.extra = {"reward_a": crit["A"].reward, "reward_b": crit["B"].reward,
                            "scores_a": crit["A"].scores, "scores_b": crit["B"].scores}
                if reason:
                    ev.reasons.append(reason)
            raws = {r["side"]: r["raw"] for r in rows_}
            for s in ("A", "B"):
                ev.leak += self.pointwise_leaks.find(clean_rationale(raws[s]))
            ev.rationale = {"A": clean_rationale(raws["A"]), "B": clean_rationale(raws["B"])}
            tpl = self.teacher_templates.phrases["pointwise_notes"]
            na, nb = as_notes(raws["A"], f.keep_scores), as_notes(raws["B"], f.keep_scores)
            ev.notes = {"AB": tpl.format(notes_a=na, notes_b=nb), "BA": tpl.format(notes_a=nb, notes_b=na)}
        if ev.leak:
            ev.reasons.append("leak")
        return ev

    def _needs_repredict(self, unit: Unit) -> bool:
        f = self.cfg.filter
        return f.repredict and (unit.kind == "pairwise" or f.repredict_pointwise)

    def repredict_specs(self, unit: Unit, ev: Evaluation) -> list[dict[str, Any]]:
        """The re-prediction requests of a unit that passed the model-free checks, as plain data
        (``key``, ``variant``, ``images``, ``notes``, ``digest``)."""
        f = self.cfg.filter
        pair = unit.pair
        if unit.kind == "pairwise":
            shown = [pair.image_a, pair.image_b] if unit.order == "AB" else [pair.image_b, pair.image_a]
            variants = [("same", shown, ev.notes["AB"])]
            if f.repredict_both_orders:
                variants.append(("swap", shown[::-1], swap_letters(ev.notes["AB"])))
        else:
            shown = [pair.image_a, pair.image_b]
            variants = [("same", shown, ev.notes["AB"])]
            if f.repredict_both_orders:
                variants.append(("swap", shown[::-1], ev.notes["BA"]))
        params = self._repredict_params()
        return [{"key": f"{unit.key}|repredict|{variant}", "variant": variant, "images": images, "notes": notes,
                 "digest": _sha([self._template_digest, "repredict", pair.task, pair.prompt, images, pair.source,
                                 notes, params.key()])[:16]}
                for variant, images, notes in variants]

    def _repredict_params(self) -> SamplingParams:
        f = self.cfg.filter
        return SamplingParams(temperature=f.repredict_temperature, max_tokens=f.repredict_max_tokens,
                              seed=self.cfg.anchor.seed)

    def _repredict_build(self, checks: RowLog, unit_key: str, index: int, pair: Pair) -> list[dict[str, Any]]:
        # The notes live on disk (work/checks.jsonl) until the request is sent.
        row = checks.get(unit_key)
        assert row is not None, unit_key
        spec = row["specs"][index]
        return repredict_messages(pair.task, pair.prompt, spec["images"][0], spec["images"][1], pair.source,
                                  spec["notes"], self.judge, self.teacher_templates)

    def _repredict_row(self, job: _Job, gen: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"key": job.key, "id": job.pair.id, **job.meta, "generated": gen.ok, "digest": job.digest}
        if not gen.ok:
            row.update(reason="teacher_error", error=gen.error)
            return row
        res = parse_comparison(gen.text, job.pair.task, aggregation=self.aggregation,
                               tie_tolerance=self.cfg.filter.tie_tolerance)
        final = parse_final_verdict(gen.text)
        row.update(raw=gen.text, finish_reason=gen.finish_reason, verdict_scores=res.winner if res.ok else None,
                   final_verdict=final, predicted=res.winner if res.ok else final,
                   parse_error=None if res.ok else res.error,
                   usage={"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens})
        return row

    async def afilter(self) -> dict[str, int]:
        """Phase 2: run the checks, re-predict the survivors, select, write ``filtered.jsonl``.

        Pass 1 parses every rationale once and writes the model-free verdicts to
        ``work/checks.jsonl``; the re-predictions run; pass 2 decides and selects from those two
        files, pair by pair, so memory stays flat however many pairs there are.
        """
        t0 = time.perf_counter()
        if not self.anchored_path.exists():
            raise ParrotError(f"{self.out} has no anchored.jsonl: run `parrot anchor` first")
        pairs = self.pairs()
        digests = {j.key: j.digest for j in self.anchor_jobs(pairs)}
        anchored = RowLog(self.anchored_path, key="key", is_done=_generated)
        checks_path = self.out / "work" / "checks.jsonl"
        checks_path.unlink(missing_ok=True)
        checks = RowLog(checks_path, key="key", is_done=lambda _r: True, fsync_every_s=3600.0)
        log = RowLog(self.repredict_path, key="key", is_done=_generated, tag="digest")
        params = self._repredict_params()
        jobs: list[_Job] = []
        for pair in pairs:
            units = self.units(pair)
            if not units:
                continue
            rows = dict(anchored.read_many([k for u in units for k in u.anchored]))
            for unit in units:
                ev = self.evaluate(unit, [rows[k] for k in unit.anchored], digests)
                specs = self.repredict_specs(unit, ev) if (
                    not ev.pending and not ev.reasons and self._needs_repredict(unit)) else []
                record = asdict(ev)
                record.pop("notes")
                checks.append({"key": unit.key, **record, "specs": specs})
                for i, spec in enumerate(specs):
                    if log.is_key_done(spec["key"]) and log.tag_of(spec["key"]) == spec["digest"]:
                        continue
                    jobs.append(_Job(spec["key"], pair, "repredict",
                                     partial(self._repredict_build, checks, unit.key, i, pair), params,
                                     spec["digest"], {"unit": unit.key, "variant": spec["variant"]}))
        checks.sync()
        anchored.close()
        self.log(f"filter: {len(jobs)} re-prediction call(s) to run")
        failed = 0

        def handle(job: _Job, gen: Any) -> None:
            nonlocal failed
            failed += not gen.ok
            log.append(self._repredict_row(job, gen))
            self._tick("filter")

        try:
            await self._run_jobs(jobs, "filter", handle)
        finally:
            log.sync()
        counts = {"rationales": 0, "kept": 0, "pending": 0, "repredict_ran": len(jobs), "repredict_failed": failed}
        write_jsonl_atomic(self.filtered_path, self._filtered_rows(pairs, checks, log, counts))
        log.finalize([k for p in pairs for u in self.units(p) for k in (f"{u.key}|repredict|same",
                                                                         f"{u.key}|repredict|swap")])
        log.close()
        checks.close()
        checks_path.unlink(missing_ok=True)
        if failed:
            self.log(f"filter: {failed} re-prediction call(s) failed; rerun the same command to retry them")
        if counts["pending"]:
            self.log(f"filter: {counts['pending']} rationale(s) wait for teacher calls that failed; rerun to finish")
        self.timing["filter_s"] = round(time.perf_counter() - t0, 3)
        return counts

    def _decide_repredict(self, unit: Unit, specs: list[dict[str, Any]],
                          answers: dict[str, dict[str, Any] | None]) -> tuple[str | None, dict[str, Any], bool]:
        """(reason, details, pending) from the stored re-prediction answers."""
        expected = unit.shown_label if unit.kind == "pairwise" else unit.pair.label
        details: dict[str, Any] = {"expected": expected, "orders": []}
        outcomes = []
        for spec in specs:
            row = answers.get(spec["key"])
            if row is None or not row.get("generated") or row.get("digest") != spec["digest"]:
                return None, details, True
            predicted = row.get("predicted")
            mapped = flip(predicted) if spec["variant"] == "swap" else predicted
            details["orders"].append({"variant": spec["variant"], "predicted": mapped,
                                      "verdict_scores": row.get("verdict_scores"),
                                      "final_verdict": row.get("final_verdict"), "parse_error": row.get("parse_error")})
            outcomes.append(None if predicted is None else mapped == expected)
        details["predicted"] = details["orders"][0]["predicted"]
        if any(o is None for o in outcomes):
            return "repredict_unparseable", details, False
        if not any(outcomes):
            return "repredict_wrong", details, False
        if not all(outcomes):
            return "repredict_order_disagreement", details, False
        return None, details, False

    def _filtered_rows(self, pairs: list[Pair], checks: RowLog, log: RowLog,
                       counts: dict[str, int]) -> Iterator[dict[str, Any]]:
        sel = self.cfg.filter.select
        for pair in pairs:
            units = self.units(pair)
            if not units:
                continue
            evs = dict(checks.read_many([u.key for u in units]))
            answers = dict(log.read_many([s["key"] for u in units for s in (evs[u.key] or {}).get("specs", [])]))
            rows = []
            for unit in units:
                ev = evs[unit.key] or {}
                row: dict[str, Any] = {"key": unit.key, "id": pair.id, "kind": unit.kind, "sample": unit.sample,
                                       "task": pair.task, "label": pair.label}
                if unit.kind == "pairwise":
                    row.update(order=unit.order, shown_label=unit.shown_label)
                row.update(kept=False, reason=None, reasons=[], pending=False)
                counts["rationales"] += 1
                if ev.get("pending", True):
                    row.update(reason="pending", pending=True)
                    counts["pending"] += 1
                    rows.append((unit, ev, row))
                    continue
                row.update(margin=ev["margin"], implied=ev["implied"], leak=ev["leak"], parse_error=ev["parse_error"],
                           **ev["extra"])
                reasons = list(ev["reasons"])
                if not reasons and ev["specs"]:
                    reason, details, pending = self._decide_repredict(unit, ev["specs"], answers)
                    row["repredict"] = details
                    if pending:
                        row.update(reason="pending", pending=True)
                        counts["pending"] += 1
                        rows.append((unit, ev, row))
                        continue
                    if reason:
                        reasons.append(reason)
                reasons.sort(key=REASONS.index)
                row.update(reasons=reasons, reason=reasons[0] if reasons else None)
                rows.append((unit, ev, row))
            # Selection among the survivors of each kind.
            for kind in ("pairwise", "pointwise"):
                alive = [(u, ev, r) for u, ev, r in rows if u.kind == kind and not r["pending"] and not r["reasons"]]
                if not alive:
                    continue
                if sel == "all":
                    chosen = alive
                elif sel == "first":
                    chosen = alive[:1]
                else:
                    # Largest margin towards the label; the earliest sample wins a draw.
                    best = max(range(len(alive)), key=lambda i: (
                        alive[i][1]["margin"] if alive[i][1]["margin"] is not None else float("-inf"), -i))
                    chosen = [alive[best]]
                for u, ev, r in alive:
                    if any(r is c[2] for c in chosen):
                        r["kept"] = True
                        counts["kept"] += 1
                        if u.kind == "pairwise":
                            r["rationale"] = ev["rationale"]["pairwise"]
                        else:
                            r["rationale_a"], r["rationale_b"] = ev["rationale"]["A"], ev["rationale"]["B"]
                    else:
                        r.update(reason="not_selected", reasons=["not_selected"])
            for _u, _ev, r in rows:
                yield r

    # -- phase 3: student data ------------------------------------------------------------------
    def build_sft(self) -> dict[str, Any]:
        """Phase 3 data: write ``DIR/sft`` from the kept rationales."""
        from .sft import build_sft

        t0 = time.perf_counter()
        if not self.filtered_path.exists():
            raise ParrotError(f"{self.out} has no filtered.jsonl: run `parrot filter` first")
        manifest = build_sft(self.out, {p.id: p for p in self.pairs()}, iter_jsonl(self.filtered_path),
                             self.cfg, self.judge, LeakDetector(self.cfg.filter.leak_patterns))
        self.timing["build_sft_s"] = round(time.perf_counter() - t0, 3)
        return manifest

    # -- bookkeeping ------------------------------------------------------------------------------
    def save_config(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        old = load_saved(self.out)
        changed = changed_settings(old, self.cfg) if old else []
        if changed:
            self.log("settings changed since the last run: " + ", ".join(changed)
                     + " (rationales whose request changed are regenerated)")
        data = self.cfg.to_dict()
        data.pop("train", None)
        # Absolute paths, so a later `parrot run --out DIR` works from any working directory.
        for section, key in ((None, "pairs"), (None, "out"), ("input", "image_root"), ("teacher", "cache"),
                             ("teacher", "templates"), ("teacher", "teacher_templates")):
            holder = data if section is None else data[section]
            if holder.get(key) and holder[key] != "default":
                holder[key] = str(Path(holder[key]).expanduser().resolve())
        atomic_write_json(self.out / SAVED_CONFIG, data)

    def write_stats(self) -> dict[str, Any]:
        from .stats import compute_stats, render_summary

        stats = compute_stats(self.folder, self.cfg)
        stats["last_run"] = {"timing_s": dict(self.timing)}
        atomic_write_json(self.out / "stats.json", stats)
        from ..io import atomic_write_text

        atomic_write_text(self.out / "summary.md", render_summary(stats))
        return stats

    # -- entry points ---------------------------------------------------------------------------
    async def arun(self, phases: tuple[str, ...] = ("ingest", "anchor", "filter", "build-sft")) -> dict[str, Any]:
        """Run the given phases in order, then write ``stats.json`` and ``summary.md``."""
        self.save_config()
        t0 = time.perf_counter()
        try:
            if "ingest" in phases:
                await asyncio.to_thread(self.ingest)
            if "anchor" in phases:
                await self.aanchor()
            if "filter" in phases:
                await self.afilter()
            if "build-sft" in phases:
                await asyncio.to_thread(self.build_sft)
        finally:
            await self.aclose()
        self.timing["total_s"] = round(time.perf_counter() - t0, 3)
        return self.write_stats()

    def run(self, phases: tuple[str, ...] = ("ingest", "anchor", "filter", "build-sft")) -> dict[str, Any]:
        return asyncio.run(self.arun(phases))


async def _gather_all(coros: list[Awaitable[None]]) -> None:
    """Like gather, but the first failure cancels the other workers (a crash stops the phase)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def run_parrot(cfg: ParrotConfig, **kwargs: Any) -> dict[str, Any]:
    """Run every phase of ``cfg`` and return the stats (see :class:`Parrot` for ``kwargs``)."""
    return Parrot(cfg, **kwargs).run()


def check_input(cfg: ParrotConfig) -> None:
    """Fail early, with a clear message, on a pairs path that cannot be read."""
    if cfg.pairs and not Path(cfg.pairs).expanduser().exists():
        raise InputFileError(f"pairs input not found: {cfg.pairs}")
    if cfg.out and Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise InputFileError(f"--out {cfg.out} exists and is not a folder")
    if cfg.out and os.path.isdir(cfg.out) and not os.access(cfg.out, os.W_OK):
        raise InputFileError(f"--out {cfg.out} is not writable")
