"""Ground-truth labels: every encoding the benchmarks use, normalised to ``A | B | tie | bothbad``.

Anything that is not recognised becomes ``None``; callers count and report those values (an
unknown label is a data problem the user must see, never an item quietly dropped).
"""

from __future__ import annotations

import re
from typing import Any, Literal

Label = Literal["A", "B", "tie", "bothbad"]
LABELS: tuple[Label, ...] = ("A", "B", "tie", "bothbad")

# Keys are compared after _key(): lower case, without spaces, quotes, "_" and "-".
_A = {
    "a", "leftvote", "left", "leftbetter", "imagea", "responsea", "modela", "model1", "1", "a>b", "b<a",
    "first", "abetter", "aisbetter", "chosena", "candidate1", "output1",
}
_B = {
    "b", "rightvote", "right", "rightbetter", "imageb", "responseb", "modelb", "model2", "2", "b>a", "a<b",
    "second", "bbetter", "bisbetter", "chosenb", "candidate2", "output2",
}
_TIE = {
    "tie", "tievote", "a=b", "b=a", "equal", "same", "draw", "tie(good)", "tie(bothgood)", "bothgood",
    "a=b=good", "tiegood", "itsatie",
}
_BOTHBAD = {
    "bothbadvote", "bothbad", "tie(bothbad)", "tiebothbad", "a=b=bad", "tiebad", "tie(bad)", "neither",
}
_TABLE: dict[str, Label] = {
    **{k: "A" for k in _A},
    **{k: "B" for k in _B},
    **{k: "tie" for k in _TIE},
    **{k: "bothbad" for k in _BOTHBAD},
}
_STRIP = re.compile(r"[\s_\-\"'`]+")


def _key(text: str) -> str:
    return _STRIP.sub("", text.strip().lower())


def normalize_label(value: Any) -> Label | None:
    """Map a raw label to ``"A"``, ``"B"``, ``"tie"`` or ``"bothbad"``; ``None`` if unknown.

    Understood: GenAI-Bench votes (``leftvote``, ``rightvote``, ``tievote``, ``bothbad_vote``),
    ``A``/``B`` (MMRB2's ``chosen``), ``A>B`` / ``B>A`` / ``A=B``, ``1``/``2`` (first/second),
    ``model_1``/``model_2``, ``model_a``/``model_b`` and ``tie (bothbad)`` (arena style),
    ``left``/``right``, ``Image A``/``Image B``. ``0`` is refused: it is 0- or 1-based depending
    on who wrote the file, and guessing would silently invert labels.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if value == 1:
            return "A"
        if value == 2:
            return "B"
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    key = _key(value)
    if key.endswith(".0") and key[:-2] in ("1", "2"):
        key = key[:-2]
    return _TABLE.get(key)


def three_way(label: Label | None) -> Literal["A", "B", "tie"] | None:
    """The label with both kinds of tie merged (for 3-way accuracy)."""
    if label == "bothbad":
        return "tie"
    return label


def label_repr(value: Any) -> str:
    """A short JSON-safe rendering of a raw label (for reports of unknown labels)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_ranking(text: Any, k: int | None = None) -> list[list[int]] | None:
    """An EditReward-Bench ranking such as ``"A>B=C"`` -> tiers of 0-based candidate indices,
    best tier first (``[[0], [1, 2]]``). ``<`` is read as the reverse order. ``None`` when the
    string is not a complete ranking of the first K letters (K = ``k`` or the letters present).
    """
    if not isinstance(text, str):
        return None
    s = re.sub(r"\s+", "", text.strip().upper())
    if not s or not re.fullmatch(r"[A-Z]([<>=][A-Z])*", s):
        return None
    if ">" in s and "<" in s:
        return None
    reverse = "<" in s
    tiers = [[ord(c) - ord("A") for c in tier.split("=")] for tier in re.split(r"[<>]", s)]
    if reverse:
        tiers.reverse()
    flat = [i for tier in tiers for i in tier]
    expected = k if k is not None else len(flat)
    if sorted(flat) != list(range(expected)):
        return None
    return tiers
