"""The text the demo's students train their BPE tokenizer on.

Lives below both the pipeline and the base pretraining, which each build a student tokenizer from
it, so neither has to import the other.
"""

from __future__ import annotations

import random

from .generator import draw_scene
from .world import JUDGE_TEMPLATES, find_defects, sample_task


def tokenizer_corpus(seed: int = 0, n: int = 300) -> list[str]:
    """Text to train the student's BPE tokenizer on: the judge templates and answers written by
    the teacher for random requests of the world, so that the critique vocabulary (headers,
    defect phrases, cue sentences, scores) comes out as a few tokens per word."""
    from .teacher import pairwise_answer, pointwise_answer

    rng = random.Random(f"demo-corpus:{seed}")
    lines: list[str] = []
    for text in JUDGE_TEMPLATES.values():
        lines += text.splitlines(keepends=True) * 3
    for i in range(n):
        task = sample_task(rng, f"corpus-{i}")
        src = task.intent.source
        intent, s1 = draw_scene(task.prompt, source=src, seed=2 * i)
        _, s2 = draw_scene(task.prompt, source=src, seed=2 * i + 1)
        lines.append(task.prompt + "\n")
        lines += pointwise_answer(intent, find_defects(intent, s1)).splitlines(keepends=True)
        lines += pairwise_answer(intent, find_defects(intent, s1), find_defects(intent, s2)).splitlines(keepends=True)
    return lines
