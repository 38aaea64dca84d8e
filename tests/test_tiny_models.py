"""Tests for the tiny offline Qwen3-VL checkpoint builder."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")  # Qwen3VLProcessor's image/video processors need it
pytest.importorskip("transformers")

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from rationalrewards.testing.tiny_models import (
    BUILD_MARKER,
    build_tiny_qwen3vl,
    build_tiny_qwen3vl_cached,
    main,
)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny") / "qwen3vl")


@pytest.fixture(scope="module")
def processor(tiny_path: pathlib.Path):
    return AutoProcessor.from_pretrained(tiny_path)


@pytest.fixture(scope="module")
def model(tiny_path: pathlib.Path):
    return AutoModelForImageTextToText.from_pretrained(tiny_path).eval()


def _image_message(text: str, size: tuple[int, int] = (200, 150), color=(200, 30, 30)) -> list[dict]:
    return [
        {"role": "system", "content": "You are an expert image evaluator."},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": Image.new("RGB", size, color)},
                {"type": "text", "text": text},
            ],
        },
    ]


def test_reload_gives_full_qwen3vl_stack(tiny_path: pathlib.Path, processor, model) -> None:
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert type(processor.tokenizer).__name__ == "Qwen2Tokenizer"
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    assert type(processor.video_processor).__name__ == "Qwen3VLVideoProcessor"
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"

    tok = processor.tokenizer
    assert len(tok) == 512 == model.config.text_config.vocab_size
    assert tok.eos_token == "<|im_end|>"
    assert tok.pad_token == "<|endoftext|>"
    assert tok.bos_token is None
    cfg = model.config
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert set(model.generation_config.eos_token_id) == {tok.eos_token_id, tok.pad_token_id}
    assert model.generation_config.pad_token_id == tok.pad_token_id

    marker = json.loads((tiny_path / BUILD_MARKER).read_text())
    assert marker["params"]["seed"] == 0


def test_tokenizer_round_trips_and_keeps_think_tags(processor) -> None:
    tok = processor.tokenizer
    text = "## Text Faithfulness\nJustification: the image shows a cat.\nScore: 4 héllo 日本 ✓"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    # Each added token is a single id, never split by BPE.
    for special in ("<|im_start|>", "<|im_end|>", "<|image_pad|>", "<think>", "</think>"):
        assert len(tok(special)["input_ids"]) == 1
    # As in Qwen3, <think> is an added but not special token: skip_special_tokens keeps it.
    ids = tok("<|im_start|>a<think>b</think><|im_end|>")["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "a<think>b</think>"


def test_chat_template_matches_qwen_layout(processor) -> None:
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "again"},
    ]
    rendered = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nsys<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n"
        "<|im_start|>assistant\nok<|im_end|>\n"
        "<|im_start|>user\nagain<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # The tokenizer carries the same template, for text-only callers.
    assert (
        processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        == rendered
    )


def test_generation_markers_mask_assistant_turn(processor) -> None:
    tok = processor.tokenizer
    messages = [
        {"role": "user", "content": "Rate it."},
        {"role": "assistant", "content": "Score: 4"},
    ]
    out = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    masked = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    # The end-of-turn token is inside the mask so that SFT teaches the model to stop.
    assert masked == "Score: 4<|im_end|>\n"


def test_generate_with_image(processor, model) -> None:
    inputs = processor.apply_chat_template(
        _image_message("Score the text faithfulness of this image."),
        tokenize=True,
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    assert {"input_ids", "attention_mask", "pixel_values", "image_grid_thw"} <= set(inputs)
    # 200x150 is resized under the 128*128 cap to a 6x8 patch grid, i.e. 12 merged visual tokens.
    grid = inputs["image_grid_thw"]
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == int(grid.prod()) // 4 <= 16

    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=64, min_new_tokens=64)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 64)
    # Tiny by construction (about 1 MB); catches an accidentally huge model without timing it.
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_batched_left_padded_generate_matches_unbatched(processor, model) -> None:
    conversations = [
        _image_message("Score the physical quality and the text faithfulness of this picture, please."),
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": Image.new("RGB", (64, 64), (0, 0, 255))},
                    {"type": "text", "text": "Hi"},
                ],
            }
        ],
    ]
    tok = processor.tokenizer
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        batch = processor.apply_chat_template(
            conversations,
            tokenize=True,
            add_generation_prompt=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )
    finally:
        tok.padding_side = old_side
    mask = batch["attention_mask"]
    assert mask.shape[0] == 2
    assert mask[1, 0] == 0 and mask[:, -1].all(), "expected left padding on the shorter prompt"

    with torch.inference_mode():
        batched = model.generate(**batch, max_new_tokens=16)
    prompt_len = batch["input_ids"].shape[1]
    for row, conversation in enumerate(conversations):
        single = processor.apply_chat_template(
            conversation, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        with torch.inference_mode():
            alone = model.generate(**single, max_new_tokens=16)
        # Greedy decoding with correct left-padding handling (attention mask + M-RoPE positions)
        # must not depend on what else is in the batch.
        alone_new = alone[0, single["input_ids"].shape[1] :].tolist()
        assert batched[row, prompt_len : prompt_len + len(alone_new)].tolist() == alone_new


def test_stop_strings(processor, model) -> None:
    tok = processor.tokenizer
    inputs = processor.apply_chat_template(
        _image_message("Justify the score."),
        tokenize=True,
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    prompt_len = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        free = model.generate(**inputs, max_new_tokens=32, min_new_tokens=32)
    free_ids = free[0, prompt_len:].tolist()
    # The random model's output is unpredictable, so take the stop string from its own greedy
    # output: the text of a token somewhere in the middle, which must then end generation early.
    cut = next(
        i
        for i in range(4, len(free_ids))
        if (piece := tok.decode([free_ids[i]])).strip()
        and "\ufffd" not in piece
        and piece not in tok.decode(free_ids[:i])
    )
    stop = tok.decode([free_ids[cut]])
    with torch.inference_mode():
        stopped = model.generate(**inputs, max_new_tokens=32, stop_strings=[stop], tokenizer=tok)
    stopped_ids = stopped[0, prompt_len:].tolist()
    assert stopped_ids == free_ids[: cut + 1]
    assert tok.decode(stopped_ids).endswith(stop)


def test_build_is_deterministic_and_seeded(tmp_path: pathlib.Path) -> None:
    a = build_tiny_qwen3vl(tmp_path / "a", seed=1)
    b = build_tiny_qwen3vl(tmp_path / "b", seed=1)
    c = build_tiny_qwen3vl(tmp_path / "c", seed=2)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_build_does_not_touch_global_rng(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_qwen3vl(tmp_path / "m", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_build_is_idempotent(tmp_path: pathlib.Path) -> None:
    path = build_tiny_qwen3vl(tmp_path / "m")
    weights = path / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    (path / "sentinel").write_text("an identical build is reused, not rebuilt")
    assert build_tiny_qwen3vl(path) == path
    assert (path / "sentinel").exists()
    assert weights.stat().st_mtime_ns == mtime

    # Other parameters: the folder is ours (marker present), so it is rebuilt in place.
    build_tiny_qwen3vl(path, num_layers=1)
    assert json.loads((path / "config.json").read_text())["text_config"]["num_hidden_layers"] == 1

    # An incomplete build (weights deleted) is rebuilt too.
    (path / "model.safetensors").unlink()
    build_tiny_qwen3vl(path, num_layers=1)
    assert (path / "model.safetensors").is_file()

    (path / "sentinel").write_text("overwrite=True replaces the whole folder")
    build_tiny_qwen3vl(path, num_layers=1, overwrite=True)
    assert not (path / "sentinel").exists()
    assert (path / "model.safetensors").is_file()
    # No temporary folders left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_refuses_to_replace_foreign_folder(tmp_path: pathlib.Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_tiny_qwen3vl(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_custom_corpus_and_sizes(tmp_path: pathlib.Path) -> None:
    corpus = ["score justification " * 20, "image text faithfulness physical quality\n"] * 10
    path = build_tiny_qwen3vl(tmp_path / "m", corpus=corpus, vocab_size=300, hidden_size=32, num_layers=1)
    proc = AutoProcessor.from_pretrained(path)
    mdl = AutoModelForImageTextToText.from_pretrained(path)
    assert len(proc.tokenizer) == 300 == mdl.config.text_config.vocab_size
    assert mdl.config.text_config.hidden_size == 32
    inputs = proc.apply_chat_template(
        _image_message("score"),
        tokenize=True,
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.inference_mode():
        mdl.generate(**inputs, max_new_tokens=4)


def test_cached_build(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATIONALREWARDS_CACHE", str(tmp_path / "env-root"))
    from_env = build_tiny_qwen3vl_cached()
    assert from_env == tmp_path / "env-root" / "tiny-qwen3vl"
    assert build_tiny_qwen3vl_cached() == from_env
    explicit = build_tiny_qwen3vl_cached(tmp_path / "explicit")
    assert explicit == tmp_path / "explicit" / "tiny-qwen3vl"
    assert (explicit / BUILD_MARKER).is_file()


def test_cli_main(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "cli").resolve())
    assert (tmp_path / "cli" / BUILD_MARKER).is_file()


def test_testing_package_import_is_light() -> None:
    code = (
        "import sys, rationalrewards.testing as t\n"
        "assert callable(t.build_tiny_qwen3vl) and callable(t.transformers_serve)\n"
        "heavy = [m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    # Attribute access triggers the lazy import of tiny_models only, which imports nothing heavy.
    subprocess.run([sys.executable, "-c", code], check=True)
