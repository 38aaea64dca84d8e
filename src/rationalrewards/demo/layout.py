"""The output folder of a demo run: where each stage writes, and the state file that records them.

Both the pipeline (which writes the folder) and the report (which reads it) import this module;
the report never imports the pipeline. Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STATE_FILE = "demo_state.json"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
#: The folders a run writes (``--overwrite`` removes exactly these).
RUN_FOLDERS = ("world", "parrot", "student", "eval", "refine", "refine-teacher", "templates")


class RunFolder:
    """A demo run's folder, read-only: paths of the stages' outputs and the recorded state
    (``config``: the settings as a dict; ``stages``: per stage ``done``, ``seconds``, ``result``)."""

    def __init__(self, out: str | Path, state: dict[str, Any] | None = None):
        self.out = Path(out)
        self.state: dict[str, Any] = state if state is not None else self.read_state()

    def read_state(self) -> dict[str, Any]:
        path = self.out / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{self.out}: no {STATE_FILE}; not a demo run folder")
        state = json.loads(path.read_text(encoding="utf-8"))
        state.setdefault("stages", {})
        return state

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.state.get("config") or {})

    def result(self, stage: str) -> dict[str, Any]:
        return self.state["stages"].get(stage, {}).get("result", {})

    @property
    def templates_dir(self) -> Path:
        return self.out / "templates"

    @property
    def world_dir(self) -> Path:
        return self.out / "world"

    @property
    def parrot_dir(self) -> Path:
        return self.out / "parrot"

    @property
    def student_root(self) -> Path:
        return self.out / "student"

    @property
    def student_dir(self) -> Path:
        return self.out / "student" / "model"

    @property
    def eval_dir(self) -> Path:
        return self.out / "eval"

    @property
    def refine_dir(self) -> Path:
        return self.out / "refine"
