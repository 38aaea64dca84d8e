"""The demo's lean SFT loop: ``parrot train``'s recipe without the work its result does not need.

``parrot train`` (TRL's ``SFTTrainer``) is the general path: any model, LoRA, DeepSpeed, any
dataset size. On the demo's tiny student on two CPU cores a profile of one step showed most of
the time outside the language model's forward and backward pass (see ``docs/demo.md``): every
step decodes the PNGs, runs the processor and runs the *frozen* vision tower again for every
image, and the trainer's bookkeeping adds more. This loop trains the same thing the same way
(full fine-tune of the language model, vision tower frozen, loss on the assistant's tokens only,
AdamW, warmup then cosine decay, the chat template's layout) and removes that work:

* every example is tokenised once, before training;
* the frozen tower's output (visual tokens and deepstack features) is computed once per distinct
  image and fed to the model in place of the tower (``get_image_features``);
* no per-step logging or evaluation; a checkpoint (weights, and the optimiser for resuming) only
  every ``save_steps`` steps, which are also the learning curve's points.

It reads the TRL export PARROT writes (``DIR/sft/trl/train.jsonl``) and writes a folder that
``RewardModel.from_pretrained`` loads, like ``parrot train``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Log = Callable[[str], None]
_STATE = "training_state.pt"


def shuffled_batches(n: int, batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless batches of indices into ``n`` examples: each epoch a fresh shuffle by ``rng``, a
    tail shorter than ``batch_size`` skipped. A pure function of the seed, so a resumed run
    replays it up to its step (the base pretraining and the lean SFT both train this way)."""
    order: list[int] = []
    pos = 0
    while True:
        if pos + batch_size > len(order):
            order = list(range(n))
            rng.shuffle(order)
            pos = 0
        yield order[pos:pos + batch_size]
        pos += batch_size


@dataclass
class LeanSFTConfig:
    """Settings of :func:`lean_sft` (the same meaning as ``parrot train``'s)."""

    model: str
    data: str
    out: str
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.03
    max_steps: int = 1000
    batch_size: int = 8
    save_steps: int = 250
    keep_checkpoints: bool = True
    seed: int = 0
    max_pixels: int = 96 * 96


def _load_rows(data: str | Path) -> list[dict[str, Any]]:
    sft = Path(data)
    path = sft / "trl" / "train.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no training split at {path}; run PARROT's build-sft first")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                row["images"] = [str((path.parent / p).resolve()) for p in row["images"]]
                rows.append(row)
    if not rows:
        raise ValueError(f"{path}: the train split is empty (did the filter keep anything?)")
    return rows


