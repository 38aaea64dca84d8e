"""Decode tokens saved by ``scores_only`` (stop before ``# User Request Refinement``).

RL needs only the scores, so ``RationalReward(scores_only=True)`` asks the judge to stop at the
refinement tail. This script scores the same batch twice through the real client stack
(RationalReward -> RewardModel -> OpenAI-compatible HTTP) against a scripted judge that honours
stop strings the way vLLM / SGLang do, and prints the completion tokens the judge reported
(~4 characters per token) for each setting.

The saving depends on how long the judge's refinement tail is relative to its scores, which is a
property of the checkpoint, not of this code. Two scenarios are printed:

* ``scripted``: the scripted judge's default critique (short tail);
* ``long tail``: the same critique with a ~60-word refinement comment and a ~90-word refined
  request (an assumption standing in for a detailed prompt rewrite; measure your checkpoint with
  ``rationalrewards critique --json`` and compare ``usage.completion_tokens``).

It also counts tokens before/after the marker with the tiny in-process test model's tokenizer
(a byte-level BPE like Qwen's) as a tokenizer-level cross-check. The tiny model's own generations
are random, never contain the marker, and so cannot show a saving: that is reported, not hidden.

    .venv/bin/python bench/bench_rl_stop_tokens.py [--n 64]
"""

from __future__ import annotations

import argparse
import time

from PIL import Image

from rationalrewards import RewardModel
from rationalrewards.critique.model import REFINEMENT_MARKER
from rationalrewards.rl import RationalReward
from rationalrewards.testing.scripted_server import ScriptedServer, critique_text, detect_task

SCORES = {"text_faithfulness": 3.4, "image_faithfulness": 3.0, "physical_quality": 2.7, "text_rendering": None}
LONG_COMMENTS = (
    "The request leaves the lighting, the camera distance and the background unstated, so the generator "
    "guessed them and the result drifted from what the user most likely wanted. Name the time of day and the "
    "light direction, fix the framing in words, and describe the wall and the street so that the bicycle stays "
    "the subject and nothing else competes with it for attention."
)
LONG_REQUEST = (
    "A weathered red bicycle with a wicker basket leaning against a whitewashed stone wall in a quiet Greek "
    "village at golden hour, long soft shadows falling to the left, a terracotta pot of pink geraniums beside "
    "the front wheel, blue wooden shutters half open above it, cobblestones worn smooth in the foreground, no "
    "people and no text anywhere in the frame, shot at eye level with a 35mm lens from three metres away, "
    "shallow depth of field with the background gently blurred, warm natural colours, fine film grain, calm "
    "and nostalgic mood."
)


def responder(long_tail: bool):
    def respond(req):
        task = detect_task(req)
        if long_tail:
            return critique_text(task, SCORES, refinement_comments=LONG_COMMENTS, refined_request=LONG_REQUEST)
        return critique_text(task, SCORES)

    return respond


def run(long_tail: bool, n: int) -> tuple[float, float, float]:
    images = [Image.new("RGB", (64, 64), (i * 3 % 256, 80, 160)) for i in range(n)]
    prompts = [f"prompt {i}" for i in range(n)]
    out = []
    with ScriptedServer(responder(long_tail), record=False) as server:
        rm = RewardModel.from_openai(server.base_url, model="scripted-judge")
        for scores_only in (False, True):
            t0 = time.perf_counter()
            batch = RationalReward(rm, scores_only=scores_only)(images, prompts)
            assert batch.n_valid == n, batch.failure_reasons
            out.append(batch.stats()["completion_tokens"])
            out.append(time.perf_counter() - t0)
        rm.close()
    full, _, short, _ = out
    return full, short, 1 - short / full


def tiny_tokenizer_check() -> None:
    try:
        from transformers import AutoProcessor

        from rationalrewards.testing import build_tiny_qwen3vl_cached
    except ImportError as exc:
        print(f"tiny-model check skipped: {exc}")
        return
    path = build_tiny_qwen3vl_cached()
    tok = AutoProcessor.from_pretrained(path).tokenizer
    for name, text in (("scripted", critique_text("t2i", SCORES)),
                       ("long tail", critique_text("t2i", SCORES, refinement_comments=LONG_COMMENTS,
                                                   refined_request=LONG_REQUEST))):
        head = text[: text.index(REFINEMENT_MARKER)]
        n_all, n_head = len(tok(text)["input_ids"]), len(tok(head)["input_ids"])
        print(f"  tiny BPE tokenizer, {name:<9}: {n_all} tokens full, {n_head} up to the marker "
              f"-> {1 - n_head / n_all:.1%} saved")
    print("  tiny model generations: random text that never contains the marker, so no saving can be "
          "measured on them (the stop string is passed to generate() all the same)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="items per batch")
    args = ap.parse_args()
    print(f"{args.n} t2i critiques per setting, tokens as reported by the scripted judge (~4 chars/token); "
          f"long tail = {len(LONG_COMMENTS.split())}-word comments + {len(LONG_REQUEST.split())}-word refined request")
    for long_tail in (False, True):
        full, short, saved = run(long_tail, args.n)
        name = "long tail" if long_tail else "scripted"
        print(f"  {name:<9}: full critique {full / args.n:6.1f} tokens/item, scores_only {short / args.n:6.1f} "
              f"tokens/item -> {saved:.1%} of decode tokens saved")
    tiny_tokenizer_check()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
