"""Raw model text -> typed critique / comparison.

The parser is deliberately forgiving about *form* (header decoration, field order, score
notation) and strict about *content*: it never invents a value. A required dimension whose header
never appears, or whose score cannot be read, makes the result ``ok=False`` with a reason naming
the dimension, and the raw text is always kept.

Accepted variants (see docs/format.md): ``## Score:`` before ``## Justification:``; no
``# User Request Analysis`` header; bold / bracketed / ``x/4`` / ``~x`` scores; ``N/A`` in any
case; a leading ``<think>...</think>`` block; unnumbered or markdown-decorated dimension headers;
a refined request on the line after its marker and spanning several lines; pairwise
``Score A`` / ``Score B`` / ``Winner`` fields; several fields on one line
(``## Score: 3 ## Justification: ...``).

N/A is read as "not applicable" only on the dimensions the ``allow_na`` setting names (default:
text rendering); on any other dimension it is a parse failure naming the dimension. Non-finite
numbers (``nan``, ``inf``, ``1e999``) are failures, never clamped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .aggregate import Aggregation, clamp_score, decide_pair, reward_from_scores
from .dimensions import (
    ALL_DIMENSIONS,
    SCORE_MAX,
    AllowNA,
    Dimension,
    check_task,
    dimensions_for,
    resolve_allow_na,
)
from .schema import CompareResult, CritiqueResult, Winner, empty_scores

_DECOR = r"(?:\*\*|__|\*)?"


def _name_pattern(dim: Dimension) -> str:
    names = (dim.header, *dim.aliases)
    parts = []
    for name in names:
        words = re.split(r"\s+", name.strip())
        alts = []
        for w in words:
            if w.lower() == "and" or w == "&":
                alts.append(r"(?:and|&)")
            elif "/" in w:
                alts.append(r"\s*/\s*".join(re.escape(x) for x in w.split("/")))
            else:
                alts.append(re.escape(w))
        parts.append(r"\s+".join(alts))
    return "(?:" + "|".join(parts) + ")"


# A dimension header: "1. Text Faithfulness:", "### 2. **Physical and Visual Quality**", "Text
# Rendering:" ... The optional tail after the colon is kept (some models start the section on
# the header line). Longest names first so "Physical and Visual Quality" wins over "Visual Quality".
_DIM_HEADER = {
    d.key: re.compile(
        r"^\s*(?P<hashes>#{1,6}\s*)?" + _DECOR + r"\s*(?P<num>\[?\d{1,2}\]?\s*[.):]\s*)?" + _DECOR
        + r"\s*(?P<name>" + _name_pattern(d) + r")\s*" + _DECOR + r"\s*(?P<colon>:)?\s*" + _DECOR
        + r"\s*(?P<rest>.*)$",
        re.IGNORECASE,
    )
    for d in sorted(ALL_DIMENSIONS, key=lambda d: -len(d.header))
}

_FIELD = re.compile(
    r"^\s*(?:#{1,6}\s*)?(?:[-*+]\s+)?" + _DECOR + r"\s*"
    r"(?P<field>justification|reasoning|rationale|winner|"
    r"score\s*\(?\s*(?:for\s+)?(?:image\s+)?(?P<side>[AB])\s*\)?|"
    r"(?:image\s+)?(?P<side2>[AB])\s+score|score)"
    r"\s*" + _DECOR + r"\s*:\s*" + _DECOR + r"\s*(?P<rest>.*)$",
    re.IGNORECASE,
)

_FIELD_LABEL = (
    r"(?:justification|reasoning|rationale|winner|"
    r"score\s*\(?\s*(?:for\s+)?(?:image\s+)?[AB]\s*\)?|(?:image\s+)?[AB]\s+score|score)"
)
# A second field on the same line as the first: "## Score: 3.5 ## Justification: ..." or
# "## Score: 3 **Justification:** ...". Only a decorated label (hashes or bold) counts, so
# "the score: 3 would be generous" inside a justification stays prose.
_INLINE_FIELD = re.compile(
    r"\s+(?=(?:#{1,6}\s*" + _DECOR + r"|\*\*|__)\s*" + _FIELD_LABEL + r"\s*" + _DECOR + r"\s*:)",
    re.IGNORECASE,
)
# After a score cell even a bare label starts the justification: "## Score: 3.5 Justification: ...".
_JUSTIFICATION_AFTER_SCORE = re.compile(r"\s+(?=(?:justification|reasoning|rationale)\s*" + _DECOR + r"\s*:)",
                                        re.IGNORECASE)
# The score cell at the start of a score field, with its decoration; what follows is the tail.
_SCORE_CELL = re.compile(
    r"^[\s*_`\[\]\"']*(?:n\s*/\s*a|n\.a\.?|not\s+applicable|na|none|null|-+|—|"
    r"(?:(?:level|about|approx(?:imately|\.)?|around)\s*)?[~≈]?\s*[+-]?\d+(?:[.,]\d+)?(?:e[+-]?\d+)?"
    r"(?:\s*(?:/|out\s+of)\s*\d+(?:\.\d+)?)?)(?![\w/,]|\.\d)[*_`\]\"']*",
    re.IGNORECASE,
)

_SECTION = re.compile(
    r"^\s*(?:#{1,6}\s*)?" + _DECOR + r"\s*(?P<name>user\s+request\s+analysis|detailed\s+judge?ment|summary|"
    r"user\s+request\s+refinement|refinement\s+comments|refined\s+(?:request|prompt|instruction))"
    r"\s*" + _DECOR + r"\s*:?\s*" + _DECOR + r"\s*(?P<rest>.*)$",
    re.IGNORECASE,
)

_NA = re.compile(
    r"^(?:n\s*/\s*a|n\.a\.?|na|none|null|not\s+applicable|(?:-+|—)(?!\s*[\d.]))(?:\b|$)", re.IGNORECASE
)
# Not a number at all, though float() would take it: never N/A, never clamped to the scale.
_NON_FINITE = re.compile(r"^[+-]?\s*(?:inf(?:inity)?|∞|nan)(?![a-z])", re.IGNORECASE)
_NUMBER = re.compile(
    r"^(?:level\s*|about\s*|approx(?:imately|\.)?\s*|around\s*|~|≈)?\s*"
    r"(?P<value>[+-]?\d+(?:[.,]\d+)?(?:e[+-]?\d+)?)(?:\s*(?:/|out\s+of)\s*(?P<den>\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)


@dataclass
class ParsedScore:
    value: float | None = None
    is_na: bool = False
    error: str | None = None


def parse_score(text: str) -> ParsedScore:
    """Read one score cell: ``3.5``, ``**3.5**``, ``[3.5]``, ``3.5/4``, ``~3``, ``N/A``."""
    s = text.strip()
    s = re.sub(r"[*_`\[\]\"']", "", s).strip()
    s = s.lstrip("(").strip()
    if not s:
        return ParsedScore(error="empty score")
    if _NON_FINITE.match(s):
        return ParsedScore(error=f"non-finite score {text.strip()[:40]!r}; expected a number from 1 to 4")
    if _NA.match(s):
        return ParsedScore(is_na=True)
    m = _NUMBER.match(s)
    if not m:
        return ParsedScore(error=f"unreadable score {text.strip()[:40]!r}")
    value = float(m.group("value").replace(",", "."))
    if not math.isfinite(value):
        # "1e999" or a 400-digit integer: float() overflows to inf; clamping it to 4.0 would
        # turn garbage into a perfect score.
        return ParsedScore(error=f"non-finite score {text.strip()[:40]!r}; expected a number from 1 to 4")
    den = m.group("den")
    if den is not None and float(den) != SCORE_MAX:
        # Rescaling a /10 answer would be inventing a calibration the model never had.
        return ParsedScore(error=f"score on an unexpected scale ({text.strip()[:40]!r}); expected 1-4")
    return ParsedScore(value=clamp_score(value))


def parse_winner(text: str) -> tuple[Winner | None, bool]:
    """Returns (winner, understood)."""
    s = re.sub(r"[*_`\[\]\"'.]", "", text).strip().lower()
    if not s:
        return None, False
    if _NA.match(s):
        return None, True
    if re.search(r"\btie\b", s) or s.startswith(("equal", "both", "neither", "same")):
        return "tie", True
    m = re.match(r"^(?:image|edited\s+image|generated\s+image|edit|output|response)?\s*([ab])\b", s)
    if m:
        return m.group(1).upper(), True  # type: ignore[return-value]
    return None, False


@dataclass
class _Section:
    key: str
    lines: list[str] = field(default_factory=list)


@dataclass
class _Fields:
    justification: str | None = None
    score: str | None = None
    score_a: str | None = None
    score_b: str | None = None
    winner: str | None = None
    loose: list[str] = field(default_factory=list)


def strip_thinking(text: str) -> str:
    """Drop a reasoning block: everything up to the last ``</think>``, or a lone ``<think>``."""
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1]
    return text.replace("<think>", "")


def _normalise(raw: str) -> list[str]:
    text = strip_thinking(raw).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("<|im_end|>", "").replace("<|endoftext|>", "")
    lines = [line.rstrip() for line in text.split("\n")]
    # A whole answer wrapped in a code fence.
    return [line for line in lines if not re.match(r"^\s*```\w*\s*$", line)]


def _match_dimension(line: str, allowed: set[str]) -> tuple[str, str] | None:
    for key, pattern in _DIM_HEADER.items():
        m = pattern.match(line)
        if not m:
            continue
        rest = m.group("rest").strip()
        strong = bool(m.group("hashes") or "**" in line or "__" in line)
        decorated = strong or bool(m.group("num"))
        if rest and not decorated:
            # "Text rendering: the sign reads OPEN" is prose, not a header.
            continue
        if not decorated and not m.group("colon"):
            continue
        if rest and not strong and not _FIELD.match(rest) and not _is_score_like(rest):
            # "3. Text rendering: not needed here." inside a justification's checklist.
            continue
        return (key if key in allowed else f"!{key}"), rest
    return None


def _is_score_like(text: str) -> bool:
    cell = re.sub(r"[*_`\[\]]", "", text).strip()
    return bool(_NA.match(cell) or _NON_FINITE.match(cell)
                or re.match(r"^[~≈]?\s*[+-]?\d+(?:[.,]\d+)?(?:e[+-]?\d+)?\s*(?:/\s*\d+)?\s*$", cell, re.I))


def _split(lines: list[str], allowed: set[str]) -> tuple[dict[str, _Section], dict[str, list[str]], list[str]]:
    """Cut the answer into dimension sections and named top-level sections."""
    start = 0
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if m and re.match(r"detailed", m.group("name"), re.IGNORECASE):
            start = i + 1
            break
    preface = lines[:start]
    dims: dict[str, _Section] = {}
    tops: dict[str, list[str]] = {}
    current: list[str] | None = None
    seen_dim = False
    for line in lines[start:]:
        dim = _match_dimension(line, allowed)
        if dim is not None:
            key, rest = dim
            seen_dim = True
            if key.startswith("!") or (key in dims and _has_score(dims[key])):
                current = None  # unexpected dimension, or a repeat of a scored one: ignore it
                continue
            dims[key] = _Section(key, [rest] if rest else [])
            current = dims[key].lines
            continue
        top = _SECTION.match(line)
        if top and not _FIELD.match(line):
            name = re.sub(r"\s+", " ", top.group("name").lower())
            if name.startswith("refined"):
                name = "refined request"
            if name in ("user request analysis", "detailed judgement", "detailed judgment") and not seen_dim:
                current = None
                continue
            tops.setdefault(name, [])
            rest = top.group("rest").strip()
            current = tops[name]
            if rest:
                current.append(rest)
            continue
        if current is not None:
            current.append(line)
        elif not seen_dim:
            preface.append(line)
    return dims, tops, preface


def _has_score(section: _Section) -> bool:
    f = _fields(section)
    return any(x is not None for x in (f.score, f.score_a, f.score_b))


def _split_inline_fields(lines: list[str]) -> list[str]:
    """One field per line: a field line that carries further fields is cut before each."""
    out: list[str] = []
    for line in lines:
        if not _FIELD.match(line):
            out.append(line)
            continue
        for piece in _INLINE_FIELD.split(line):
            m = _FIELD.match(piece)
            is_score = m is not None and "score" in m.group("field").lower()
            out.extend(_JUSTIFICATION_AFTER_SCORE.split(piece) if is_score else [piece])
    return out


def _score_tail(cell: str) -> str | None:
    """Text the model wrote after the score on the score line ("3.5 - crisp lettering")."""
    m = _SCORE_CELL.match(cell)
    if not m:
        return None
    tail = cell[m.end():].strip().lstrip("-–—:|;,.").strip()
    return tail or None


def _fields(section: _Section) -> _Fields:
    out = _Fields()
    target: str | None = None
    buffers: dict[str, list[str]] = {}
    for line in _split_inline_fields(section.lines):
        m = _FIELD.match(line)
        if m:
            name = m.group("field").lower()
            side = (m.group("side") or m.group("side2") or "").upper()
            if name.startswith(("justification", "reasoning", "rationale")):
                target = "justification"
            elif name == "winner":
                target = "winner"
            elif side:
                target = f"score_{side.lower()}"
            else:
                target = "score"
            if target in buffers and target != "justification":
                target = None  # a repeated field: keep the first, as written
                continue
            buffers.setdefault(target, [])
            rest = m.group("rest").strip()
            if rest:
                buffers[target].append(rest)
            continue
        if target is None:
            if line.strip():
                out.loose.append(line.strip())
            continue
        buffers[target].append(line)
    for name, buf in buffers.items():
        if name == "justification":
            text = "\n".join(buf).strip()
            out.justification = text or None
        else:
            value = next((b.strip() for b in buf if b.strip()), None)
            setattr(out, name, value)
    if out.justification is None and out.score is not None:
        # No justification field at all, but prose right after the score: keep it as the
        # justification rather than dropping what the model wrote.
        out.justification = _score_tail(out.score)
    return out


def _text(lines: list[str] | None) -> str | None:
    if not lines:
        return None
    text = "\n".join(lines).strip()
    return text or None


def _clean_request(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”`":
        text = text[1:-1].strip()
    if len(text) >= 2 and text[0] == "“" and text[-1] == "”":
        text = text[1:-1].strip()
    return text or None


def _analysis(preface: list[str]) -> str | None:
    kept = []
    for line in preface:
        m = _SECTION.match(line)
        if m:
            rest = m.group("rest").strip()
            if rest:
                kept.append(rest)
            continue
        kept.append(line)
    return _text(kept)


def _na_refused(dim: Dimension, allowed: frozenset[str], side: str = "") -> str:
    may = ", ".join(sorted(allowed)) or "none"
    return f"{dim.header}: {side}N/A is not allowed on {dim.key} (may be N/A: {may}; see allow_na)"


def parse_critique(
    raw: str,
    task: str,
    *,
    aggregation: Aggregation | None = None,
    id: str | None = None,
    allow_na: AllowNA = None,
) -> CritiqueResult:
    """Parse a pointwise critique. Never raises on model text; failures are ``ok=False``.

    ``allow_na``: the dimension keys that may be N/A (default ``{"text_rendering"}``; ``"all"``
    for every dimension). N/A anywhere else fails the parse with an error naming the dimension.
    An unknown key in ``allow_na`` raises ``ValueError`` (a setting error, not model text).
    """
    allowed = resolve_allow_na(allow_na)
    task = check_task(task)
    dims = dimensions_for(task)
    lines = _normalise(raw)
    sections, tops, preface = _split(lines, {d.key for d in dims})
    scores = empty_scores()
    justifications: dict[str, str | None] = {d.key: None for d in dims}
    problems: list[str] = []
    missing = [d.header for d in dims if d.key not in sections]
    if missing:
        problems.append("missing dimension(s): " + ", ".join(missing))
    for d in dims:
        if d.key not in sections:
            continue
        f = _fields(sections[d.key])
        justifications[d.key] = f.justification
        if f.score is None and (f.score_a is not None or f.score_b is not None):
            problems.append(f"{d.header}: pairwise scores (Score A/B) in a pointwise critique")
            continue
        cell = f.score
        if cell is None and f.loose and _NA.match(re.sub(r"[*_`\[\]]", "", f.loose[0]).strip()):
            cell = f.loose[0]  # "3. Text Rendering: N/A" with no field lines at all
        if cell is None:
            problems.append(f"{d.header}: no score")
            continue
        ps = parse_score(cell)
        if ps.error:
            problems.append(f"{d.header}: {ps.error}")
        elif ps.is_na and d.key not in allowed:
            problems.append(_na_refused(d, allowed))
        elif not ps.is_na:
            scores[d.key] = ps.value
    summary = _text(tops.get("summary"))
    result = CritiqueResult(
        id=id,
        task=task,
        ok=False,
        scores=scores,
        justifications=justifications,
        summary=summary,
        analysis=_analysis(preface),
        refinement_comments=_text(tops.get("refinement comments")),
        refined_request=_clean_request(_text(tops.get("refined request"))),
        raw=raw,
    )
    if not problems and all(scores[d.key] is None for d in dims):
        problems.append("every dimension is N/A; nothing to score")
    if problems:
        result.error = "; ".join(problems)
        result.error_kind = "parse"
        return result
    result.reward = reward_from_scores(scores, task, aggregation)
    if result.reward is None:
        result.error = "no counted dimension has a score under the aggregation in use"
        result.error_kind = "parse"
        return result
    result.ok = True
    return result


def parse_comparison(
    raw: str,
    task: str,
    *,
    aggregation: Aggregation | None = None,
    tie_tolerance: float | None = None,
    id: str | None = None,
    allow_na: AllowNA = None,
) -> CompareResult:
    """Parse a pairwise judgement; the verdict comes from the per-dimension scores.

    ``allow_na`` works as in :func:`parse_critique`, for each side separately.
    """
    allowed = resolve_allow_na(allow_na)
    task = check_task(task)
    dims = dimensions_for(task)
    lines = _normalise(raw)
    sections, tops, preface = _split(lines, {d.key for d in dims})
    scores_a, scores_b = empty_scores(), empty_scores()
    justifications: dict[str, str | None] = {d.key: None for d in dims}
    winners: dict[str, Winner | None] = {}
    problems: list[str] = []
    missing = [d.header for d in dims if d.key not in sections]
    if missing:
        problems.append("missing dimension(s): " + ", ".join(missing))
    for d in dims:
        if d.key not in sections:
            continue
        f = _fields(sections[d.key])
        justifications[d.key] = f.justification
        for side, cell, target in (("A", f.score_a, scores_a), ("B", f.score_b, scores_b)):
            if cell is None:
                problems.append(f"{d.header}: no Score {side}")
                continue
            ps = parse_score(cell)
            if ps.error:
                problems.append(f"{d.header}: Score {side}: {ps.error}")
            elif ps.is_na and d.key not in allowed:
                problems.append(_na_refused(d, allowed, f"Score {side}: "))
            elif not ps.is_na:
                target[d.key] = ps.value
        if f.winner is not None:
            w, understood = parse_winner(f.winner)
            winners[d.key] = w
            if not understood:
                winners[d.key] = None
    result = CompareResult(
        id=id,
        task=task,
        ok=False,
        scores_a=scores_a,
        scores_b=scores_b,
        dimension_winners=winners,
        justifications=justifications,
        summary=_text(tops.get("summary")),
        analysis=_analysis(preface),
        raw=raw,
    )
    if problems:
        result.error = "; ".join(problems)
        result.error_kind = "parse"
        return result
    decision = decide_pair(scores_a, scores_b, task, aggregation, tie_tolerance)
    if decision.winner is None:
        result.error = decision.reason
        result.error_kind = "parse"
        return result
    result.ok = True
    result.winner = decision.winner
    result.reward_a = reward_from_scores(scores_a, task, aggregation)
    result.reward_b = reward_from_scores(scores_b, task, aggregation)
    return result


_FINAL_VERDICT = re.compile(
    r"final\s+verdict\s*:\s*" + _DECOR + r"\s*(?P<v>image\s+a|image\s+b|a|b|tie|it'?s\s+a\s+tie)",
    re.IGNORECASE,
)


def parse_final_verdict(raw: str) -> Winner | None:
    """A trailing ``Final verdict: Image A|Image B|tie`` line, if the model wrote one."""
    matches = list(_FINAL_VERDICT.finditer(strip_thinking(raw)))
    if not matches:
        return None
    winner, _ = parse_winner(matches[-1].group("v"))
    return winner
