"""Running an evaluation: index the data, judge what is not done yet, append results, report.

    ev = Evaluation("mmrb2-t2i", "data/mmrb2_t2i.parquet", "runs/rr8b-mmrb2")
    stats = await ev.arun(rm, concurrency=32)          # resumable: finished items are skipped
    report = ev.write_report()                         # report.json / report.md / report.html

or simply ``evaluate(rm, "mmrb2-t2i", data, out)``.

Results are appended to ``OUT/results.jsonl`` one line per finished item (fsynced), so a killed
run loses at most the items in flight; a rerun with the same ``OUT`` skips finished items and
retries failed ones. ``OUT/config.json`` records the settings that shape verdicts (benchmark,
mode, swap, tie tolerance, model, aggregation); a rerun that changes them is refused rather than
mixing two protocols in one file. The report is always recomputed from ``results.jsonl``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from ..critique.aggregate import decide_pair
from ..io import InputFileError, ResumableJsonl, atomic_write_json, dumps_line
from .benchmarks import Benchmark, PairItem, get_benchmark
from .labels import label_repr
from .results import CONFIG, RESULTS, RUNS, EvalResults, RunStats, known_items, read_results, unknown_items
from .sources import Row, RowSource, open_source

__all__ = ["CONFIG", "RESULTS", "RUNS", "Evaluation", "RunStats", "evaluate", "read_results", "result_row"]

Mode = Literal["pairwise", "pointwise"]
# Settings that change what a stored verdict means: a resumed run must use the same ones.
_PINNED = ("benchmark", "mode", "swap", "tie_tolerance")
_PINNED_MODEL = ("model", "templates", "aggregation")
# Compared whenever both runs recorded them: their values may be falsy (temperature 0, no N/A keys).
_PINNED_MODEL_EXACT = ("allow_na", "temperature", "max_tokens")


class Evaluation:
    """One benchmark run in one output folder.

    Construction reads the data's light columns (ids, labels, categories; no image bytes),
    normalises labels and validates the schema; bad input raises :class:`InputFileError` with
    the file and column named. ``swap=None`` uses the benchmark's default (on for MMRB2, whose
    protocol needs both orders).
    """

    def __init__(
        self,
        benchmark: str | Benchmark,
        data: str | Path,
        out: str | Path,
        *,
        mode: Mode = "pairwise",
        swap: bool | None = None,
        limit: int | None = None,
        tie_tolerance: float = 0.0,
        config: str | None = None,
        split: str | None = None,
        revision: str | None = None,
        source: RowSource | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.bench = benchmark if isinstance(benchmark, Benchmark) else get_benchmark(benchmark)
        if mode not in ("pairwise", "pointwise"):
            raise InputFileError(f"unknown mode {mode!r}; use pairwise or pointwise")
        if limit is not None and limit < 1:
            raise InputFileError("--limit must be at least 1")
        self.data = str(data)
        self.out = Path(out)
        self.mode: Mode = mode
        self.swap = self.bench.default_swap if swap is None else bool(swap)
        self.limit = limit
        self.tie_tolerance = float(tie_tolerance)
        self.config, self.split, self.revision = config, split, revision
        self.log = log or (lambda _msg: None)
        self.source = source or open_source(data, config=config, split=split, revision=revision)
        if self.source.description.startswith("hf://") and revision is None:
            self.log("warning: hub dataset without --revision: the numbers cannot be reproduced exactly "
                     "if the dataset changes (report.json marks data.pinned = false)")
        self.columns = self.source.columns
        self.bench.check_columns(self.columns, self.source.description)
        self.items: list[PairItem] = []
        self.n_rows = 0
        self.bad_lines: list[str] = []
        self._index()

    # -- indexing ---------------------------------------------------------------------------------
    def _rows(self, *, light: bool) -> Any:
        for n, row in enumerate(self.source.rows(light=light)):
            if self.limit is not None and n >= self.limit:
                return
            yield row

    def _index(self) -> None:
        origins: dict[str, str] = {}
        for row in self._rows(light=True):
            self.n_rows += 1
            if row.problem is not None:
                self._bad_line(row, origins)
                continue
            for item in self.bench.adapter(row, self.columns, True):
                if item.id in origins:
                    raise InputFileError(f"{row.origin}: duplicate id {item.id!r} (also at {origins[item.id]}); "
                                         "ids must be unique for results to be resumable")
                origins[item.id] = row.origin
                self.items.append(item)
        if not self.items:
            raise InputFileError(f"{self.source.description}: no rows to evaluate")
        if len(self.bad_lines) == len(self.items):
            more = f" (and {len(self.bad_lines) - 3} more)" if len(self.bad_lines) > 3 else ""
            raise InputFileError(f"{self.source.description}: no usable line: {'; '.join(self.bad_lines[:3])}{more}")

    def _bad_line(self, row: Row, origins: dict[str, str]) -> None:
        """A line that could not be read becomes an item of its own, never judged: its label is
        unknown, so it is counted and listed with the unknown labels (report ``labels.unknown``),
        the reason standing in for the raw label, and logged."""
        rid = row.bad_id or f"row-{row.index}"
        while rid in origins:  # a real id that happens to read "line-N"
            rid += "~"
        origins[rid] = row.origin
        problem = str(row.problem)
        self.bad_lines.append(problem)
        self.log(f"skipped unreadable line: {problem}")
        self.items.append(PairItem(id=rid, task=self.bench.task or "t2i", prompt=None, label=None,
                                   label_raw=f"unreadable {rid}: {problem.removeprefix(row.origin + ': ')}",
                                   problem=problem))

    @property
    def known(self) -> list[PairItem]:
        """Items with a recognised label (the ones judged and scored)."""
        return known_items(self.items)

    @property
    def unknown(self) -> list[PairItem]:
        return unknown_items(self.items)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for it in self.items:
            h.update(dumps_line([it.id, label_repr(it.label_raw)]).encode())  # an id may hold a lone surrogate
        return h.hexdigest()[:16]

    def settings(self) -> dict[str, Any]:
        return {"benchmark": self.bench.name, "mode": self.mode, "swap": self.swap,
                "tie_tolerance": self.tie_tolerance, "limit": self.limit, "data": self.data,
                "config": self.config, "split": self.split, "revision": self.revision}

    # -- config pinning ---------------------------------------------------------------------------
    def _check_config(self, model: dict[str, Any]) -> None:
        path = self.out / CONFIG
        current = {**self.settings(), "model": model, "data_source": self.source.description,
                   "fingerprint": self.fingerprint()}
        if path.is_file() and (self.out / RESULTS).is_file():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                saved = {}
            diffs = [f"{k}: saved {saved.get(k)!r}, now {current[k]!r}" for k in _PINNED
                     if k in saved and saved.get(k) != current[k]]
            saved_model = saved.get("model") or {}
            diffs += [f"model.{k}: saved {saved_model.get(k)!r}, now {model.get(k)!r}" for k in _PINNED_MODEL
                      if saved_model.get(k) and model.get(k) and saved_model.get(k) != model.get(k)]
            diffs += [f"model.{k}: saved {saved_model[k]!r}, now {model[k]!r}" for k in _PINNED_MODEL_EXACT
                      if k in saved_model and k in model and saved_model[k] != model[k]]
            if diffs:
                raise InputFileError(
                    f"{self.out} already holds results made with other settings ({'; '.join(diffs)}). Mixing them "
                    f"would mix protocols: use another --out, or delete {self.out / RESULTS} to start over."
                )
            if saved.get("fingerprint") not in (None, current["fingerprint"]):
                self.log(f"note: the data (or --limit) changed since {path} was written; results of ids no longer "
                         "in the data are ignored")
        atomic_write_json(path, current)

    # -- judging ----------------------------------------------------------------------------------
    def pending(self) -> list[str]:
        """Ids still to judge (not finished in ``results.jsonl``; failed ones are retried)."""
        done = {rid for rid, row in read_results(self.out / RESULTS).items() if row.get("ok")}
        return [i.id for i in self.known if i.id not in done]

    async def arun(
        self,
        rm: Any,
        *,
        concurrency: int = 16,
        on_result: Callable[[dict[str, Any]], Any] | None = None,
    ) -> RunStats:
        """Judge every pending item with ``rm`` (a :class:`RewardModel`), ``concurrency`` items in
        flight, appending each result as it finishes. ``on_result(row)`` is called per item
        (progress bars). Returns what this invocation did."""
        self.out.mkdir(parents=True, exist_ok=True)
        model = _describe(rm)
        self._check_config(model)
        store = ResumableJsonl(self.out / RESULTS)
        todo = {i.id for i in self.known if i.id not in store.done}
        stats = RunStats(skipped_done=len(self.known) - len(todo))
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        workers = max(1, int(concurrency))
        queue: asyncio.Queue[PairItem | None] = asyncio.Queue(maxsize=2 * workers)
        aggregation = getattr(rm, "aggregation", None)

        async def produce() -> None:
            # Rows are streamed (images only for the window being judged); reading happens in a
            # thread so a slow disk never stalls the requests in flight.
            rows = self._rows(light=False)
            remaining = set(todo)
            try:
                while remaining:
                    row = await asyncio.to_thread(next, rows, None)
                    if row is None:
                        break
                    if row.problem is not None:
                        continue  # indexed as an unknown-label item; nothing to judge
                    for item in self.bench.adapter(row, self.columns, False):
                        if item.id in remaining:
                            remaining.discard(item.id)
                            await queue.put(item)
            except asyncio.CancelledError:
                raise  # the workers are cancelled with us; waiting for queue space would hang
            except BaseException:
                await stop_workers()
                raise
            await stop_workers()

        async def stop_workers() -> None:
            for _ in range(workers):
                await queue.put(None)

        written: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def write() -> None:
            # One writer: each row is appended and fsynced in a thread, in completion order, so
            # the event loop never waits on the disk while requests are in flight. A failing
            # callback must not stop results from being saved: its error is raised at the end.
            callback_error: BaseException | None = None
            while (row := await written.get()) is not None:
                await asyncio.to_thread(store.append, row)
                if on_result is not None and callback_error is None:
                    try:
                        res = on_result(row)
                        if asyncio.iscoroutine(res):
                            await res
                    except Exception as exc:
                        callback_error = exc
            if callback_error is not None:
                raise callback_error

        async def work() -> None:
            while (item := await queue.get()) is not None:
                row = await self._judge(rm, item, aggregation)
                stats.judged += 1
                stats.judgements += len(row["orders"])
                stats.prompt_tokens += row["usage"]["prompt_tokens"]
                stats.completion_tokens += row["usage"]["completion_tokens"]
                if row["ok"]:
                    stats.ok += 1
                else:
                    kind = row.get("error_kind") or "parse"
                    stats.failed[kind] = stats.failed.get(kind, 0) + 1
                await written.put(row)

        async def judge_all() -> list[Any]:
            try:
                return await asyncio.gather(produce(), *(work() for _ in range(workers)), return_exceptions=True)
            finally:
                await written.put(None)

        writer = asyncio.create_task(write())
        try:
            outcomes = await judge_all()
        finally:
            # Even when cancelled (Ctrl-C), the rows already judged reach the file first.
            writer_outcome = (await asyncio.gather(writer, return_exceptions=True))[0]
            store.finalize([i.id for i in self.items])
        outcomes.append(writer_outcome)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        stats.wall_s = time.perf_counter() - t0
        _append_json_line(self.out / RUNS, {"started_at": started, "concurrency": workers, "model": model,
                                            **stats.to_json()})
        if errors:
            raise errors[0]
        return stats

    async def _judge(self, rm: Any, item: PairItem, aggregation: Any) -> dict[str, Any]:
        from ..critique.schema import failed_compare

        t0 = time.perf_counter()
        if item.problem:
            res = failed_compare(item.task, "input", item.problem, id=item.id, mode=self.mode)
        else:
            try:
                res = await rm.acompare(item.prompt, item.image_a, item.image_b, item.source, mode=self.mode,
                                        swap=self.swap, tie_tolerance=self.tie_tolerance, id=item.id,
                                        base_dir=item.base_dir)
            except Exception as exc:  # a bug must not end a long run; the item records it
                res = failed_compare(item.task, "backend", f"unexpected {type(exc).__name__}: {exc}", id=item.id,
                                     mode=self.mode)
        return result_row(item, res, benchmark=self.bench.name, mode=self.mode, swap=self.swap,
                          aggregation=aggregation, elapsed_s=time.perf_counter() - t0)

    # -- reporting --------------------------------------------------------------------------------
    def results(self) -> dict[str, dict[str, Any]]:
        """The saved result rows by id (the latest row per id)."""
        return read_results(self.out / RESULTS)

    def _items_with_images(self) -> Any:
        for row in self._rows(light=False):
            if row.problem is None:
                yield from self.bench.adapter(row, self.columns, False)

    def snapshot(self) -> EvalResults:
        """The data's index and the saved results as they are now: what a report reads."""
        return EvalResults(
            bench=self.bench, items=list(self.items), out=self.out, mode=self.mode, swap=self.swap,
            tie_tolerance=self.tie_tolerance, settings=self.settings(), source=self.source.description,
            source_revision=self.source.revision, revision=self.revision, n_rows=self.n_rows,
            fingerprint=self.fingerprint(), rows=self.results(), items_with_images=self._items_with_images,
        )

    def write_report(self, **kwargs: Any) -> dict[str, Any]:
        """Compute the report from ``results.jsonl`` and write report.json / .md / .html."""
        from .report import write_report

        return write_report(self.snapshot(), **kwargs)


