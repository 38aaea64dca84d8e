"""The files of one PARROT output folder, named in one place.

The pipeline writes them and the statistics read them; both go through :class:`ParrotFolder`, so
the statistics never need the pipeline that produced the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ParrotFolder:
    """Paths inside a PARROT output folder ``out`` (nothing is created or read here)."""

    out: Path

    @property
    def pairs_path(self) -> Path:
        """The input pairs that passed intake (``pairs.jsonl``)."""
        return self.out / "pairs.jsonl"

    @property
    def bad_path(self) -> Path:
        """Input rows refused at intake, with the reason (``bad_pairs.jsonl``)."""
        return self.out / "bad_pairs.jsonl"

    @property
    def anchored_path(self) -> Path:
        """Every anchored teacher call (``anchored.jsonl``)."""
        return self.out / "anchored.jsonl"

    @property
    def repredict_path(self) -> Path:
        """Every re-prediction call of the filter (``work/repredict.jsonl``)."""
        return self.out / "work" / "repredict.jsonl"

    @property
    def filtered_path(self) -> Path:
        """One verdict per rationale: kept, or rejected with its reasons (``filtered.jsonl``)."""
        return self.out / "filtered.jsonl"

    @property
    def sft_dir(self) -> Path:
        """The student's SFT data and its ``manifest.json`` (``sft/``)."""
        return self.out / "sft"
