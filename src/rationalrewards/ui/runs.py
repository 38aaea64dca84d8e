"""Reading output folders of the stages for the "Browse a run" tab (no Gradio here).

A folder is recognised by the files each stage writes:

* ``eval``:   ``results.jsonl`` with ``config.json`` (and usually ``report.json``);
* ``refine``: ``trajectory.json`` (one item) or ``items/<id>/trajectory.json`` (a batch);
* ``curate``: ``kept.jsonl`` / ``rejected.jsonl``;
* ``demo``:   ``summary.json`` with ``demo_state.json``; its evaluation and refinement folders
  are runs of the kinds above and are listed as such.

:func:`find_runs` lists the runs in a folder (the folder itself, or its sub-folders two levels
deep), :func:`open_run` reads one into :class:`RunItem` rows that the UI filters and pages.
Images are resolved when a page is shown, not when the run is opened.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("eval", "refine", "curate")


class RunFolderError(ValueError):
    """The folder is missing or holds no run this tab can read (the message says what was looked for)."""


@dataclass
class ImageRef:
    """One image of an item, labelled: ``src`` is a path, bytes or data URL as the stage stored it."""

    caption: str
    src: Any
    base_dir: str | None = None


@dataclass
class RunItem:
    """One item of a run, in the shape the UI shows: what was asked, what happened, why.

    ``wrong`` marks items whose verdict disagrees with the reference (eval: the human label;
    refine: the final image is not better than round 0; curate: rejected); ``failed`` marks items
    whose judge call failed. ``reason`` is what the "by reason" filter offers (eval: failure
    kind; refine: stop reason; curate: the rejecting check).
    """

    id: str
    prompt: str
    verdict: str
    category: str | None = None
    reason: str | None = None
    wrong: bool = False
    failed: bool = False
    scores: list[tuple[str, dict[str, float | None]]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)


@dataclass
class Run:
    """An opened run: its kind, folder, a one-line description and its items."""

    kind: str
    path: Path
    description: str
    items: list[RunItem]
    # eval only: the data the items came from, reopened on demand for their images.
    _eval: Any = None
    _images_error: str | None = None

    def categories(self) -> list[str]:
        return sorted({i.category for i in self.items if i.category})

    def reasons(self) -> list[str]:
        return sorted({i.reason for i in self.items if i.reason})

    def filter(self, *, show: str = "all", category: str | None = None, reason: str | None = None) -> list[RunItem]:
        """Items passing the filters. ``show``: ``all``, ``wrong`` (wrong or failed) or ``failed``."""
        out = []
        for item in self.items:
            if show == "wrong" and not (item.wrong or item.failed):
                continue
            if show == "failed" and not item.failed:
                continue
            if category and item.category != category:
                continue
            if reason and item.reason != reason:
                continue
            out.append(item)
        return out

    def images_for(self, items: list[RunItem]) -> str | None:
        """Fill in the images of ``items`` (eval runs read them from the evaluated data again).

        Returns a note when the images cannot be read (the items are still shown)."""
        if self.kind != "eval":
            return None
        wanted = {i.id: i for i in items if not i.images}
        if not wanted:
            return None
        if self._eval is None:
            if self._images_error:
                return self._images_error
            try:
                self._eval = _reopen_eval(self.path)
            except Exception as exc:  # any reason the data is gone: say so, keep the rows
                self._images_error = f"images unavailable: the evaluated data could not be opened again ({exc})"
                return self._images_error
        ev = self._eval
        try:
            for row in ev._rows(light=False):
                for pair in ev.bench.adapter(row, ev.columns, False):
                    item = wanted.pop(pair.id, None)
                    if item is None:
                        continue
                    srcs = pair.source if isinstance(pair.source, list) else ([pair.source] if pair.source else [])
                    item.images = [ImageRef(f"source {k + 1}" if len(srcs) > 1 else "source", s, pair.base_dir)
                                   for k, s in enumerate(srcs)]
                    item.images += [ImageRef("image A", pair.image_a, pair.base_dir),
                                    ImageRef("image B", pair.image_b, pair.base_dir)]
                if not wanted:
                    break
        except Exception as exc:
            return f"images unavailable: {exc}"
        return None


def _reopen_eval(folder: Path) -> Any:
    from ..eval.runner import CONFIG, Evaluation

    cfg = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    return Evaluation(cfg["benchmark"], cfg["data"], folder, mode=cfg.get("mode", "pairwise"), swap=cfg.get("swap"),
                      limit=cfg.get("limit"), config=cfg.get("config"), split=cfg.get("split"),
                      revision=cfg.get("revision"))


# -- recognising folders ---------------------------------------------------------------------------------
def kind_of(folder: Path) -> str | None:
    """The kind of run ``folder`` holds directly, or None."""
    if (folder / "results.jsonl").is_file() and (folder / "config.json").is_file():
        return "eval"
    if (folder / "trajectory.json").is_file() or ((folder / "items").is_dir() and any(
            (folder / "items").glob("*/trajectory.json"))):
        return "refine"
    if (folder / "kept.jsonl").is_file() or (folder / "rejected.jsonl").is_file():
        return "curate"
    return None


def find_runs(folder: str | Path, depth: int = 2) -> list[tuple[str, Path]]:
    """``(kind, path)`` of every run in ``folder``: the folder itself if it is one, else its
    sub-folders up to ``depth`` levels down (a demo folder holds eval and refine runs)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise RunFolderError(f"not a folder: {root}")
    kind = kind_of(root)
    if kind:
        return [(kind, root)]
    found: list[tuple[str, Path]] = []

    def walk(d: Path, level: int) -> None:
        for sub in sorted(p for p in d.iterdir() if p.is_dir()):
            k = kind_of(sub)
            if k:
                found.append((k, sub))
            elif level < depth:
                walk(sub, level + 1)

    walk(root, 1)
    if not found:
        raise RunFolderError(
            f"{root} holds no run: looked for results.jsonl + config.json (eval), trajectory.json or "
            "items/*/trajectory.json (refine), kept.jsonl / rejected.jsonl (curate), here and two levels down")
    return found


