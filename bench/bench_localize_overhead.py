"""The CPU cost of localisation around the models (phrases, outputs), and the tiny-model path.

Real Grounding DINO / SAM checkpoints cannot be loaded offline, so their speed is not measured
here. Measured in one run:

1. noun-phrase extraction (the fallback) per justification;
2. parsing the judge's defect list per answer;
3. drawing the overlay and writing ``regions.json`` + masks for a 1024x1024 image with 6 regions;
4. ``localize_details`` end to end with tiny random Grounding DINO + SAM (models cached after the
   first call): the package's own overhead around two forward passes.

    .venv/bin/python bench/bench_localize_overhead.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from rationalrewards.localize.api import Localization, Region, write_localization
from rationalrewards.localize.defects import extract_noun_phrases, parse_defect_list

TEXTS = [
    "The man's body is mostly gone, but his shadow is still cast on the sand and a yellow smear remains where his "
    "legs were, so the removal is incomplete.",
    "The inpainted region has a repeated ripple pattern and a rectangular seam around the removed area, and the "
    "orphaned shadow breaks the physics of the scene.",
    "Several spokes of the rear wheel merge into the hub, and the chain does not wrap around the rear sprocket.",
]
ANSWER = "\n".join(
    f'{{"object": "object {i}", "problem": "broken", "dimension": "physical_quality"}}' for i in range(5)
)


def per_call_us(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    np_us = per_call_us(lambda: [extract_noun_phrases(t) for t in TEXTS], 300) / len(TEXTS)
    parse_us = per_call_us(lambda: parse_defect_list(ANSWER), 1000)
    print(f"noun phrases per justification   {np_us:9.1f} us")
    print(f"parse a 5-defect judge answer    {parse_us:9.1f} us")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        image = root / "big.png"
        # Photo-like content (a tinted gradient with mild noise), not pure noise: PNG cost depends on it.
        gradient = Image.linear_gradient("L").resize((1024, 1024)).convert("RGB")
        noise = Image.effect_noise((1024, 1024), 6).convert("RGB")
        Image.blend(Image.blend(gradient, Image.new("RGB", (1024, 1024), (200, 120, 40)), 0.5), noise, 0.2).save(image)
        regions = []
        for i in range(6):
            mask = Image.new("L", (1024, 1024), 0)
            box = (60 + 140 * i, 100 + 90 * i, 220 + 140 * i, 300 + 90 * i)
            ImageDraw.Draw(mask).ellipse(box, fill=255)
            regions.append(Region(f"defect {i}", "physical_quality", box, 0.5, mask=mask, mask_score=0.9))
        loc = Localization(regions, [], "given", (1024, 1024))
        t = time.perf_counter()
        for k in range(5):
            write_localization(loc, image, root / f"out{k}")
        write_ms = (time.perf_counter() - t) / 5 * 1e3
        print(f"overlay + regions.json + 6 masks {write_ms:9.1f} ms  (1024x1024)")

        t = time.perf_counter()
        from rationalrewards.localize import localize_details
        from rationalrewards.testing.tiny_detectors import build_tiny_grounding_dino, build_tiny_sam

        gd, sam = build_tiny_grounding_dino(root / "gd"), build_tiny_sam(root / "sam")
        setup_s = time.perf_counter() - t
        crit = {"task": "t2i", "scores": {"text_faithfulness": 2.0, "physical_quality": 1.5, "text_rendering": None},
                "justifications": {"text_faithfulness": TEXTS[0], "physical_quality": TEXTS[1]}}
        small = root / "small.png"
        Image.effect_noise((512, 512), 40).convert("RGB").save(small)
        kwargs = {"detector": str(gd), "segmenter": str(sam), "box_threshold": 0.0, "text_threshold": 0.0,
                  "device": "cpu"}
        t = time.perf_counter()
        localize_details(small, crit, **kwargs)
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        runs = 5
        for _ in range(runs):
            loc2 = localize_details(small, crit, **kwargs)
        warm_ms = (time.perf_counter() - t) / runs * 1e3
    print(f"import torch/transformers + build tiny models {setup_s:6.1f} s")
    print(f"tiny localize, first call (loads)  {first_s * 1e3:9.1f} ms")
    print(f"tiny localize, cached models       {warm_ms:9.1f} ms per 512x512 image ({len(loc2.regions)} regions)")


if __name__ == "__main__":
    main()
