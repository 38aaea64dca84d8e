"""The student's eyes: pretraining and conditioning of its vision tower.

A real RationalRewards student starts from a pretrained VLM (Qwen3-VL-8B-Instruct) whose vision
encoder already knows what objects, colours and letters look like; PARROT's SFT only teaches the
language model to *judge* what it sees. The demo's student has no such encoder to download, so
it gets a small stand-in for that pretraining before SFT:

* :func:`pretrain_vision` trains the tiny Qwen3-VL vision tower (patch embedding, blocks, merger
  and deepstack merger) for a few hundred steps to name what is where in images the world's
  generator draws for random requests: the object in each slot (shape, colour, size or none),
  the letters of the word and the artefacts, read out linearly from the grid of visual tokens.
  The read-out heads are thrown away afterwards. The images come from their own random stream,
  never from the training or held-out preference pairs, and no preference or critique is seen:
  the spec of a scene plays the role the captions of web images play for a real encoder.
* :func:`condition_vision` then centres and scales the tower's output on sample images, so the
  language model trained from scratch starts with visual tokens on the scale of its embeddings.

The tower is frozen during SFT (the ``freeze_vision`` default of ``parrot train``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from .generator import draw_scene
from .world import (
    ARTEFACTS,
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    render,
    sample_task,
)

#: File written next to a conditioned (and possibly pretrained) tower: its statistics.
VISION_MARKER = "demo_vision.json"

_COLORS = tuple(COLORS)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_OBJ_CLASSES = 1 + len(SHAPES) * len(_COLORS) * len(SIZES)  # "nothing here" + every object
_WORD_LEN = 3
_LETTER_CLASSES = 1 + len(_LETTERS)  # "no letter here" + A-Z

Log = Callable[[str], None]


def scene_targets(scene: Scene) -> tuple[list[int], list[int], list[float]]:
    """What the vision pretraining asks about a scene: per slot an object class (0 = empty),
    per letter position a letter class (0 = none), per artefact 1.0 if present."""
    slots = []
    for pos in POSITIONS:
        obj = scene.at(pos)
        if obj is None:
            slots.append(0)
        else:
            slots.append(1 + (SHAPES.index(obj.shape) * len(_COLORS) + _COLORS.index(obj.color)) * len(SIZES)
                         + SIZES.index(obj.size))
    word = scene.text or ""
    letters = [1 + _LETTERS.index(word[i]) if i < len(word) and word[i] in _LETTERS else 0 for i in range(_WORD_LEN)]
    return slots, letters, [float(a in scene.artefacts) for a in ARTEFACTS]


def sample_scenes(n: int, *, seed: int = 0, edit_rate: float = 0.25) -> list[Scene]:
    """``n`` scenes the world's generator draws for random requests, and the sources of edits."""
    rng = random.Random(f"demo-vision:{seed}")
    scenes: list[Scene] = []
    while len(scenes) < n:
        task = sample_task(rng, "v", edit_rate=edit_rate)
        _, scene = draw_scene(task.prompt, source=task.intent.source, seed=rng.randrange(1_000_000))
        scenes.append(scene)
        if task.intent.source is not None and len(scenes) < n:
            scenes.append(task.intent.source)
    return scenes


def sample_images(n: int, *, seed: int = 0, edit_rate: float = 0.25, image_size: int = 96) -> list[Any]:
    """``n`` images (PIL, RGB) of :func:`sample_scenes`."""
    return [render(s, image_size) for s in sample_scenes(n, seed=seed, edit_rate=edit_rate)]