class _Cache:
    """Frozen vision features per distinct image path, and the model hook that serves them."""

    def __init__(self, model: Any, processor: Any, paths: list[str], batch: int = 64):
        import torch
        from PIL import Image

        self.index = {p: i for i, p in enumerate(dict.fromkeys(paths))}
        vis = model.model.visual
        pooled, deep = [], []
        ordered = list(self.index)
        with torch.no_grad():
            for start in range(0, len(ordered), batch):
                imgs = []
                for p in ordered[start:start + batch]:
                    with Image.open(p) as im:
                        imgs.append(im.convert("RGB"))
                pv = processor.image_processor(images=imgs, return_tensors="pt")
                out = vis(pv["pixel_values"], grid_thw=pv["image_grid_thw"], return_dict=True)
                n = len(imgs)
                pooled.append(out.pooler_output.view(n, -1, out.pooler_output.shape[-1]))
                deep.append(torch.stack([f.view(n, -1, f.shape[-1]) for f in out.deepstack_features]))
                self.grid = pv["image_grid_thw"][0]
        self.pooled = torch.cat(pooled)  # images x tokens x hidden
        self.deep = torch.cat(deep, dim=1)  # layers x images x tokens x hidden
        self.current: list[int] = []

    def hook(self, pixel_values: Any, image_grid_thw: Any = None, **_: Any) -> Any:
        """Stands in for ``model.model.get_image_features``: the cached features of the batch's images."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        idx = self.current
        out = BaseModelOutputWithPooling(pooler_output=tuple(self.pooled[i] for i in idx))
        out.deepstack_features = [tuple(layer[i] for i in idx) for layer in self.deep]
        return out


def lean_sft(cfg: LeanSFTConfig, *, log: Log | None = None) -> dict[str, Any]:
    """Train the student; returns a summary (also ``OUT/parrot_train.json``) with examples/s."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..parrot.train import cap_image_pixels, freeze_vision

    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    out = Path(cfg.out)
    ckpt_root = out / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    processor = AutoProcessor.from_pretrained(cfg.model)
    cap_image_pixels(processor, cfg.max_pixels)
    model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=torch.float32)
    frozen = freeze_vision(model)
    rows = _load_rows(cfg.data)
    tok = processor.tokenizer
    image_pad = "<|image_pad|>"
    image_pad_id = tok.convert_tokens_to_ids(image_pad)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

    t_prep = time.perf_counter()
    cache = _Cache(model, processor, [p for r in rows for p in r["images"]])
    per_image = int(cache.pooled.shape[1])
    encoded = []
    for r in rows:
        msgs = r["messages"]
        prompt = processor.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        full = processor.apply_chat_template(msgs, tokenize=False)
        if not full.startswith(prompt):
            raise ValueError(f"{r.get('id')}: the chat template does not extend the prompt with the answer")
        prompt, full = (t.replace(image_pad, image_pad * per_image) for t in (prompt, full))
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"]
        encoded.append((torch.tensor(ids), len(p_ids), [cache.index[p] for p in r["images"]]))
    prep_seconds = time.perf_counter() - t_prep
    model.model.get_image_features = cache.hook  # the frozen tower, computed once

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    warmup = max(1, round(cfg.warmup_ratio * cfg.max_steps))

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.learning_rate * (step + 1) / warmup
        progress = (step - warmup) / max(1, cfg.max_steps - warmup)
        return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    start = 0
    resumed = None
    last = _last_checkpoint(ckpt_root)
    if last is not None:
        state = torch.load(last / _STATE, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(last.name.rsplit("-", 1)[1])
        resumed = str(last)
        say(f"resuming from {last}")
    batches = shuffled_batches(len(encoded), cfg.batch_size, random.Random(f"demo-sft:{cfg.seed}"))
    for _ in range(start):  # the data order is a function of the seed: replay it on resume
        next(batches)
    torch.manual_seed(cfg.seed + start)
    model.train()
    say(f"training on {len(encoded)} examples (lean loop, full fine-tune, vision frozen and cached)")
    t_train = time.perf_counter()
    losses: list[float] = []
    for step in range(start, cfg.max_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch = [encoded[i] for i in next(batches)]
        n = max(len(ids) for ids, _, _ in batch)
        input_ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), n), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, (ids, plen, _) in enumerate(batch):
            input_ids[i, :len(ids)] = ids
            labels[i, plen:len(ids)] = ids[plen:]
            mask[i, :len(ids)] = 1
        cache.current = [j for _, _, imgs in batch for j in imgs]
        grid = cache.grid.unsqueeze(0).repeat(len(cache.current), 1)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels,
                     mm_token_type_ids=(input_ids == image_pad_id).long(),
                     pixel_values=torch.zeros(1, 1), image_grid_thw=grid).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % cfg.save_steps == 0 and step + 1 < cfg.max_steps:
            _save_checkpoint(model, opt, processor, ckpt_root / f"checkpoint-{step + 1}", cfg.keep_checkpoints)
            say(f"step {step + 1}/{cfg.max_steps}, loss {sum(losses[-cfg.save_steps:]) / cfg.save_steps:.4f}")
    train_seconds = time.perf_counter() - t_train
    del model.model.get_image_features  # back to the real tower for saving and inference
    model.save_pretrained(out)
    processor.save_pretrained(out)
    steps_run = cfg.max_steps - start
    summary = {"out": str(out), "base_model": cfg.model, "data": cfg.data, "trainer": "lean",
               "train_examples": len(encoded), "frozen_vision_params": frozen,
               "trainable_params": sum(p.numel() for p in params), "device": "cpu",
               "train_loss": round(sum(losses) / len(losses), 4) if losses else None,
               "global_step": cfg.max_steps, "resumed_from": resumed,
               "distinct_images": len(cache.index), "prep_seconds": round(prep_seconds, 2),
               "train_seconds": round(train_seconds, 2),
               "examples_per_second": round(steps_run * cfg.batch_size / train_seconds, 2) if steps_run else None,
               "seconds": round(time.perf_counter() - t0, 2), "config": asdict(cfg)}
    (out / "parrot_train.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _last_checkpoint(root: Path) -> Path | None:
    ckpts = [p for p in root.glob("checkpoint-*") if p.is_dir() and (p / _STATE).is_file()]
    return max(ckpts, key=lambda p: int(p.name.rsplit("-", 1)[1])) if ckpts else None


def _save_checkpoint(model: Any, opt: Any, processor: Any, folder: Path, keep_all: bool) -> None:
    """Weights and processor (loadable as a model), plus the optimiser state for resuming."""
    import torch

    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    get = model.model.__dict__.pop("get_image_features", None)  # save the real model, not the hook
    try:
        model.save_pretrained(tmp)
    finally:
        if get is not None:
            model.model.get_image_features = get
    processor.save_pretrained(tmp)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp / _STATE)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    if not keep_all:
        for old in folder.parent.glob("checkpoint-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
