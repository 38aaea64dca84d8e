"""The demo's pretrained base student: made by the project, shipped with it.

No real PARROT student starts from random weights: it starts from a pretrained VLM (Qwen3-VL-8B
in the paper) that already describes images, answers questions about them and tells whether an
image matches a text. The demo mirrors that. :func:`pretrain_base` trains the tiny Qwen3-VL
(vision tower *and* language model) on generic vision-language tasks of the world
(:mod:`.base_data`: captions, questions about what is where / what colour / what size / which
word, image-text matching, differences between two images, whether an edit was carried out),
from its own seed stream, never from preference pairs, critiques, scores or preferences.

The result is committed to the repository under ``rationalrewards/demo/base/`` (weights,
processor, :data:`RECIPE_FILE` with the exact recipe and seed, :data:`STATS_FILE` with its
held-out accuracies, and :data:`HASH_FILE` with the sha256 of every file), so a demo starts from
it; ``rationalrewards demo pretrain-base`` (or :func:`pretrain_base`) rebuilds it.

Stages: build the tiny model (tokenizer trained on the judge vocabulary and the pretraining
text), pretrain and condition the vision tower (:func:`.vision.prepare_vision`), then train
everything on the task stream with a plain PyTorch loop (assistant tokens only in the loss,
AdamW, cosine schedule; the tower at a lower learning rate). The loop saves a checkpoint every
``save_every`` steps and resumes from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from .base_data import TASK_WEIGHTS, TASKS, BaseExample, base_corpus, base_examples
from .sft import shuffled_batches
from .world import render

#: The task mix of the current recipe (the first one used :data:`.base_data.TASK_WEIGHTS`).
JUDGE_MIX: dict[str, float] = {"caption": 0.1, "qa": 0.15, "match": 0.4, "diff": 0.1, "edit": 0.25}
#: Where the shipped base lives (package data).
SHIPPED_BASE = Path(__file__).resolve().parent / "base"
RECIPE_FILE = "recipe.json"
STATS_FILE = "base_stats.json"
HASH_FILE = "SHA256SUMS"
_CKPT = "pretrain_checkpoint.pt"

Log = Callable[[str], None]


class BaseModelError(RuntimeError):
    """The base model is missing, altered (hash mismatch) or cannot be built as asked."""


@dataclass
class BaseRecipe:
    """Everything that determines the base model. Same recipe, same library versions: same weights."""

    seed: int = 0
    hidden_size: int = 192
    num_layers: int = 4
    vocab_size: int = 1024
    image_size: int = 96
    vision_pretrain_steps: int = 500
    vision_pretrain_images: int = 3000
    train_examples: int = 48000
    heldout_per_task: int = 60
    steps: int = 8000
    batch_size: int = 16
    learning_rate: float = 1.5e-3
    vision_lr_scale: float = 0.2
    warmup_steps: int = 200
    weight_decay: float = 0.0
    save_every: int = 500
    #: The task mix of the stream (see :mod:`.base_data`), the request before the images for
    #: ``match`` / ``edit``, and the share of those with a one-attribute hard negative. The mix
    #: leans toward what the judge needs and the first base learnt least (matching a request to
    #: an image, checking an edit): docs/demo.md.
    task_weights: dict[str, float] = field(default_factory=lambda: dict(JUDGE_MIX))
    text_first: bool = True
    hard_negatives: float = 0.5
    #: Evaluate the held-out set every this many steps (0: only before and after); the curve lands
    #: in ``base_stats.json`` under ``heldout_curve``.
    eval_every: int = 2000

    def stream(self, n: int, split: str) -> list[BaseExample]:
        """``n`` examples of this recipe's stream, split ``split``."""
        return base_examples(n, seed=self.seed, split=split, weights=self.task_weights, text_first=self.text_first,
                             hard_negatives=self.hard_negatives)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BaseRecipe:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown base recipe field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def first(cls, **overrides: Any) -> BaseRecipe:
        """The first shipped recipe (3,000 steps on 12,000 examples of the plain mix: images before
        the text, no hard negatives), kept so that its numbers in ``docs/demo.md`` can be rebuilt."""
        base: dict[str, Any] = {"train_examples": 12000, "heldout_per_task": 30, "steps": 3000, "warmup_steps": 100,
                                "save_every": 250, "task_weights": dict(TASK_WEIGHTS), "text_first": False,
                                "hard_negatives": 0.0, "eval_every": 0}
        base.update(overrides)
        return cls(**base)

    @classmethod
    def tiny(cls, **overrides: Any) -> BaseRecipe:
        """A budget that only checks the recipe runs (tests)."""
        base: dict[str, Any] = {"hidden_size": 64, "num_layers": 1, "vocab_size": 600, "vision_pretrain_steps": 2,
                                "vision_pretrain_images": 64, "train_examples": 40, "heldout_per_task": 2,
                                "steps": 3, "batch_size": 4, "warmup_steps": 1, "save_every": 2, "eval_every": 2}
        base.update(overrides)
        return cls(**base)


