"""Where the next request comes from, and the guard that keeps it on the user's intent.

Two sources of refined requests:

* the critic itself: the released checkpoints end every pointwise critique with
  ``## Refined Request:`` (:class:`~rationalrewards.critique.schema.CritiqueResult.refined_request`);
* a separate *refiner* model (any chat backend) given the original request, the request that
  produced the best image so far and that image's critique: :class:`Refiner`.

Whatever the source, a proposal is checked by :func:`intent_overlap`: the share of the original
request's content words that the proposal still contains. Below the threshold the proposal is
*anchored*: the original request is put back in front of it (:func:`anchor_request`), so a
rewrite can add detail but never silently drop what the user asked for. Images are always judged
against the original request in any case; this guard only keeps the generator on track.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..backends import Backend, SamplingParams

# Function words and filler carry no intent; everything else in the original request does.
_STOPWORDS = frozenset(
    """
    a an the of on in at to by for from with without and or but nor so as is are was were be been being
    this that these those it its into onto over under than then there here their them they he she his her
    we our you your i me my very really quite just please also some any each every all both either
    can could should would will shall may might must do does did done make makes made let lets
    image picture photo shot render rendering generate generated create show showing shown
    """.split()  # noqa: SIM905 - a word block reads better than a 100-item list
)


def content_words(text: str) -> set[str]:
    """Lower-cased content words of ``text`` (stopwords dropped, a plural ``s`` folded)."""
    words = re.findall(r"[a-z0-9]+", (text or "").lower())
    out = set()
    for w in words:
        if w in _STOPWORDS or (len(w) < 3 and not w.isdigit()):
            continue
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.add(w)
    return out


def intent_overlap(original: str, proposal: str) -> float:
    """Share of ``original``'s content words found in ``proposal`` (1.0 when it has none)."""
    wanted = content_words(original)
    if not wanted:
        return 1.0
    return len(wanted & content_words(proposal)) / len(wanted)


def anchor_request(original: str, proposal: str) -> str:
    """The original request followed by the proposal: the user's words come first and stay."""
    head = original.strip().rstrip(".")
    tail = proposal.strip()
    if not tail or tail.lower().startswith(head.lower()):
        return tail or original.strip()
    return f"{head}. {tail}"


def clean_request(text: str | None) -> str | None:
    """Normalise a proposed request: one line, no quotes/markdown wrapping; None if empty."""
    if text is None:
        return None
    out = re.sub(r"<think>.*?</think>", " ", text, flags=re.DOTALL | re.IGNORECASE)
    out = re.sub(r"\s+", " ", out).strip()
    out = out.strip("*_` ").strip()
    if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'“”":
        out = out[1:-1].strip()
    out = out.strip("“”").strip()
    return out or None


@dataclass
class GuardedRequest:
    """A proposal after the drift guard: what will be sent, and why."""

    request: str
    anchored: bool
    overlap: float
    proposal: str


def guard_request(original: str, proposal: str, min_overlap: float) -> GuardedRequest:
    """Apply the drift guard: anchor ``proposal`` when it keeps too little of ``original``."""
    overlap = intent_overlap(original, proposal)
    if min_overlap > 0 and overlap < min_overlap:
        return GuardedRequest(anchor_request(original, proposal), True, overlap, proposal)
    return GuardedRequest(proposal, False, overlap, proposal)


# ------------------------------------------------------------------------------------------------
# A separate refiner model
# ------------------------------------------------------------------------------------------------

_SYSTEM = {
    "t2i": (
        "You improve prompts for a text-to-image model. You are given the user's original request, "
        "the prompt that produced the best image so far, and an expert critique of that image. Write "
        "one new prompt that fixes the problems the critique points out. Keep everything the user asked "
        "for: the same subjects, counts, attributes, any text to be written, and the style. Do not add "
        "new subjects and do not change what the user wants; make it more explicit and concrete instead. "
        "Reply with a single line that starts with 'Refined request:'."
    ),
    "edit": (
        "You improve instructions for an image-editing model. You are given the user's original "
        "instruction, the instruction that produced the best edit so far, and an expert critique of that "
        "edit. Write one new instruction that fixes the problems the critique points out. Ask for the same "
        "change as the user, state what must stay untouched, and do not request other changes. Reply with "
        "a single line that starts with 'Refined request:'."
    ),
}


