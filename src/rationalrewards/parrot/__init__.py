"""PARROT: anchored rationales, consistency filtering and distillation into a student judge.

The three phases of the recipe (reference.md §1) as a resumable pipeline over one output folder:

1. **anchor** - a teacher VLM sees both images, the request and the human preference and writes
   critiques in the released formats whose scores explain that preference (the posterior
   ``q(z | x, y)``);
2. **filter** - a rationale is kept only if it parses, its own scores imply the label, it does not
   leak the anchor, and the teacher, asked again *without* the label, predicts the label from it
   (predictive sufficiency ``p(y | x, z)``);
3. **build-sft** / **train** - the kept rationales become the student's SFT data (label-free
   prompts built with the same ``build_messages`` the student sees at inference) and a TRL
   ``SFTTrainer`` fine-tunes the student.

Importing this package is cheap; torch, transformers, TRL and datasets load only in ``train``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .config import ParrotConfig, TrainConfig
    from .data import Pair, load_pairs
    from .pipeline import Parrot, run_parrot
    from .sft import load_sft_dataset
    from .train import train_student

_LAZY = {
    "ParrotConfig": ".config",
    "TrainConfig": ".config",
    "Pair": ".data",
    "load_pairs": ".data",
    "Parrot": ".pipeline",
    "run_parrot": ".pipeline",
    "load_sft_dataset": ".sft",
    "train_student": ".train",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "Pair",
    "Parrot",
    "ParrotConfig",
    "TrainConfig",
    "load_pairs",
    "load_sft_dataset",
    "run_parrot",
    "train_student",
]
