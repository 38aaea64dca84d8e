"""Vision tokens per request for a 2048x2048 image, with and without the default pixel cap.

Runs the real ``Qwen2VLImageProcessor`` (the image processor family of Qwen3-VL) configured as
Qwen3-VL-8B-Instruct ships it (patch 16, spatial merge 2, pixel range 65,536-16,777,216 as in its
preprocessor config), once on the raw image and once on the image after our intake
(``load_image``, default cap 802,816 pixels = the released models' training cap). Vision tokens =
grid t*h*w / merge**2, i.e. what the language model actually attends over.

    .venv/bin/python bench/bench_vision_tokens.py
"""

from __future__ import annotations

import json
import time

from PIL import Image

from rationalrewards.images import DEFAULT_MAX_PIXELS, load_image


def vision_tokens(processor, image: Image.Image) -> tuple[int, tuple[int, ...], float]:
    t0 = time.perf_counter()
    out = processor(images=[image], return_tensors="pt")
    elapsed = time.perf_counter() - t0
    t, h, w = (int(x) for x in out["image_grid_thw"][0])
    return t * h * w // (processor.merge_size**2), (t, h, w), elapsed


def main() -> None:
    from transformers import Qwen2VLImageProcessor

    processor = Qwen2VLImageProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": 65_536, "longest_edge": 16_777_216},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    raw = Image.effect_noise((2048, 2048), 40).convert("RGB")
    uncapped, grid_u, t_u = vision_tokens(processor, raw)
    capped_img = load_image(raw).image
    capped, grid_c, t_c = vision_tokens(processor, capped_img)
    result = {
        "bench": "vision_tokens",
        "input": "2048x2048",
        "cap_pixels": DEFAULT_MAX_PIXELS,
        "tokens_uncapped": uncapped,
        "tokens_capped": capped,
        "capped_size": list(capped_img.size),
        "grid_uncapped": grid_u,
        "grid_capped": grid_c,
        "token_ratio_uncapped_over_capped": round(uncapped / capped, 2),
        "preprocess_ms_uncapped": round(1000 * t_u, 1),
        "preprocess_ms_capped": round(1000 * t_c, 1),
    }
    print(f"2048x2048 image -> {uncapped} vision tokens uncapped, {capped} with the {DEFAULT_MAX_PIXELS:,}-pixel cap "
          f"({result['token_ratio_uncapped_over_capped']}x fewer)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