def _critique_lines(critique: dict[str, Any]) -> list[str]:
    from ..critique.dimensions import BY_KEY

    lines = []
    scores = critique.get("scores") or {}
    justs = critique.get("justifications") or {}
    for key, score in scores.items():
        if key not in BY_KEY or (score is None and not justs.get(key)):
            continue
        shown = "N/A" if score is None else f"{float(score):.1f}/4"
        just = re.sub(r"\s+", " ", str(justs.get(key) or "")).strip()
        lines.append(f"- {BY_KEY[key].header} ({shown}): {just}".rstrip(": "))
    for label, field in (("Summary", "summary"), ("Critic's advice", "refinement_comments"),
                         ("Critic's own rewrite", "refined_request")):
        value = critique.get(field)
        if value:
            flat = re.sub(r"\s+", " ", str(value)).strip()
            lines.append(f"{label}: {flat}")
    return lines


def refiner_messages(task: str, original: str, current: str, critique: dict[str, Any]) -> list[dict[str, Any]]:
    """Chat messages asking a refiner model for the next request (text only)."""
    reward = critique.get("reward")
    head = "Critique of the best image so far" + (f" (reward {float(reward):.2f} of 1)" if reward is not None else "")
    user = "\n".join(
        [
            f"Original request: {original.strip()}",
            f"Prompt that produced the best image so far: {current.strip()}",
            f"{head}:",
            *_critique_lines(critique),
            "",
            "Write the improved request now.",
        ]
    )
    return [{"role": "system", "content": _SYSTEM.get(task, _SYSTEM["t2i"])}, {"role": "user", "content": user}]


def parse_refiner_answer(text: str | None) -> str | None:
    """The request in a refiner answer: what follows the last ``Refined request:``, else the text."""
    if not text:
        return None
    body = re.sub(r"<think>.*?</think>", " ", text, flags=re.DOTALL | re.IGNORECASE)
    matches = list(re.finditer(r"refined\s+(?:request|prompt|instruction)\s*\**\s*:\s*\**", body, flags=re.IGNORECASE))
    if matches:
        body = body[matches[-1].end():]
    return clean_request(body)


@dataclass
class RefinerAnswer:
    """A refiner call's outcome; ``request`` is None exactly when it failed (``error`` says why)."""

    request: str | None
    error: str | None = None
    raw: str = ""


class Refiner:
    """A chat model that turns (original request, current request, critique) into a new request.

    Args:
        backend: any :class:`~rationalrewards.backends.Backend` (OpenAI-compatible server or
            in-process transformers).
        sampling: sampling for the refiner (default temperature 0.3, 1024 tokens).
    """

    def __init__(self, backend: Backend, *, sampling: SamplingParams | None = None):
        self.backend = backend
        self.sampling = sampling or SamplingParams(temperature=0.3, max_tokens=1024)

    @classmethod
    def from_options(cls, sampling: SamplingParams | None = None, **options: Any) -> Refiner:
        """Build from backend options (``base_url``, ``model``, ``api_key``, ... as for the critic)."""
        from ..backends import backend_from_options

        return cls(backend_from_options(**options), sampling=sampling)

    async def arefine(self, task: str, original: str, current: str, critique: dict[str, Any]) -> RefinerAnswer:
        gen = await self.backend.agenerate(refiner_messages(task, original, current, critique), self.sampling)
        if not gen.ok:
            return RefinerAnswer(None, f"refiner backend failed: {gen.error}")
        request = parse_refiner_answer(gen.text)
        if request is None:
            return RefinerAnswer(None, "refiner answered with no request", raw=gen.text or "")
        return RefinerAnswer(request, raw=gen.text or "")

    def describe(self) -> dict[str, Any]:
        return self.backend.describe()

    async def aclose(self) -> None:
        await self.backend.aclose()
