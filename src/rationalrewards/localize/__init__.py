"""Defect localisation: turn a critique into boxes and masks on the image.

The judge is asked a follow-up for a short structured list of concrete defects (or, without a
judge, noun phrases are taken from the justifications of low-scoring dimensions); Grounding DINO
finds each phrase and SAM segments each box::

    from rationalrewards.localize import localize_details, write_localization

    loc = localize_details("bike.png", critique, judge=rm)
    write_localization(loc, "bike.png", "regions/")   # regions.json, masks/*.png, overlay.png

Attributes are imported lazily: ``import rationalrewards.localize`` loads neither torch nor
transformers, and the models themselves load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .api import (
        Localization,
        Region,
        alocalize_details,
        attach_regions,
        draw_overlay,
        localize,
        localize_details,
        write_localization,
    )
    from .defects import Defect, extract_noun_phrases, fallback_defects, parse_defect_list
    from .detect import (
        DEFAULT_DETECTOR,
        DEFAULT_SEGMENTER,
        GroundingDinoDetector,
        ModelLoadError,
        SamSegmenter,
    )

_LAZY = {
    "Localization": ".api",
    "Region": ".api",
    "alocalize_details": ".api",
    "attach_regions": ".api",
    "draw_overlay": ".api",
    "localize": ".api",
    "localize_details": ".api",
    "write_localization": ".api",
    "Defect": ".defects",
    "extract_noun_phrases": ".defects",
    "fallback_defects": ".defects",
    "parse_defect_list": ".defects",
    "DEFAULT_DETECTOR": ".detect",
    "DEFAULT_SEGMENTER": ".detect",
    "GroundingDinoDetector": ".detect",
    "ModelLoadError": ".detect",
    "SamSegmenter": ".detect",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_SEGMENTER",
    "Defect",
    "GroundingDinoDetector",
    "Localization",
    "ModelLoadError",
    "Region",
    "SamSegmenter",
    "alocalize_details",
    "attach_regions",
    "draw_overlay",
    "extract_noun_phrases",
    "fallback_defects",
    "localize",
    "localize_details",
    "parse_defect_list",
    "write_localization",
]
