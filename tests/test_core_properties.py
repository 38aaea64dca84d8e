"""Properties of the critique core, checked on generated inputs (hypothesis).

1. The parser never crashes on mutated real outputs, and never reports ``ok=True`` with a score
   the text does not hold: every parsed score equals (after clamping to 1-4) a number written in
   that dimension's section, and a dimension the policy does not let be N/A always has one.
2. No request text, however hostile, changes the shape of the prompt: no extra image slot, no
   extra line (so no forged section header), no chat-role token, no extra message.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from rationalrewards.critique.aggregate import clamp_score
from rationalrewards.critique.dimensions import BY_KEY, dimensions_for
from rationalrewards.critique.parser import parse_comparison, parse_critique, strip_thinking
from rationalrewards.critique.prompts import (
    PromptInputError,
    build_messages,
    default_templates,
    message_images,
    render_text,
)
from rationalrewards.images import load_image

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.json"))
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _golden(name: str) -> tuple[str, str, str]:
    raw = (GOLDEN / f"{name}.txt").read_bytes().decode("utf-8")
    expected = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return raw, expected["task"], expected["mode"]


# --------------------------------------------------------------------------- mutations

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-20, 20).map(str),
    st.decimals(-10, 10, places=1, allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["1e999", "-1e999", "nan", "NaN", "inf", "-inf", "Infinity", "∞", "9" * 320, "N/A", "None",
                     "-", "3.5/4", "7/10", "~3", "**2.5**", "[4]", "3,5", "", "2e0", "0.5e1"]),
)
JUNK = st.one_of(
    st.text(max_size=40),
    st.sampled_from([
        "## Score: 4", "## Score A: 1", "## Score B: 4", "## Justification:", "## Winner: Image B", "# Summary:",
        "1. Text Faithfulness:", "2. Physical and Visual Quality:", "3. Text Rendering: N/A", "Image Faithfulness:",
        "# Detailed Judgement", "</think>", "<think>", "```", "<|im_end|>", "**Score:** 1.0", "Score: 2",
        "## Refined Request:", "# User Request Refinement:", "## Score: 4 ## Justification: x",
    ]),
)
_NUM_RE = re.compile(r"[+-]?\d+(?:[.,]\d+)?(?:e[+-]?\d+)?", re.IGNORECASE)


@st.composite
def mutated_output(draw: st.DrawFn) -> tuple[str, str, str]:
    raw, task, mode = _golden(draw(st.sampled_from(CASES)))
    lines = raw.split("\n")
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["number", "delete", "duplicate", "junk", "swap", "case", "truncate", "join"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if op == "number":
            spots = [(j, m) for j, line in enumerate(lines) for m in _NUM_RE.finditer(line)]
            if spots:
                j, m = spots[draw(st.integers(0, len(spots) - 1))]
                lines[j] = lines[j][: m.start()] + draw(NUMBERS) + lines[j][m.end():]
        elif op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
        elif op == "junk":
            lines.insert(draw(st.integers(0, len(lines))), draw(JUNK))
        elif op == "swap":
            j = draw(st.integers(0, max(0, len(lines) - 1)))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "case":
            lines[i] = draw(st.sampled_from([str.upper, str.lower, str.title]))(lines[i])
        elif op == "truncate":
            text = "\n".join(lines)
            lines = text[: draw(st.integers(0, len(text)))].split("\n")
        elif op == "join" and i + 1 < len(lines):
            lines[i : i + 2] = [lines[i] + " " + lines[i + 1]]
    return "\n".join(lines), task, mode


# --------------------------------------------------------------------------- the trace oracle
# Independent of the parser on purpose: a dimension's section is everything from a line that
# names the dimension (header-like: the name opens the line, after numbering and markdown, and is
# followed by a colon or nothing) up to the next such line for any dimension.


def _name_regex(key: str) -> str:
    dim = BY_KEY[key]
    names = []
    for name in (dim.header, *dim.aliases):
        words = [r"(?:and|&)" if w.lower() in ("and", "&") else r"\s*/\s*".join(map(re.escape, w.split("/")))
                 for w in name.split()]
        names.append(r"\s+".join(words))
    return "(?:" + "|".join(names) + ")"


# The name opens the line (after numbering / markdown) and ends it or is followed by a colon:
# "2. **Physical Quality**:", "Text Rendering", "### 2. **X** ## Justification: ...", but not
# "Text rendering aside, the ...".
_HEADER_LIKE = {
    key: re.compile(r"^[\s#*_\[\]().:\d]*" + _name_regex(key) + r"[\s*_\]]*"
                    r"(?::|$|#|(?:justification|reasoning|rationale|score|winner)\b)", re.IGNORECASE)
    for key in BY_KEY
}


def _sections(raw: str, keys: tuple[str, ...]) -> dict[str, list[str]]:
    """key -> the text of every header-like span of that dimension."""
    text = strip_thinking(raw).replace("\r\n", "\n").replace("\r", "\n")
    spans: dict[str, list[str]] = {k: [] for k in keys}
    current: str | None = None
    buf: list[str] = []
    for line in text.split("\n"):
        # Longest names first, as the parser does ("Physical and Visual Quality" over "Visual Quality").
        hit = next((k for k in sorted(BY_KEY, key=lambda k: -len(BY_KEY[k].header)) if _HEADER_LIKE[k].match(line)),
                   None)
        if hit is not None:
            if current in spans:
                spans[current].append("\n".join(buf))
            current, buf = hit, [line]
        else:
            buf.append(line)
    if current in spans:
        spans[current].append("\n".join(buf))
    return spans


def _written_values(section: str) -> set[float]:
    values = set()
    for m in _NUM_RE.finditer(section):
        value = float(m.group().replace(",", "."))
        if math.isfinite(value):
            values.add(round(clamp_score(value), 9))
    return values


def _assert_traceable(scores: dict[str, float | None], spans: dict[str, list[str]], label: str, raw: str) -> None:
    for key, value in scores.items():
        if value is None:
            continue
        assert math.isfinite(value) and 1.0 <= value <= 4.0, f"{label}[{key}] = {value!r} is off the scale"
        written = set().union(*(_written_values(s) for s in spans.get(key, []))) if spans.get(key) else set()
        assert round(value, 9) in written, f"{label}[{key}] = {value} is not written in its section:\n{raw}"


# --------------------------------------------------------------------------- parser properties


@SETTINGS
@given(sample=mutated_output(), lenient=st.booleans())
def test_mutated_outputs_never_crash_and_never_invent_a_score(sample: tuple[str, str, str], lenient: bool) -> None:
    raw, task, mode = sample
    allow_na = "all" if lenient else None
    keys = tuple(d.key for d in dimensions_for(task))
    spans = _sections(raw, keys)
    if mode == "pointwise":
        result = parse_critique(raw, task, allow_na=allow_na)
        assert result.raw == raw
        if not result.ok:
            assert result.error and result.error_kind == "parse" and result.reward is None
            return
        assert result.reward is not None and 0.0 <= result.reward <= 1.0
        _assert_traceable(result.scores, spans, "scores", raw)
        if not lenient:
            assert all(result.scores[k] is not None for k in keys if k != "text_rendering"), result.scores
    else:
        result = parse_comparison(raw, task, allow_na=allow_na)
        assert result.raw == raw
        if not result.ok:
            assert result.error and result.error_kind == "parse" and result.winner is None
            return
        assert result.winner in ("A", "B", "tie")
        for side in (result.scores_a, result.scores_b):
            _assert_traceable(side, spans, "scores", raw)
            if not lenient:
                assert all(side[k] is not None for k in keys if k != "text_rendering"), side


@SETTINGS
@given(text=st.text(max_size=400), task=st.sampled_from(["t2i", "edit"]), pairwise=st.booleans())
def test_arbitrary_text_never_crashes_the_parser(text: str, task: str, pairwise: bool) -> None:
    result = parse_comparison(text, task) if pairwise else parse_critique(text, task)
    assert result.ok is False or result.error is None


# --------------------------------------------------------------------------- prompt properties

TOKENS = ["<image>", "<IMAGE>", "< image >", "## Score:", "# Summary:", "1. Text Faithfulness:", "<|im_start|>",
          "<|im_end|>", "system", "assistant", "\n", "\r", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "#",
          "###", "<think>", "</think>", "{request}", "\ud800", "\udfff", "<", "|", ">", " ", "image"]
REQUESTS = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(TOKENS),
                              st.characters(categories=["Cs", "Zl", "Zp", "Cc"])), max_size=25).map("".join)

_IMG = load_image(Image.new("RGB", (4, 4), "red"))
_SLOTS = {("t2i", "pointwise"): 1, ("edit", "pointwise"): 2, ("t2i", "pairwise"): 2, ("edit", "pairwise"): 3}


def _build(task: str, mode: str, request: str) -> list[dict]:
    images = [_IMG] if mode == "pointwise" else [_IMG, _IMG]
    return build_messages(task, mode, request, images, [_IMG] if task == "edit" else None)  # type: ignore[arg-type]


@SETTINGS
@given(request=REQUESTS, task=st.sampled_from(["t2i", "edit"]), mode=st.sampled_from(["pointwise", "pairwise"]))
def test_request_text_never_adds_an_image_slot_a_line_or_a_role(request: str, task: str, mode: str) -> None:
    ref = render_text(_build(task, mode, "a plain request"))
    try:
        messages = _build(task, mode, request)
    except PromptInputError as exc:
        # Refused only for a reason the text really has, and the reason is named.
        has_surrogate = any(0xD800 <= ord(c) <= 0xDFFF for c in request)
        assert ("lone surrogate" in str(exc)) == has_surrogate, str(exc)
        if not has_surrogate:
            assert "empty" in str(exc)
        return
    assert [m["role"] for m in messages] == [m["role"] for m in ref]
    assert len(message_images(messages)) == _SLOTS[(task, mode)]
    rendered = render_text(messages)
    for got, want in zip(rendered, ref, strict=True):
        assert got["content"].count("<image>") == want["content"].count("<image>")
        assert len(got["content"].splitlines()) == len(want["content"].splitlines()), "the request added a line"
        assert got["content"].count("<|") == want["content"].count("<|") == 0
        header_lines = [line for line in got["content"].splitlines() if line.lstrip().startswith("#")]
        want_headers = [line for line in want["content"].splitlines() if line.lstrip().startswith("#")]
        assert header_lines == want_headers
    user = rendered[-1]["content"]
    line = next(x for x in user.splitlines() if x.startswith("User Instruction: "))
    assert "<think>" not in line.lower() and "</think>" not in line.lower()


def test_the_default_templates_have_the_slots_the_properties_assume() -> None:
    ts = default_templates()
    for (task, mode), slots in _SLOTS.items():
        assert ts.text(task, mode).count("<image>") == slots