# ------------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------------


def _messages(ex: BaseExample, with_answer: bool) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "text", "text": ex.prefix}] if ex.prefix else []
    content += [{"type": "image"} for _ in ex.scenes]
    content.append({"type": "text", "text": ex.question})
    msgs: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if with_answer:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": ex.answer}]})
    return msgs


class Encoder:
    """Turns :class:`BaseExample` into model inputs with the checkpoint's own processor and chat
    template (the layout SFT and inference use later)."""

    def __init__(self, processor: Any, image_size: int):
        self.processor = processor
        self.tok = processor.tokenizer
        self.image_size = image_size
        probe = processor.image_processor(images=[render(_empty_scene(), image_size)], return_tensors="pt")
        merge = int(getattr(processor.image_processor, "merge_size", 2))
        self.tokens_per_image = int(probe["image_grid_thw"][0].prod()) // (merge * merge)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        self.image_pad_id = self.tok.convert_tokens_to_ids("<|image_pad|>")

    def _expand(self, text: str) -> str:
        return text.replace("<|image_pad|>", "<|image_pad|>" * self.tokens_per_image)

    def prompt_text(self, ex: BaseExample) -> str:
        return self.processor.apply_chat_template(_messages(ex, False), tokenize=False, add_generation_prompt=True)

    def encode(self, ex: BaseExample, *, pixels: bool = True) -> dict[str, Any]:
        """input ids, labels (-100 outside the answer) and the images' patches of one example.
        ``pixels=False`` keeps the scenes instead, rendered when the example is collated (the same
        values; a long run's stream would not fit in memory as patches)."""
        import torch

        prompt = self._expand(self.prompt_text(ex))
        full = self._expand(self.processor.apply_chat_template(_messages(ex, True), tokenize=False))
        if not full.startswith(prompt):
            raise BaseModelError("the chat template does not extend the prompt with the answer")
        p_ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
        ids = self.tok(full, add_special_tokens=False)["input_ids"]
        labels = [-100] * len(p_ids) + ids[len(p_ids):]
        if not pixels:
            return {"ids": torch.tensor(ids), "labels": torch.tensor(labels), "scenes": list(ex.scenes)}
        pv = self.processor.image_processor(images=[render(s, self.image_size) for s in ex.scenes],
                                            return_tensors="pt")
        return {"ids": torch.tensor(ids), "labels": torch.tensor(labels), "pixel_values": pv["pixel_values"],
                "grid": pv["image_grid_thw"]}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        n = max(len(it["ids"]) for it in items)
        ids = torch.full((len(items), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), n), -100, dtype=torch.long)
        mask = torch.zeros((len(items), n), dtype=torch.long)
        for i, it in enumerate(items):
            k = len(it["ids"])
            ids[i, :k], labels[i, :k], mask[i, :k] = it["ids"], it["labels"], 1
        # Qwen3-VL's multimodal RoPE needs to know which tokens are image tokens (1) and which text (0).
        mm = (ids == self.image_pad_id).long()
        if all("scenes" in it for it in items):
            pv = self.processor.image_processor(
                images=[render(s, self.image_size) for it in items for s in it["scenes"]], return_tensors="pt")
            pixel_values, grid = pv["pixel_values"], pv["image_grid_thw"]
        else:
            pixel_values = torch.cat([it["pixel_values"] for it in items])
            grid = torch.cat([it["grid"] for it in items])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "mm_token_type_ids": mm,
                "pixel_values": pixel_values, "image_grid_thw": grid}


def _empty_scene() -> Any:
    from .world import Scene

    return Scene()


# ------------------------------------------------------------------------------------------------
# Evaluation: held-out accuracy per task
# ------------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().split())


