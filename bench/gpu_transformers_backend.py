"""GPU benchmark: in-process transformers backend, batched vs one at a time (run on an H100).

Builds a randomly initialised full-size Qwen3-VL-8B configuration directly on the GPU in bf16 (no
weights are downloaded; the tokenizer/processor come from the tiny offline builder, configured
with the real image settings), wraps it with ``TransformersBackend.from_components`` and generates
critiques for 16 pointwise t2i prompts with an 896x896 image each (784 vision tokens):

* one at a time (16 calls of batch 1), and
* batched (one call of 16, left padding),

with a fixed number of new tokens (``min_new_tokens = max_new_tokens``) so both do equal work.
Prints decode tokens/s for each and the speed-up. ``--tiny`` runs the same code on the tiny model
on CPU as a smoke test.

    python bench/gpu_transformers_backend.py [--new-tokens 256] [--batch 16] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from PIL import Image


def full_size_config(tok_ids: dict[str, int], vocab: int):
    from transformers import Qwen3VLConfig

    # Qwen3-VL-8B-Instruct dimensions.
    return Qwen3VLConfig(
        text_config={
            "vocab_size": max(vocab, 151_936), "hidden_size": 4096, "intermediate_size": 12_288,
            "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "max_position_embeddings": 262_144, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 5_000_000, "mrope_section": [24, 20, 20],
                                "mrope_interleaved": True},
        },
        vision_config={
            "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "patch_size": 16,
            "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 4096,
            "deepstack_visual_indexes": [8, 16, 24], "num_position_embeddings": 2304,
        },
        **tok_ids,
    )


def main() -> None:
    import torch

    from rationalrewards.backends import SamplingParams
    from rationalrewards.backends.transformers_local import TransformersBackend
    from rationalrewards.critique.prompts import build_messages
    from rationalrewards.images import load_image
    from rationalrewards.testing import build_tiny_qwen3vl

    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test on the tiny model")
    args = ap.parse_args()

    from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen3VLForConditionalGeneration

    path = build_tiny_qwen3vl(tempfile.mkdtemp() + "/tiny")
    processor = AutoProcessor.from_pretrained(path)
    device = "cpu" if args.tiny else "cuda"
    if args.tiny:
        model = AutoModelForImageTextToText.from_pretrained(path)
        image_size = 128
    else:
        ip = processor.image_processor
        ip.size = {"shortest_edge": 65_536, "longest_edge": 16_777_216}
        tok = processor.tokenizer
        ids = {k: tok.convert_tokens_to_ids(t) for k, t in (
            ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
        cfg = full_size_config(ids, len(tok))
        t0 = time.perf_counter()
        with torch.device("cuda"):
            model = Qwen3VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
        print(f"random init of {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B params: "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        image_size = 896
    model.eval()
    gc = model.generation_config
    gc.min_new_tokens = args.new_tokens
    backend = TransformersBackend.from_components(model, processor, batch_size=args.batch)
    params = SamplingParams(temperature=0.0, max_tokens=args.new_tokens)
    convs = []
    for i in range(args.batch):
        img = load_image(Image.effect_noise((image_size, image_size), 20 + i).convert("RGB"))
        convs.append(build_messages("t2i", "pointwise", f"a photo number {i} of a red ball", [img]))
    backend.generate_batch(convs[:2], params)  # warm-up (kernels, allocator)

    def timed(fn):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        gens = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, gens

    t_single, singles = timed(lambda: [backend.generate_batch([c], params)[0] for c in convs])
    t_batch, batched = timed(lambda: backend.generate_batch(convs, params))
    tokens_single = sum(g.completion_tokens for g in singles)
    tokens_batch = sum(g.completion_tokens for g in batched)
    result = {
        "bench": "gpu_transformers_backend",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (tiny smoke test)",
        "model": "tiny" if args.tiny else "Qwen3-VL-8B config, random init, bf16",
        "requests": args.batch,
        "new_tokens_each": args.new_tokens,
        "prompt_tokens_each": singles[0].prompt_tokens,
        "one_at_a_time_s": round(t_single, 2),
        "batched_s": round(t_batch, 2),
        "tokens_per_s_one_at_a_time": round(tokens_single / t_single, 1),
        "tokens_per_s_batched": round(tokens_batch / t_batch, 1),
        "speedup": round((tokens_batch / t_batch) / (tokens_single / t_single), 2),
        "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device == "cuda" else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
