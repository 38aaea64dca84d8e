"""``parrot train`` on the tiny Qwen3-VL: assistant-only labels, frozen vision, full and LoRA
fine-tunes that load back into RewardModel and generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("trl")
pytest.importorskip("peft")

from rationalrewards.backends import SamplingParams
from rationalrewards.parrot.config import TrainConfig, resolve_config
from rationalrewards.parrot.pipeline import Parrot
from rationalrewards.testing.judges import scripted_teacher
from rationalrewards.testing.scripted_server import ScriptedServer


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model gains nothing from threads; on a busy CI box they only fight each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory) -> Path:
    """A small SFT set (t2i + edit, pairwise + pointwise) made by the pipeline."""
    root = tmp_path_factory.mktemp("parrot")
    for c in ("red", "blue", "green"):
        Image.new("RGB", (48, 48), c).save(root / f"{c}.png")
    rows = [
        {"id": "a", "prompt": "a red kite", "image_a": "red.png", "image_b": "blue.png", "label": "A"},
        {"id": "b", "prompt": "a blue kite", "image_a": "red.png", "image_b": "blue.png", "label": "B"},
        {"id": "c", "prompt": "make it green", "source": "red.png", "image_a": "green.png", "image_b": "blue.png",
         "label": "A"},
    ]
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ScriptedServer(scripted_teacher()) as server:
        cfg = resolve_config(overrides={
            "pairs": str(root / "pairs.jsonl"), "out": str(root / "run"),
            "teacher": {"base_url": [server.base_url], "model": "teacher", "max_retries": 0},
            "anchor": {"samples": 1}, "sft": {"val_fraction": 0.0},
        })
        Parrot(cfg).run()
    return root / "run" / "sft"


def tiny_cfg(model: Path, data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model=str(model), data=str(data), out=str(out), max_steps=2, per_device_batch_size=2, grad_accum=1,
                logging_steps=1, eval=False)
    base.update(kw)
    return TrainConfig(**base)


def test_labels_supervise_the_assistant_turn_only(tiny_qwen3vl, sft_dir, tmp_path):
    from rationalrewards.parrot.sft import load_sft_dataset
    from rationalrewards.parrot.train import build_trainer

    trainer, processor, info = build_trainer(tiny_cfg(tiny_qwen3vl, sft_dir, tmp_path / "o"))
    ds = load_sft_dataset(sft_dir, "train")
    assert info["train_examples"] == len(ds) == 3 + 6
    kinds = {row["kind"] for row in ds}
    assert kinds == {"pairwise", "pointwise"}
    examples = [ds[i] for i in range(len(ds))]
    batch = trainer.data_collator([dict(e) for e in examples[:4]])
    tok = processor.tokenizer
    for i, ex in enumerate(examples[:4]):
        labels, ids = batch["labels"][i], batch["input_ids"][i]
        kept = labels != -100
        target = ex["messages"][-1]["content"][0]["text"]
        assert tok.decode(labels[kept]) == target + "<|im_end|>\n"
        assert (labels[kept] == ids[kept]).all()
        # Everything before the answer (system, user text, image tokens) is masked.
        first = int(kept.nonzero()[0])
        assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n")
        assert "<|image_pad|>" in tok.decode(ids[:first])


def test_vision_tower_and_projector_are_frozen_by_default(tiny_qwen3vl, sft_dir, tmp_path):
    from rationalrewards.parrot.train import build_trainer

    trainer, _, info = build_trainer(tiny_cfg(tiny_qwen3vl, sft_dir, tmp_path / "o"))
    params = dict(trainer.model.named_parameters())
    visual = {n: p for n, p in params.items() if ".visual." in f".{n}"}
    assert visual and not any(p.requires_grad for p in visual.values())
    assert any("merger" in n for n in visual)  # the projector is part of the frozen set
    assert all(p.requires_grad for n, p in params.items() if "language_model" in n)
    assert info["frozen_vision_params"] == sum(p.numel() for p in visual.values())
    unfrozen, _, _ = build_trainer(tiny_cfg(tiny_qwen3vl, sft_dir, tmp_path / "o2", freeze_vision=False))
    assert all(p.requires_grad for n, p in unfrozen.model.named_parameters() if ".visual." in f".{n}")


def _generates(path: Path, image: Path, **kw) -> None:
    from rationalrewards import RewardModel

    rm = RewardModel.from_pretrained(str(path), device="cpu", **kw)
    try:
        res = rm.critique("a red kite", str(image), sampling=SamplingParams(max_tokens=12, temperature=0.0))
    finally:
        rm.close()
    # A tiny random model writes noise: a parse failure with raw text is the expected outcome.
    assert res.error_kind == "parse" and res.raw


def test_full_fine_tune_saves_a_folder_reward_model_loads(tiny_qwen3vl, sft_dir, tmp_path):
    from rationalrewards.parrot.train import train_student

    out = tmp_path / "full"
    summary = train_student(tiny_cfg(tiny_qwen3vl, sft_dir, out, save_steps=1, save_total_limit=1))
    assert summary["global_step"] == 2 and summary["train_loss"] > 0 and summary["merged"] is None
    assert json.loads((out / "parrot_train.json").read_text())["base_model"] == str(tiny_qwen3vl)
    assert (out / "model.safetensors").is_file() and (out / "processor_config.json").is_file()
    _generates(out, sft_dir.parent.parent / "red.png")
    # A later call with more steps resumes from the last checkpoint.
    again = train_student(tiny_cfg(tiny_qwen3vl, sft_dir, out, max_steps=3, save_steps=1, save_total_limit=1))
    assert again["resumed_from"] and again["resumed_from"].endswith("checkpoint-2")
    assert again["global_step"] == 3


def test_lora_through_the_cli_saves_merged_weights_and_the_adapter(tiny_qwen3vl, sft_dir, tmp_path):
    from typer.testing import CliRunner

    from rationalrewards.cli.main import app

    runner = CliRunner()
    merged = tmp_path / "lora"
    res = runner.invoke(app, ["parrot", "train", "--data", str(sft_dir), "--model", str(tiny_qwen3vl), "--out",
                              str(merged), "--lora", "--max-steps", "2", "--batch-size", "2", "--grad-accum", "1",
                              "--no-eval", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["merged"] is True and summary["lora"] is True
    assert summary["trainable_params"] < 100_000  # adapters only
    assert (merged / "adapter" / "adapter_config.json").is_file()
    _generates(merged, sft_dir.parent.parent / "blue.png")
    # The adapter also loads on top of the base, without merging.
    _generates(tiny_qwen3vl, sft_dir.parent.parent / "blue.png", adapter=str(merged / "adapter"))


def test_train_refuses_missing_data_with_a_clear_message(tiny_qwen3vl, tmp_path):
    from typer.testing import CliRunner

    from rationalrewards.cli.main import app

    res = CliRunner().invoke(app, ["parrot", "train", "--data", str(tmp_path / "none"), "--model", str(tiny_qwen3vl),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "build-sft" in res.output
