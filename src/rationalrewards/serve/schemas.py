"""Request and response bodies of the reward server (the JSON contract of ``rationalrewards serve``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..critique.schema import CompareResult, CritiqueResult

# Longer prompts are not generation prompts (and would cost the judge a long prefill each).
MAX_PROMPT_CHARS = 16_000
MAX_ID_CHARS = 1_024

ImageField = Field(
    description="The image bytes as plain base64 or a data: URL (data:image/png;base64,...). "
    "URLs and file paths are refused: the server never fetches or opens them."
)


class RewardItem(BaseModel):
    """One image (t2i) or one edit (with ``source``) to critique."""

    model_config = ConfigDict(extra="forbid")

    # The id's length is checked by the server, not here: pydantic's max_length would refuse an
    # id holding a lone surrogate, which the server instead echoes back as a JSON escape.
    id: str | None = Field(default=None, description=f"Echoed back as the result's id (at most {MAX_ID_CHARS} "
                                                     "characters).")
    prompt: str = Field(description="The generation prompt, or the edit instruction (at most "
                                    f"{MAX_PROMPT_CHARS} characters; a longer, empty or non-Unicode prompt fails its "
                                    "item with error_kind 'input').")
    image: str = ImageField
    source: str | list[str] | None = Field(
        default=None, description="Source image(s) of an edit (base64 or data: URL); absent for t2i."
    )


class RewardRequest(BaseModel):
    """``POST /v1/reward``."""

    model_config = ConfigDict(extra="forbid")

    items: list[RewardItem]
    scores_only: bool | None = Field(
        default=None,
        description="Stop the judge before the refinement tail (fewer decode tokens, no refined_request). "
        "Default: the server's --scores-only setting.",
    )


class CompareItem(BaseModel):
    """Two images (or two edits of the same source) to compare."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, description=f"Echoed back (at most {MAX_ID_CHARS} characters).")
    prompt: str
    image_a: str = ImageField
    image_b: str = ImageField
    source: str | list[str] | None = None


class CompareRequest(BaseModel):
    """``POST /v1/compare``."""

    model_config = ConfigDict(extra="forbid")

    items: list[CompareItem]
    mode: Literal["pairwise", "pointwise"] = "pairwise"
    swap: bool = Field(default=False, description="Also judge B-vs-A; a verdict that flips becomes a tie.")
    tie_tolerance: float | None = Field(default=None, ge=0.0)


class RewardResponse(BaseModel):
    """Critique results, in the order of the request's items."""

    results: list[CritiqueResult]


class CompareResponse(BaseModel):
    """Comparison results, in the order of the request's items."""

    results: list[CompareResult]


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer."""

    error: str = Field(description="What was wrong, naming the field or limit.")
    kind: str = Field(description="auth | too_large | too_many_items | too_many_images | image_too_large | "
                                  "too_many_pixels | busy | bad_json | unsupported_media_type | invalid | "
                                  "server_error")
    details: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Per-field problems: loc (path in the body), msg, and for limits the item index, "
                    "the limit's name and value.")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    model: dict[str, Any]
    limits: dict[str, Any]
    in_flight_requests: int


def text_problem(value: str, field: str, max_chars: int = MAX_PROMPT_CHARS) -> str | None:
    """Why ``value`` cannot be sent to a judge as text, or None when it can.

    Empty text, and text over ``max_chars``, is refused too. JSON lets a client send an unpaired surrogate (``"\\ud800"``) or a NUL character; neither can
    be encoded as UTF-8 for the judge (or is a sign of binary garbage), so the item fails with
    this reason. The message names the field and position but never repeats the text itself.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        return (f"{field}: contains an unpaired surrogate (U+{code:04X}) at character {exc.start}; "
                "send valid Unicode text")
    if not value.strip():
        return f"{field}: is empty; send the generation prompt or the edit instruction"
    if len(value) > max_chars:
        return f"{field}: is {len(value)} characters long, over the limit of {max_chars}"
    nul = value.find("\x00")
    if nul >= 0:
        return f"{field}: contains a NUL character at character {nul}; send text, not binary data"
    return None