def _describe(rm: Any) -> dict[str, Any]:
    try:
        desc = dict(rm.describe())
    except Exception:
        desc = {}
    sampling = getattr(rm, "sampling", None)
    if sampling is not None:
        desc["temperature"] = getattr(sampling, "temperature", None)
        desc["max_tokens"] = getattr(sampling, "max_tokens", None)
    return desc


def _append_json_line(path: Path, obj: dict[str, Any]) -> None:
    import os

    with path.open("a", encoding="utf-8") as fh:
        fh.write(dumps_line(obj) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _margin(o: Any, task: str, mode: str, aggregation: Any) -> float | None:
    """Signed strength of preference for A in one order: the score-sum gap (pairwise; the same
    sums the verdict compares) or the reward gap (pointwise)."""
    if not o.ok:
        return None
    if mode == "pointwise":
        if o.reward_a is None or o.reward_b is None:
            return None
        return round(o.reward_a - o.reward_b, 6)
    d = decide_pair(o.scores_a, o.scores_b, task, aggregation, 0.0)
    return None if d.winner is None else round(d.sum_a - d.sum_b, 6)


def _usage(o: Any) -> dict[str, Any]:
    u = o.usage
    if u is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0, "cached": False}
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "latency_s": round(u.latency_s, 4), "cached": u.cached}


