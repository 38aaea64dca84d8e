"""Quiet by default: long commands (``demo``, ``parrot train``) write one line per stage and per
result to a log file, never a redrawn bar or a raw trainer dict; ``--verbose`` adds the details."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from rationalrewards.cli.progress import StageLog, quiet_libraries

# What ``run_demo`` says during a run (the pipeline's own messages, in order).
DEMO_MESSAGES = [
    "demo: world ...",
    "demo: world done in 0.7s",
    "demo: parrot ...",
    "anchor: 800 teacher calls, 0 already done, 800 to run",
    "filter: 383 re-prediction call(s) to run",
    "filter: 2 re-prediction call(s) failed; rerun the same command to retry them",
    "demo: parrot done in 3.1s",
    "demo: student ...",
    "demo: torch uses 2 thread(s)",
    "training on 675 examples (lean loop, full fine-tune, vision frozen and cached)",
    *[f"step {s}/100, loss {3 - s / 100:.4f}" for s in range(10, 101, 10)],
    "demo: student done in 77.6s",
    "demo: eval already done, skipped",
    "demo: refine ...",
    "refine r3 failed: the source image is missing",
    "demo: refine done in 4.5s",
]


def _file_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=80), buffer


def test_a_log_file_gets_one_line_per_stage_and_every_failure() -> None:
    console, buffer = _file_console()
    with StageLog(console) as log:
        for message in DEMO_MESSAGES:
            log(message)
    assert buffer.getvalue().splitlines() == [
        "demo: world done in 0.7s",
        "filter: 2 re-prediction call(s) failed; rerun the same command to retry them",
        "demo: parrot done in 3.1s",
        "demo: student done in 77.6s",
        "demo: eval already done, skipped",
        "refine r3 failed: the source image is missing",
        "demo: refine done in 4.5s",
    ]


def test_verbose_adds_the_details_and_still_redraws_nothing() -> None:
    console, buffer = _file_console()
    with StageLog(console, verbose=True) as log:
        for message in DEMO_MESSAGES:
            log(message)
    text = buffer.getvalue()
    assert text.splitlines() == DEMO_MESSAGES
    assert "\r" not in text and "\x1b[" not in text


def test_a_long_line_stays_one_line_in_a_file() -> None:
    console, buffer = _file_console()
    long = "refine item-with-a-long-name failed: " + "x" * 150
    StageLog(console)(long)
    assert buffer.getvalue() == long + "\n"


def test_on_a_terminal_a_stage_shows_a_spinner_and_ends_with_its_line() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=80)
    with StageLog(console) as log:
        log("demo: student ...")
        assert log._progress is not None  # the spinner runs while the stage does
        log("step 10/100, loss 2.9000")
        log("demo: student done in 1.0s")
        assert log._progress is None
    assert "demo: student done in 1.0s" in buffer.getvalue()
    assert "step 10/100" not in buffer.getvalue().split("demo: student done")[-1]


def test_the_trainer_reports_loss_lines_not_dicts_or_bars() -> None:
    pytest.importorskip("transformers")
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from rationalrewards.parrot.train import loss_line, replace_trainer_printing

    assert loss_line(10, 40, {"loss": "1.84", "grad_norm": 3.2, "learning_rate": 1e-05, "epoch": 0.5}) == \
        "step 10/40: loss 1.84, grad norm 3.2, lr 1e-05"
    assert loss_line(40, 40, {"train_runtime": 12.0, "train_samples_per_second": 3.1}) is None

    class FakeTrainer:
        def __init__(self) -> None:
            self.callbacks: list[Any] = [PrinterCallback, ProgressCallback]

        def remove_callback(self, cls: Any) -> None:
            self.callbacks.remove(cls)

        def add_callback(self, cb: Any) -> None:
            self.callbacks.append(cb)

    said: list[str] = []
    trainer = FakeTrainer()
    replace_trainer_printing(trainer, said.append)
    assert PrinterCallback not in trainer.callbacks and ProgressCallback not in trainer.callbacks
    (callback,) = trainer.callbacks
    state = SimpleNamespace(is_world_process_zero=True, global_step=5, max_steps=20)
    callback.on_log(None, state, None, logs={"loss": 2.5, "learning_rate": 2e-5})
    callback.on_log(None, state, None, logs={"train_runtime": 1.0})
    assert said == ["step 5/20: loss 2.5, lr 2e-05"]
    console, buffer = _file_console()
    log = StageLog(console)
    for line in said:
        log(line)
    assert buffer.getvalue() == ""  # a detail: shown with --verbose only


def test_quiet_libraries_turns_off_the_model_libraries_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "TOKENIZERS_PARALLELISM"):
        monkeypatch.delenv(name, raising=False)
    verbosity = hf_logging.get_verbosity()
    try:
        quiet_libraries(verbose=False)
        assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.get_verbosity() == hf_logging.ERROR
    finally:
        hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(verbosity)