def open_run(folder: str | Path) -> Run:
    """Read the run in ``folder`` (which must hold one directly; see :func:`find_runs`)."""
    path = Path(folder).expanduser()
    kind = kind_of(path)
    if kind == "eval":
        return _open_eval(path)
    if kind == "refine":
        return _open_refine(path)
    if kind == "curate":
        return _open_curate(path)
    raise RunFolderError(f"{path} is not an eval, refine or curate output folder")


def demo_summary(folder: str | Path) -> dict[str, Any] | None:
    """The demo's ``summary.json`` of ``folder`` (None when the folder is not a demo run)."""
    p = Path(folder).expanduser() / "summary.json"
    if not p.is_file() or not (p.parent / "demo_state.json").is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- eval ------------------------------------------------------------------------------------------------
def _open_eval(path: Path) -> Run:
    from ..eval.runner import RESULTS, read_results

    rows = read_results(path / RESULTS)
    report: dict[str, Any] = {}
    if (path / "report.json").is_file():
        try:
            report = json.loads((path / "report.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            report = {}
    items = []
    for rid, row in rows.items():
        label, pred = row.get("label"), row.get("prediction")
        failed = not row.get("ok")
        wrong = not failed and label is not None and pred != label
        if failed:
            verdict = f"failed ({row.get('error_kind')}): {row.get('error') or ''}"
        else:
            verdict = f"people: {label} · model: {pred} · {'wrong' if wrong else 'right'}"
            if row.get("margin") is not None:
                gap = "reward gap A − B" if row.get("mode") == "pointwise" else "score-sum gap A − B"
                verdict += f" · margin {row['margin']:g} ({gap}{', mean of both orders' if row.get('swap') else ''})"
        scores = []
        texts = []
        for o in row.get("orders") or []:
            first = "A shown first" if o.get("first") == "A" else "B shown first"
            scores.append((f"A ({first})", o.get("scores_a") or {}))
            scores.append((f"B ({first})", o.get("scores_b") or {}))
            if o.get("raw"):
                texts.append((f"critique, {first}", str(o["raw"])))
            elif o.get("error"):
                texts.append((f"error, {first}", str(o["error"])))
        items.append(RunItem(id=str(rid), prompt=str(row.get("prompt") or ""), verdict=verdict,
                             category=row.get("category"), reason=row.get("error_kind") if failed else None,
                             wrong=wrong, failed=failed, scores=scores, texts=texts))
    acc = report.get("accuracy")
    desc = f"eval run · {report.get('benchmark') or '?'} · {len(items)} judged pairs"
    if acc is not None:
        desc += f" · accuracy {acc * 100:.1f}% ({report.get('protocol')})"
    return Run("eval", path, desc, items)


# -- refine ----------------------------------------------------------------------------------------------
def _trajectories(path: Path) -> Iterator[tuple[Path, Any]]:
    from ..refine.trajectory import load_trajectory

    if (path / "trajectory.json").is_file():
        folders = [path]
    else:
        folders = sorted(p.parent for p in (path / "items").glob("*/trajectory.json"))
    for d in folders:
        yield d, load_trajectory(d)


def _open_refine(path: Path) -> Run:
    items = []
    for d, traj in _trajectories(path):
        if traj is None:
            items.append(RunItem(id=d.name, prompt="", verdict="trajectory.json is unreadable", failed=True,
                                 reason="unreadable"))
            continue
        r0, best = traj.round0_best(), traj.best
        base = traj.baseline.best if traj.baseline is not None and traj.baseline.finished else None
        images = [ImageRef(f"source {k + 1}" if len(traj.source) > 1 else "source", str(d / s))
                  for k, s in enumerate(traj.source)]
        scores = []
        if r0 is not None:
            images.append(ImageRef(f"round 0 best · reward {_f(r0.reward)}", str(d / r0.image) if r0.image else None))
            scores.append(("round 0 best", r0.scores))
        if best is not None:
            images.append(ImageRef(f"final best (round {best.round}) · reward {_f(best.reward)}",
                                   str(d / best.image) if best.image else None))
            scores.append((f"final (round {best.round})", best.scores))
        if base is not None:
            n = traj.baseline.generations if traj.baseline else 0
            images.append(ImageRef(f"best-of-{n} · reward {_f(base.reward)}", str(d / base.image) if base.image else None))
            scores.append((f"best-of-{n}", base.scores))
        improved = (r0 is not None and best is not None and r0.reward is not None and best.reward is not None
                    and best.reward > r0.reward)
        failed = not traj.ok
        verdict = (f"failed ({traj.error_kind}): {traj.error}" if traj.error else
                   f"{len(traj.rounds)} rounds · stop: {traj.stop_reason} · "
                   f"{'improved' if improved else 'not improved'} over round 0")
        texts = [(f"round {r.round} request ({r.request_source})", f"{r.request}\n\n{r.decision}") for r in traj.rounds]
        items.append(RunItem(id=traj.id or d.name, prompt=traj.prompt, verdict=verdict, category=traj.task,
                             reason=traj.stop_reason or traj.error_kind, wrong=not improved, failed=failed,
                             scores=scores, texts=texts, images=images))
    return Run("refine", path, f"refine run · {len(items)} item(s)", items)


# -- curate ----------------------------------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict[str, Any]]:
    from ..io import iter_keyed_rows

    if not path.is_file():
        return []
    return [r for r in iter_keyed_rows(path) if r is not None]


def _open_curate(path: Path) -> Run:
    items = []
    for name in ("kept", "rejected"):
        for row in _jsonl(path / f"{name}.jsonl"):
            crit = row.get("critique") or {}
            failed = not crit.get("ok", True)
            checks = [c.get("check") for c in row.get("checks") or [] if isinstance(c, dict) and not c.get("passed", True)]
            reason = (checks[0] if checks else None) if name == "rejected" else None
            if failed:
                reason = f"critique failed ({crit.get('error_kind')})"
            srcs = row.get("source") or []
            images = [ImageRef(f"source {k + 1}" if len(srcs) > 1 else "source", str(path / s) if s else None)
                      for k, s in enumerate(srcs)]
            images.append(ImageRef(f"{name} · reward {_f(row.get('reward'))}",
                                   str(path / row["image"]) if row.get("image") else None))
            texts = [(k, str(v)) for k, v in (crit.get("justifications") or {}).items() if v]
            if crit.get("summary"):
                texts.append(("summary", str(crit["summary"])))
            if crit.get("raw") and failed:
                texts.append(("raw critique", str(crit["raw"])))
            items.append(RunItem(id=str(row.get("id")), prompt=str(row.get("prompt") or ""),
                                 verdict=f"{name}: {row.get('reason') or ''}", category=row.get("task"),
                                 reason=reason, wrong=name == "rejected", failed=failed,
                                 scores=[("scores", row.get("scores") or {})], texts=texts, images=images))
    n_kept = sum(1 for i in items if not i.wrong)
    return Run("curate", path, f"curate run · {n_kept} kept · {len(items) - n_kept} rejected", items)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
