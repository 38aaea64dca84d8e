"""Quiet progress for long commands (``demo``, ``parrot train``): one line per stage and result.

A command hands :class:`StageLog` to the API as its ``log`` callback. The API's messages are
sorted into three kinds:

* a stage starting (``demo: student ...``): on a terminal, a spinner with the elapsed time that
  shows the stage's latest detail line; nothing is written when stderr is a file or a pipe;
* a stage ending, a failure, or a result (``demo: student done in 77.6s``, ``... failed ...``):
  always one plain line;
* everything else (``step 50/100, loss 2.40``): detail, printed only with ``--verbose``; on a
  terminal it also updates the spinner's text.

When stderr is not a terminal nothing is redrawn: no carriage returns, no bars, whatever the
verbosity. :func:`quiet_libraries` turns off the progress bars and warnings that transformers
and huggingface_hub would otherwise print (``-v`` keeps their warnings, never their bars in a
file).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

_START = re.compile(r"^(?P<name>[\w-]+: [\w-]+) \.\.\.$")
_END = re.compile(r"^[\w-]+: [\w-]+ (done in \S+|already done, skipped)$")
_ALWAYS = re.compile(r"\bfailed\b|\berror\b|\bwarning\b|^resum", re.IGNORECASE)


class StageLog:
    """A ``log(message)`` callback that keeps a command's stderr to one line per stage."""

    def __init__(self, console: Console, *, verbose: bool = False,
                 is_result: Callable[[str], bool] | None = None) -> None:
        self.console = console
        self.verbose = verbose
        self.live = console.is_terminal
        self.is_result = is_result or (lambda m: bool(_END.match(m) or _ALWAYS.search(m)))
        self._progress: Progress | None = None
        self._task: Any = None
        self._stage = ""

    def __call__(self, message: str) -> None:
        start = _START.match(message)
        if start:
            self._begin(start.group("name"))
            if self.verbose:
                self._print(message)
            return
        if self.is_result(message):
            if _END.match(message):
                self._end()
            self._print(message)
            return
        if self.verbose:
            self._print(message)
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self._stage}: {message}")

    def close(self) -> None:
        """Stop a spinner still running (a stage that raised)."""
        self._end()

    def __enter__(self) -> StageLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _begin(self, stage: str) -> None:
        self._end()
        self._stage = stage
        if not self.live:
            return
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                  console=self.console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(stage, total=None)

    def _end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _print(self, message: str) -> None:
        # soft_wrap: a long line stays one line in a log file (rich would fold it at 80 columns).
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)


def quiet_libraries(*, verbose: bool) -> None:
    """Silence the progress bars (and, unless ``verbose``, the warnings) of the model libraries.

    Their bars redraw with carriage returns, which a log file keeps as one long line per bar; the
    command's own :class:`StageLog` says what stage is running instead (on a terminal too).
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
    if not verbose:
        hf_logging.set_verbosity_error()
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:
        return
    disable_progress_bars()
