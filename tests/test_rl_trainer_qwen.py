"""The DiffusionNFT trainer on tiny random Qwen-Image (t2i) and Qwen-Image-Edit-Plus (one or
several sources) pipelines: it trains their LoRA, groups edits by prompt and sources, masks
failed rewards, resumes exactly and makes the reward go up."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from PIL import Image  # noqa: E402

from rationalrewards.rl.config import NFTConfig  # noqa: E402
from rationalrewards.rl.families.qwen_image import QWEN_IMAGE_LORA_TARGETS  # noqa: E402
from rationalrewards.rl.rewarding import BrightnessReward  # noqa: E402
from rationalrewards.rl.trainer import NFTTrainer  # noqa: E402


@pytest.fixture(scope="module")
def tiny_qwen() -> str:
    from rationalrewards.testing.tiny_pipelines_rl import build_tiny_qwen_image_cached

    return str(build_tiny_qwen_image_cached(os.environ.get("RATIONALREWARDS_CACHE")))


@pytest.fixture(scope="module")
def tiny_qwen_edit() -> str:
    from rationalrewards.testing.tiny_pipelines_rl import build_tiny_qwen_image_edit_cached

    return str(build_tiny_qwen_image_edit_cached(os.environ.get("RATIONALREWARDS_CACHE")))


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tiny_config(model: str, folder: Path, **changes) -> NFTConfig:
    """16x16 images (4 packed latent tokens), 2 Euler steps, rank-4 LoRA."""
    folder.mkdir(parents=True, exist_ok=True)
    base = dict(
        pretrained_model=model,
        train_data=write_jsonl(folder / "train.jsonl", [{"prompt": p} for p in ("a red cat", "a blue dog")]),
        output_dir=str(folder / "run"), resolution=16, num_inference_steps=2, sampler="euler",
        max_sequence_length=64, group_size=4, groups_per_step=2, sample_batch_size=8, train_batch_size=8,
        timesteps_per_sample=1, lora_rank=4, lora_alpha=8, learning_rate=1e-2, max_steps=2, eval_every=0,
        save_every=0, reward_kind="brightness", report_to=["jsonl"], resume="never",
    )
    base.update(changes)
    return NFTConfig(**base)


def lora(trainer: NFTTrainer, which: str = "policy") -> dict[str, torch.Tensor]:
    params = trainer.policy if which == "policy" else trainer.old
    return {k: v.detach().clone() for k, v in params.items()}


class SourceRecordingReward(BrightnessReward):
    """Brightness, recording each call's sources; the first image of every group fails."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    async def score(self, images, prompts, sources=None, group_ids=None):
        self.calls.append({"sources": [[s.size for s in (x if isinstance(x, list) else [x])] for x in sources],
                           "groups": list(group_ids)})
        out = await super().score(images, prompts)
        first = {g: i for i, g in reversed(list(enumerate(group_ids)))}
        bad = set(first.values())
        out["rewards"] = [math.nan if i in bad else r for i, r in enumerate(out["rewards"])]
        out["valid"] = [i not in bad for i in range(len(images))]
        return out


def test_qwen_image_trains_its_lora_with_the_family_targets_and_evaluates(tiny_qwen, tmp_path):
    cfg = tiny_config(tiny_qwen, tmp_path, eval_every=2,
                      eval_data=write_jsonl(tmp_path / "eval.jsonl", [{"prompt": "a white house"}]))
    with NFTTrainer(cfg, reward=BrightnessReward(), verbose=False) as trainer:
        initial = lora(trainer)
        summary = trainer.train()
    assert summary["pipeline_family"] == "qwen-image" and summary["task"] == "t2i"
    assert trainer.lora_targets() == list(QWEN_IMAGE_LORA_TARGETS)
    assert any("add_q_proj" in k for k in initial)  # the text stream is adapted too
    rows = read_jsonl(Path(cfg.output_dir) / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    assert any(not torch.equal(v, initial[k]) for k, v in lora(trainer).items())
    assert [e["step"] for e in read_jsonl(Path(cfg.output_dir) / "eval.jsonl")] == [0, 2]
    assert (Path(cfg.output_dir) / "final" / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_qwen_image_resumes_bit_identically(tiny_qwen, tmp_path):
    cfg = tiny_config(tiny_qwen, tmp_path, max_steps=2, save_every=1)
    with NFTTrainer(cfg, reward=BrightnessReward(), verbose=False) as full:
        full.train()
    run = Path(cfg.output_dir)
    shutil.rmtree(run / "checkpoints" / "step-000002")
    (run / "checkpoints" / "latest").write_text("step-000001\n")
    original = read_jsonl(run / "metrics.jsonl")
    with NFTTrainer(cfg.replace(resume="auto"), reward=BrightnessReward(), verbose=False) as resumed:
        resumed.train()
    again = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in again] == [1, 2] and again[1]["loss"] == original[1]["loss"]
    for which in ("policy", "old"):
        a, b = lora(full, which), lora(resumed, which)
        assert all(torch.equal(a[k], b[k]) for k in a), which


def test_qwen_image_edit_takes_one_or_several_sources_groups_by_them_and_masks_failures(tiny_qwen_edit, tmp_path):
    Image.new("RGB", (20, 20), (200, 30, 30)).save(tmp_path / "red.png")
    Image.new("RGB", (24, 16), (30, 30, 200)).save(tmp_path / "blue.png")
    data = write_jsonl(tmp_path / "edit.jsonl", [
        {"prompt": "make it green", "source": "red.png"},
        {"prompt": "make it green", "source": ["red.png", "blue.png"]},
        {"prompt": "add a hat", "source": ["red.png", "blue.png", "red.png", "blue.png"]},  # more than 3
    ])
    reward = SourceRecordingReward()
    cfg = tiny_config(tiny_qwen_edit, tmp_path, train_data=data, sample_batch_size=4, train_batch_size=8,
                      max_steps=1, log_samples=True)
    with NFTTrainer(cfg, reward=reward, verbose=False) as trainer:
        initial = lora(trainer)
        summary = trainer.train()
    assert summary["pipeline_family"] == "qwen-image-edit" and summary["task"] == "edit"
    skipped = (Path(cfg.output_dir) / "skipped_rows.jsonl").read_text()
    assert summary["skipped_rows"] == 1 and "at most 3" in skipped
    # One call per group, each with that group's own sources (one, or two in order).
    assert sorted(c["sources"][0] for c in reward.calls) == [[(20, 20)], [(20, 20), (24, 16)]]
    samples = read_jsonl(Path(cfg.output_dir) / "samples.jsonl")
    assert len({s["group"] for s in samples}) == 2
    (row,) = read_jsonl(Path(cfg.output_dir) / "metrics.jsonl")
    assert row["groups"] == 2 and row["n_masked"] == 2 and row["n_valid"] == 6 and math.isfinite(row["loss"])
    assert any(not torch.equal(v, initial[k]) for k, v in lora(trainer).items())


def test_a_short_qwen_image_run_makes_the_reward_go_up(tiny_qwen, tmp_path):
    cfg = tiny_config(tiny_qwen, tmp_path, group_size=8, sample_batch_size=16, train_batch_size=16,
                      learning_rate=0.1, max_grad_norm=None, max_steps=10)
    with NFTTrainer(cfg, reward=BrightnessReward(), verbose=False) as trainer:
        trainer.train()
    rewards = [r["reward_mean"] for r in read_jsonl(Path(cfg.output_dir) / "metrics.jsonl")]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    # This tiny VAE spreads brightness by ~0.005 within a step; the trained policy gains ~3x that.
    assert last > first + 0.008, rewards