def generate_answers(model: Any, enc: Encoder, examples: list[BaseExample], *, max_new_tokens: int = 80,
                     batch_size: int = 16) -> list[str]:
    """Greedy answers of ``model`` to the examples' questions."""
    import torch

    tok = enc.tok
    out: list[str] = []
    model.eval()
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        prompts = [enc.prompt_text(ex) for ex in chunk]
        images = [render(s, enc.image_size) for ex in chunk for s in ex.scenes]
        batch = enc.processor(text=prompts, images=images, return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=enc.pad_id, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
        for row in gen[:, batch["input_ids"].shape[1]:]:
            out.append(tok.decode(row, skip_special_tokens=True).strip())
    return out


def task_accuracy(examples: list[BaseExample], answers: list[str]) -> dict[str, Any]:
    """Exact-match accuracy per task kind (whitespace and case ignored), plus, for the yes/no
    tasks (``match``, ``edit``), how often the yes/no part alone is right."""
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    yes_no_right: Counter[str] = Counter()
    for ex, ans in zip(examples, answers, strict=True):
        total[ex.kind] += 1
        right[ex.kind] += _norm(ans) == _norm(ex.answer)
        if ex.kind in ("match", "edit"):
            yes_no_right[ex.kind] += _norm(ans).startswith("yes") == _norm(ex.answer).startswith("yes")
    out: dict[str, Any] = {}
    for kind in TASKS:
        if total[kind]:
            out[kind] = {"n": total[kind], "exact": round(right[kind] / total[kind], 4)}
            if kind in yes_no_right or kind in ("match", "edit"):
                out[kind]["yes_no"] = round(yes_no_right[kind] / total[kind], 4)
    n = sum(total.values())
    out["all"] = {"n": n, "exact": round(sum(right.values()) / n, 4) if n else None}
    return out


# ------------------------------------------------------------------------------------------------
# Pretraining
# ------------------------------------------------------------------------------------------------


def pretrain_base(out: str | Path, recipe: BaseRecipe | None = None, *, log: Log | None = None,
                  threads: int | None = None) -> dict[str, Any]:
    """Build and pretrain the base student in ``out`` (resuming a checkpoint found there).

    Returns the statistics also written to ``out/base_stats.json``: held-out accuracy per task
    before and after the language-model pretraining, the vision read-out accuracies, steps, time.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..testing.tiny_models import build_tiny_qwen3vl
    from .corpus import tokenizer_corpus
    from .vision import VISION_MARKER, prepare_vision

    r = recipe or BaseRecipe()
    say = log or (lambda _m: None)
    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / "init"
    recipe_path = folder / RECIPE_FILE
    if recipe_path.is_file() and json.loads(recipe_path.read_text(encoding="utf-8")) != r.to_json():
        raise BaseModelError(f"{folder} holds a base of another recipe; use another folder")
    atomic_write_json(recipe_path, r.to_json())
    if not (work / VISION_MARKER).is_file():
        tmp = folder / ".init.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        build_tiny_qwen3vl(tmp, seed=r.seed, vocab_size=r.vocab_size, hidden_size=r.hidden_size,
                           num_layers=r.num_layers, image_size_cap=r.image_size * r.image_size,
                           corpus=tokenizer_corpus(r.seed) + base_corpus(r.seed))
        prepare_vision(tmp, pretrain_steps=r.vision_pretrain_steps, images=r.vision_pretrain_images, seed=r.seed,
                       image_size=r.image_size, log=say)
        shutil.rmtree(work, ignore_errors=True)
        os.replace(tmp, work)
    vision_stats = json.loads((work / VISION_MARKER).read_text(encoding="utf-8"))

    processor = AutoProcessor.from_pretrained(work)
    model = AutoModelForImageTextToText.from_pretrained(work, dtype=torch.float32)
    enc = Encoder(processor, r.image_size)
    torch.manual_seed(r.seed)
    train = r.stream(r.train_examples, "train")
    heldout = _heldout(r)
    say(f"base: encoding {len(train)} training examples")
    items = [enc.encode(ex, pixels=False) for ex in train]
    tokens = sum(len(it["ids"]) for it in items)

    vis_params = list(model.model.visual.parameters())
    vis_ids = {id(p) for p in vis_params}
    lm_params = [p for p in model.parameters() if id(p) not in vis_ids]
    opt = torch.optim.AdamW([{"params": lm_params, "lr": r.learning_rate},
                             {"params": vis_params, "lr": r.learning_rate * r.vision_lr_scale}],
                            weight_decay=r.weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]

    def lr_factor(step: int) -> float:
        if step < r.warmup_steps:
            return (step + 1) / r.warmup_steps
        progress = (step - r.warmup_steps) / max(1, r.steps - r.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    ckpt = folder / _CKPT
    start, history, curve = 0, [], []
    before = None
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history, before = int(state["step"]), list(state["history"]), state.get("before")
        curve = list(state.get("curve") or [])
        say(f"base: resumed at step {start}")
    if before is None:
        say(f"base: held-out accuracy before training ({len(heldout)} examples)")
        before = task_accuracy(heldout, generate_answers(model, enc, heldout))
    batches = shuffled_batches(len(items), r.batch_size, random.Random(f"demo-base-order:{r.seed}"))
    batches_done = 0
    # The data order is a pure function of the seed: replay it up to the resumed step.
    for _ in range(start):
        next(batches)
    model.train()
    t_train = time.perf_counter()
    running = 0.0
    for step in range(start, r.steps):
        for g, lr in zip(opt.param_groups, base_lrs, strict=True):
            g["lr"] = lr * lr_factor(step)
        batch = enc.collate([items[i] for i in next(batches)])
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += float(loss.detach())
        batches_done += 1
        if r.eval_every and (step + 1) % r.eval_every == 0 and step + 1 < r.steps:
            acc = task_accuracy(heldout, generate_answers(model, enc, heldout))
            model.train()
            curve.append({"step": step + 1, "heldout_accuracy": acc})
            say(f"base: step {step + 1} held-out " + ", ".join(
                f"{k} {v['exact']}" + (f" (yes/no {v['yes_no']})" if "yes_no" in v else "") for k, v in acc.items()))
        if (step + 1) % r.save_every == 0 or step + 1 == r.steps:
            history.append({"step": step + 1, "loss": round(running / batches_done, 4),
                            "seconds": round(time.perf_counter() - t_train, 1)})
            running, batches_done = 0.0, 0
            say(f"base: step {step + 1}/{r.steps}, loss {history[-1]['loss']}")
            tmp_ckpt = ckpt.with_name(ckpt.name + ".tmp")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                        "history": history, "before": before, "curve": curve}, tmp_ckpt)
            os.replace(tmp_ckpt, ckpt)
    train_seconds = time.perf_counter() - t_train
    after = task_accuracy(heldout, generate_answers(model, enc, heldout))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    for name in ("rationalrewards_tiny_model.json", VISION_MARKER):
        if (work / name).is_file():
            shutil.copy2(work / name, folder / name)
    stats = {
        "recipe": r.to_json(),
        "data": {"stream": f"demo-base:{r.seed}", "train_examples": len(train), "train_tokens": tokens,
                 "by_task": dict(Counter(ex.kind for ex in train)), "heldout_per_task": r.heldout_per_task},
        "parameters": sum(p.numel() for p in model.parameters()),
        "vision_pretraining": (vision_stats.get("pretraining") or {}).get("heldout_accuracy"),
        "heldout_accuracy_before": before,
        "heldout_accuracy": after,
        "heldout_curve": [*curve, {"step": r.steps, "heldout_accuracy": after}],
        "history": history,
        "train_seconds": round(train_seconds, 1),
        "examples_per_second": round((r.steps - start) * r.batch_size / max(train_seconds, 1e-9), 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(folder / STATS_FILE, stats)
    ckpt.unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    write_hashes(folder)
    say(f"base: done in {stats['seconds']} s; held-out accuracy {after['all']['exact']} "
        f"(before {before['all']['exact']})")
    return stats


def _heldout(r: BaseRecipe) -> list[BaseExample]:
    """``heldout_per_task`` examples of each kind from the held-out split of the stream."""
    # Large enough that the rarest kind of the mix has its share; the stream is prefix-stable, so a
    # larger pool picks the same examples as a smaller one that already had enough.
    share = min(w for w in r.task_weights.values() if w > 0) / sum(r.task_weights.values())
    pool = r.stream(int(r.heldout_per_task * max(6, 3 / share)) + 1, "heldout")
    out: list[BaseExample] = []
    for kind in TASKS:
        out += [ex for ex in pool if ex.kind == kind][:r.heldout_per_task]
    return out


# ------------------------------------------------------------------------------------------------
# The shipped base: hashes
# ------------------------------------------------------------------------------------------------

_HASHED_SUFFIXES = (".safetensors", ".json", ".jinja")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_hashes(folder: str | Path) -> dict[str, str]:
    """Write :data:`HASH_FILE` (``sha256  name`` lines) for the model files in ``folder``."""
    root = Path(folder)
    sums = {p.name: _sha256(p) for p in sorted(root.iterdir()) if p.is_file() and p.suffix in _HASHED_SUFFIXES}
    (root / HASH_FILE).write_text("".join(f"{h}  {n}\n" for n, h in sums.items()), encoding="utf-8")
    return sums


def verify_base(folder: str | Path) -> dict[str, str]:
    """Check every file listed in :data:`HASH_FILE`; raise :class:`BaseModelError` naming the first
    missing or altered one. Returns ``{name: sha256}``."""
    root = Path(folder)
    listing = root / HASH_FILE
    if not listing.is_file():
        raise BaseModelError(f"{root}: no {HASH_FILE}; not a base model folder (rebuild with `demo pretrain-base`)")
    sums: dict[str, str] = {}
    for line in listing.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        path = root / name
        if not path.is_file():
            raise BaseModelError(f"{root}: {name} is missing")
        got = _sha256(path)
        if got != digest:
            raise BaseModelError(f"{root}: {name} has sha256 {got}, expected {digest} (altered or truncated)")
        sums[name] = digest
    return sums


def shipped_base() -> Path:
    """The base model shipped with the package, after checking its hashes."""
    verify_base(SHIPPED_BASE)
    return SHIPPED_BASE