def result_row(item: PairItem, res: Any, *, benchmark: str, mode: str, swap: bool, aggregation: Any,
               elapsed_s: float = 0.0) -> dict[str, Any]:
    """One line of ``results.jsonl``: the item's ground truth, the combined verdict and every
    judged order (the B-first order already mapped back to the caller's A/B)."""
    names = ("AB", "BA") if swap else ("AB",)
    sources = list(res.orders) if res.orders else []
    orders = []
    for k, name in enumerate(names):
        o = sources[k] if k < len(sources) else res
        orders.append({
            "order": name,
            "first": "A" if name == "AB" else "B",
            "ok": bool(o.ok),
            "error": o.error,
            "error_kind": o.error_kind,
            "winner": o.winner,
            "margin": _margin(o, res.task, mode, aggregation),
            "reward_a": o.reward_a,
            "reward_b": o.reward_b,
            "scores_a": o.scores_a,
            "scores_b": o.scores_b,
            "dimension_winners": o.dimension_winners,
            "summary": o.summary,
            "raw": o.raw,
            "usage": _usage(o),
        })
    margins = [o["margin"] for o in orders]
    margin = None if (not res.ok or any(m is None for m in margins)) else round(sum(margins) / len(margins), 6)
    return {
        "id": item.id,
        "benchmark": benchmark,
        "task": res.task,
        "mode": mode,
        "swap": swap,
        "label": item.label,
        "label_raw": label_repr(item.label_raw),
        "category": item.category,
        "group": item.group,
        "ok": bool(res.ok),
        "error": res.error,
        "error_kind": res.error_kind,
        "prediction": res.winner,
        "margin": margin,
        "reward_a": res.reward_a,
        "reward_b": res.reward_b,
        "orders": orders,
        "usage": {"prompt_tokens": sum(o["usage"]["prompt_tokens"] for o in orders),
                  "completion_tokens": sum(o["usage"]["completion_tokens"] for o in orders)},
        "elapsed_s": round(elapsed_s, 4),
        "prompt": item.prompt,
        "meta": item.meta,
    }


def evaluate(rm: Any, benchmark: str, data: str | Path, out: str | Path, *, concurrency: int = 16,
             report: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run (or resume) an evaluation and write its report; returns the report dict.

    ``kwargs`` go to :class:`Evaluation` (mode, swap, limit, tie_tolerance, config, split,
    revision); ``report`` to :meth:`Evaluation.write_report` (bootstrap, seed,
    bothbad_threshold, html).
    """
    ev = Evaluation(benchmark, data, out, **kwargs)
    runner = getattr(rm, "run_sync", None)
    coro = ev.arun(rm, concurrency=concurrency)
    stats = runner(coro) if runner is not None else asyncio.run(coro)
    return ev.write_report(last_run=stats, **(report or {}))
