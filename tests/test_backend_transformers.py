"""The in-process transformers backend, end to end on a tiny random Qwen3-VL.

The tiny model writes noise, so every critique must come back as an honest parse failure that
keeps the raw text — never as a score.
"""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from rationalrewards import RewardModel
from rationalrewards.backends import SamplingParams
from rationalrewards.backends.base import BackendError
from rationalrewards.backends.transformers_local import TransformersBackend
from rationalrewards.critique.prompts import build_messages
from rationalrewards.images import load_image

GREEDY = SamplingParams(temperature=0.0, max_tokens=16)


@pytest.fixture(scope="module")
def backend(tiny_qwen3vl):
    return TransformersBackend(tiny_qwen3vl, device="cpu", dtype="float32", batch_size=4, batch_wait_ms=50)


def test_noise_from_the_model_is_a_parse_failure_with_raw_text(tiny_qwen3vl, examples_dir):
    rm = RewardModel.from_pretrained(tiny_qwen3vl, device="cpu", sampling=SamplingParams(max_tokens=24, seed=0))
    res = rm.critique("a red ball on a lawn", examples_dir / "red_ball.png")
    rm.close()
    assert not res.ok
    assert res.error_kind == "parse"
    assert res.reward is None
    assert "missing dimension" in res.error
    assert res.raw  # the model's text is kept for inspection
    assert res.usage.completion_tokens > 0 and res.usage.prompt_tokens > 0


def test_edit_and_pairwise_prompts_run_through_the_processor(tiny_qwen3vl, examples_dir):
    rm = RewardModel.from_pretrained(tiny_qwen3vl, device="cpu", sampling=SamplingParams(max_tokens=8))
    edit = rm.critique("make the ball blue", examples_dir / "red_ball.png", source=examples_dir / "blue_ball_source.png")
    pair = rm.compare("a red ball", examples_dir / "red_ball.png", examples_dir / "blue_ball_source.png")
    rm.close()
    assert edit.task == "edit" and edit.error_kind == "parse"
    assert pair.error_kind == "parse" and pair.winner is None
    assert pair.usage.prompt_tokens > 0 and edit.usage.prompt_tokens > 0


def test_concurrent_calls_are_batched_with_left_padding(backend):
    imgs = [load_image(Image.new("RGB", (32 + 16 * i, 32), (40 * i, 100, 200))) for i in range(4)]
    prompts = ["a ball", "a much longer request about a small blue ball on a green lawn", "x", "two red cubes"]
    convs = [build_messages("t2i", "pointwise", p, [img]) for p, img in zip(prompts, imgs, strict=True)]

    async def run():
        return await asyncio.gather(*(backend.agenerate(c, GREEDY) for c in convs))

    before = len(backend.batch_sizes)
    batched = asyncio.run(run())
    assert backend.batch_sizes[before:] == [4]
    # Greedy decoding: each conversation generates the same text alone as in the padded batch.
    alone = [backend.generate_batch([c], GREEDY)[0] for c in convs]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert all(g.ok and g.completion_tokens <= 16 for g in batched)


def test_stop_strings_and_seed_are_honoured(backend):
    conv = build_messages("t2i", "pointwise", "a ball", [load_image(Image.new("RGB", (32, 32)))])
    sampled = SamplingParams(temperature=1.0, max_tokens=12, seed=123)
    a = backend.generate_batch([conv], sampled)[0]
    b = backend.generate_batch([conv], sampled)[0]
    assert a.text == b.text
    full = backend.generate_batch([conv], GREEDY)[0].text
    assert len(full) > 3
    stop = full[2:5]
    cut = backend.generate_batch([conv], GREEDY.replace(stop=[stop]))[0].text
    assert stop not in cut and full.startswith(cut)


def test_a_missing_checkpoint_is_a_clear_backend_error(tmp_path):
    backend = TransformersBackend(tmp_path / "nothing-here", device="cpu")
    with pytest.raises(BackendError, match="nothing-here"):
        backend.load()


def test_a_failed_generation_fails_its_items_not_the_process(backend):
    # A conversation with an image part the processor cannot use.
    bad = [{"role": "user", "content": [{"type": "image", "image": object()}, {"type": "text", "text": "x"}]}]

    async def run():
        return await backend.agenerate(bad, GREEDY)

    gen = asyncio.run(run())
    assert not gen.ok and "local generation failed" in gen.error