def pretrain_vision(model_dir: str | Path, *, images: int = 3000, steps: int = 500, batch_size: int = 64,
                    learning_rate: float = 2e-3, seed: int = 0, edit_rate: float = 0.25, image_size: int = 96,
                    heldout: int = 300, log: Log | None = None) -> dict[str, Any]:
    """Pretrain the vision tower of the Qwen3-VL checkpoint in ``model_dir`` in place.

    Trains tower, merger and deepstack mergers, each merger output through its own linear
    read-out of the whole token grid, with cross-entropy on slots and letters and a logistic loss
    on artefacts (one-cycle schedule, clipped gradients). Returns the held-out accuracies (on
    ``heldout`` further images) per target kind, before and after, and the time taken.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if steps < 1 or images < batch_size:
        raise ValueError("pretrain_vision needs steps >= 1 and at least batch_size images")
    t0 = time.perf_counter()
    folder = Path(model_dir)
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    vis = model.model.visual
    scenes = sample_scenes(images + heldout, seed=seed, edit_rate=edit_rate)
    pv = processor.image_processor(images=[render(s, image_size) for s in scenes], return_tensors="pt")
    grid = pv["image_grid_thw"]
    if not bool((grid == grid[0]).all()):
        raise ValueError("pretrain_vision expects every image at the same size")
    patches = pv["pixel_values"].view(len(scenes), -1, pv["pixel_values"].shape[-1])
    tokens = int(grid[0].prod()) // (vis.spatial_merge_size ** 2)
    targets = [scene_targets(s) for s in scenes]
    slots = torch.tensor([t[0] for t in targets])
    letters = torch.tensor([t[1] for t in targets])
    arts = torch.tensor([t[2] for t in targets])
    width = vis.merger.linear_fc2.out_features
    n_out = len(POSITIONS) * _OBJ_CLASSES + _WORD_LEN * _LETTER_CLASSES + len(ARTEFACTS)

    gen = torch.Generator().manual_seed(seed)
    heads = torch.nn.ModuleList(torch.nn.Linear(tokens * width, n_out) for _ in range(1 + len(vis.deepstack_merger_list)))
    with torch.no_grad():
        for h in heads:
            h.weight.copy_(torch.randn(h.weight.shape, generator=gen) * h.in_features ** -0.5)
            h.bias.zero_()
    params = [*vis.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=steps, pct_start=0.05)
    nslot, nlet = len(POSITIONS) * _OBJ_CLASSES, _WORD_LEN * _LETTER_CLASSES

    def read_out(idx: Any) -> list[tuple[Any, Any, Any]]:
        """Slot, letter and artefact logits of each read-out head (merger first) for ``idx``."""
        b = len(idx)
        out = vis(patches[idx].reshape(-1, patches.shape[-1]), grid_thw=grid[idx])
        logits = []
        for head, feats in zip(heads, [out.pooler_output, *out.deepstack_features], strict=True):
            z = head(feats.reshape(b, -1))
            logits.append((z[:, :nslot].reshape(b, len(POSITIONS), _OBJ_CLASSES),
                           z[:, nslot:nslot + nlet].reshape(b, _WORD_LEN, _LETTER_CLASSES), z[:, nslot + nlet:]))
        return logits

    def loss_of(idx: Any) -> Any:
        f = torch.nn.functional
        return sum(f.cross_entropy(zs.reshape(-1, _OBJ_CLASSES), slots[idx].reshape(-1))
                   + f.cross_entropy(zl.reshape(-1, _LETTER_CLASSES), letters[idx].reshape(-1))
                   + f.binary_cross_entropy_with_logits(za, arts[idx]) for zs, zl, za in read_out(idx))

    test_idx = torch.arange(images, images + heldout)

    def measure() -> dict[str, float]:
        vis.eval()
        with torch.no_grad():
            # The merger's read-out: the features the language model gets as visual tokens.
            zs, zl, za = read_out(test_idx)[0]
        vis.train()
        return {"slots": round((zs.argmax(-1) == slots[test_idx]).float().mean().item(), 4),
                "letters": round((zl.argmax(-1) == letters[test_idx]).float().mean().item(), 4),
                "artefacts": round(((za > 0) == (arts[test_idx] > 0.5)).float().mean().item(), 4)}

    before = measure()
    order = torch.Generator().manual_seed(seed + 1)
    last = float("nan")
    for step in range(steps):
        idx = torch.randint(0, images, (batch_size,), generator=order)
        loss = loss_of(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        last = float(loss.item())
        if log and (step + 1) % max(1, steps // 5) == 0:
            log(f"demo: vision pretraining step {step + 1}/{steps}, loss {last:.3f}")
    after = measure()
    vis.eval()
    model.save_pretrained(folder)
    stats = {"images": images, "heldout_images": heldout, "steps": steps, "batch_size": batch_size,
             "learning_rate": learning_rate, "final_loss": round(last, 4), "heldout_accuracy_before": before,
             "heldout_accuracy": after, "seconds": round(time.perf_counter() - t0, 1)}
    if log:
        log(f"demo: vision pretrained in {stats['seconds']} s, held-out accuracy {after}")
    return stats


def condition_vision(model_dir: str | Path, images: list[Any], *, target_std: float = 1.0,
                     per_dim: bool = False) -> dict[str, Any]:
    """Centre and scale the output of the vision tower (merger and deepstack mergers) on sample
    images, in place, so visual tokens enter the language model at the scale of its embeddings.

    Features of different images share a large common component (cosine similarity 0.8-0.9 on
    the world's images for a random tower); a language model trained from scratch takes hundreds
    of steps to start reading the small image-specific part. Subtracting the mean feature and
    scaling to a fixed spread (a data-dependent initialisation of the mergers' last layer, like
    whitening) lets it start within a few dozen steps. Returns the statistics, also saved in
    the folder as :data:`VISION_MARKER`.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = Path(model_dir)
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    vis = model.model.visual
    batch = processor.image_processor(images=images, return_tensors="pt")
    stats: dict[str, Any] = {"images": len(images), "target_std": target_std, "per_dim": per_dim, "layers": []}
    with torch.no_grad():
        out = vis(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
        deep = list(getattr(out, "deepstack_features", None) or [])
        for name, module, feats in [("merger", vis.merger, out.pooler_output),
                                    *((f"deepstack.{i}", m, f) for i, (m, f) in enumerate(
                                        zip(vis.deepstack_merger_list, deep, strict=True)))]:
            mean = feats.mean(0)
            spread = float((feats - mean).std())
            cos = torch.nn.functional.cosine_similarity(feats, mean.expand_as(feats), dim=-1).mean().item()
            if per_dim:
                # Each output dimension to zero mean and the target spread (a diagonal whitening).
                scale = target_std / (feats - mean).std(0).clamp_min(1e-6)
                module.linear_fc2.weight.mul_(scale[:, None])
            else:
                scale = torch.full_like(mean, target_std / max(spread, 1e-8))
                module.linear_fc2.weight.mul_(scale[0])
            module.linear_fc2.bias.mul_(scale).sub_(mean * scale)
            stats["layers"].append({"name": name, "mean_norm_before": round(float(mean.norm()), 4),
                                    "spread_before": round(spread, 4), "cos_to_mean_before": round(cos, 4)})
    model.save_pretrained(folder)
    return stats


def prepare_vision(model_dir: str | Path, *, pretrain_steps: int, images: int = 3000, seed: int = 0,
                   edit_rate: float = 0.25, image_size: int = 96, log: Log | None = None) -> dict[str, Any]:
    """Pretrain (unless ``pretrain_steps`` is 0) and condition the tower in ``model_dir``; writes
    :data:`VISION_MARKER` with the statistics of both last, so its presence means "done"."""
    stats: dict[str, Any] = {"pretraining": None}
    if pretrain_steps > 0:
        stats["pretraining"] = pretrain_vision(model_dir, images=images, steps=pretrain_steps, seed=seed,
                                               edit_rate=edit_rate, image_size=image_size, log=log)
    stats["conditioning"] = condition_vision(
        model_dir, sample_images(64, seed=seed + 1, edit_rate=edit_rate, image_size=image_size))
    atomic_write_json(Path(model_dir) / VISION_MARKER, stats)
    return stats

