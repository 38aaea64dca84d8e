"""More random diffusers pipelines for the RL trainer's tests and benchmarks (offline).

* :func:`build_tiny_sd3` / :func:`build_tiny_sd3_cached`: a tiny ``StableDiffusion3Pipeline``
  folder (two CLIP encoders with projection + T5, a 1-layer SD3 transformer, a VAE with no
  downsampling), shaped like ``stabilityai/stable-diffusion-3.5-medium``.
* :func:`build_tiny_qwen_image` / :func:`build_tiny_qwen_image_edit` (and ``_cached``): tiny
  ``QwenImagePipeline`` and ``QwenImageEditPlusPipeline`` folders (a 2-layer Qwen-Image
  transformer, a 3-level Qwen-Image VAE, a tiny Qwen2.5-VL text encoder with the BPE tokenizer of
  :mod:`rationalrewards.testing.tiny_models`, and for edits a Qwen2-VL processor with a tiny
  pixel budget), sized like diffusers' own tests of those pipelines.
* :func:`random_flux_pipeline`: an in-memory ``FluxPipeline`` of any width and depth with a
  real-shaped VAE (8x downsampling, 16 latent channels), for step-time and memory measurements
  on a GPU. Its text encoders and tokenizers are the tiny ones of
  :func:`~rationalrewards.testing.tiny_pipelines.build_tiny_flux_cached` (text encoding is not
  what the trainer's step time is about).

Weights are random; only plumbing and cost can be measured with them. The tokenizers come from
:mod:`rationalrewards.testing.tiny_pipelines`. Only the standard library is imported at module level.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import uuid
from typing import Any

__all__ = [
    "build_tiny_qwen_image",
    "build_tiny_qwen_image_cached",
    "build_tiny_qwen_image_edit",
    "build_tiny_qwen_image_edit_cached",
    "build_tiny_sd3",
    "build_tiny_sd3_cached",
    "random_flux_pipeline",
]

_BUILDER_VERSION = 1
_MARKER = "rationalrewards_tiny_pipeline.json"


def _params(seed: int, kind: str = "sd3") -> dict[str, Any]:
    import diffusers
    import torch
    import transformers

    return {"builder": "rationalrewards.testing.tiny_pipelines_rl", "version": _BUILDER_VERSION, "kind": kind,
            "seed": seed, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0]}


def _write_sd3(out: pathlib.Path, seed: int) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from .tiny_pipelines import _clip_tokenizer, _t5_tokenizer

    tok = _clip_tokenizer()
    tok_3 = _t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Sizes of diffusers' own tiny SD3 test: pooled = 2 x CLIP projection, joint = T5 width.
        transformer = SD3Transformer2DModel(
            sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
            caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4,
        )

        def clip() -> Any:
            return CLIPTextModelWithProjection(CLIPTextConfig(
                bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tok),
                hidden_act="gelu", projection_dim=32, max_position_embeddings=77,
            ))

        text_encoder, text_encoder_2 = clip(), clip()
        text_encoder_3 = T5EncoderModel(T5Config(
            vocab_size=len(tok_3), d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
            feed_forward_proj="relu", is_encoder_decoder=False, use_cache=False,
        ))
        vae = AutoencoderKL(
            sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
            latent_channels=4, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
            shift_factor=0.0609, scaling_factor=1.5035,
        )
    pipe = StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae, transformer=transformer,
        text_encoder=text_encoder, tokenizer=tok, text_encoder_2=text_encoder_2, tokenizer_2=tok,
        text_encoder_3=text_encoder_3, tokenizer_3=tok_3,
    )
    pipe.save_pretrained(out)


# Prompts of the trainer's tests and the pipelines' own templates: the tiny BPE vocabulary learns
# their merges, so they encode to a few tokens each.
_QWEN_CORPUS = [
    "a red cat", "a blue dog", "a green tree", "a yellow sun", "a white house", "a road", "make it green",
    "make it grey", "add a hat", "Picture 1: ", "Picture 2: ", "Picture 3: ",
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of "
    "the objects and background:",
    "Describe the key features of the input image (color, shape, size, texture, objects, background), then "
    "explain how the user's text instruction should alter or modify the image.",
]


def _write_qwen(out: pathlib.Path, seed: int, edit: bool) -> None:
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPlusPipeline,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    from .tiny_models import _train_tokenizer

    tok = _train_tokenizer(_QWEN_CORPUS * 4, 400)
    ids = tok.convert_tokens_to_ids
    special = {"bos_token_id": None, "eos_token_id": ids("<|im_end|>"), "pad_token_id": ids("<|endoftext|>")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = QwenImageTransformer2DModel(
            patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=3,
            joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
        )
        z = 4
        vae = AutoencoderKLQwenImage(base_dim=z * 6, z_dim=z, dim_mult=[1, 2, 4], num_res_blocks=1,
                                     temperal_downsample=[False, True], latents_mean=[0.0] * z, latents_std=[1.0] * z)
        text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
            text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "num_key_value_heads": 2, "vocab_size": len(tok), "rope_theta": 1e6,
                         "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                         **special},
            vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                           "out_hidden_size": 16},
            hidden_size=16, vocab_size=len(tok), vision_start_token_id=ids("<|vision_start|>"),
            vision_end_token_id=ids("<|vision_end|>"), vision_token_id=ids("<|vision_pad|>"),
            image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"), **special,
        ))
    # Dynamic shifting as in Qwen-Image's scheduler, with sequence bounds that fit tiny images.
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                                base_image_seq_len=16, max_image_seq_len=256)
    if edit:
        # Qwen2.5-VL's vision tower sees each source at 28x28 to 56x56 pixels (a handful of tokens).
        budget = {"min_pixels": 28 * 28, "max_pixels": 56 * 56}
        processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**budget), tokenizer=tok,
                                     video_processor=Qwen2VLVideoProcessor(**budget))
        pipe: Any = QwenImageEditPlusPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tok,
                                              processor=processor, transformer=transformer)
    else:
        pipe = QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tok,
                                 transformer=transformer)
    pipe.save_pretrained(out)


_WRITERS = {
    "sd3": lambda out, seed: _write_sd3(out, seed),
    "qwen-image": lambda out, seed: _write_qwen(out, seed, edit=False),
    "qwen-image-edit": lambda out, seed: _write_qwen(out, seed, edit=True),
}


def _build(kind: str, path: str | os.PathLike[str], seed: int, overwrite: bool) -> pathlib.Path:
    path = pathlib.Path(path).expanduser()
    params = _params(seed, kind)
    marker = path / _MARKER
    if not overwrite and marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("params") == params:
                return path
        except ValueError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _WRITERS[kind](tmp, seed)
        (tmp / _MARKER).write_text(json.dumps({"params": params}, indent=2) + "\n", encoding="utf-8")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> pathlib.Path:
    from .tiny_models import default_cache_root

    return pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()


def build_tiny_sd3(path: str | os.PathLike[str], *, seed: int = 0, overwrite: bool = False) -> pathlib.Path:
    """A tiny random ``StableDiffusion3Pipeline`` in ``path`` (reused when already built with the
    same seed and library versions; written to a temporary sibling and renamed into place)."""
    return _build("sd3", path, seed, overwrite)


def build_tiny_sd3_cached(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """:func:`build_tiny_sd3` once under ``cache_dir`` / ``$RATIONALREWARDS_CACHE`` / ``~/.cache/rationalrewards``."""
    return build_tiny_sd3(_cache_root(cache_dir) / "tiny-sd3")


def build_tiny_qwen_image(path: str | os.PathLike[str], *, seed: int = 0, overwrite: bool = False) -> pathlib.Path:
    """A tiny random ``QwenImagePipeline`` in ``path`` (reused like :func:`build_tiny_sd3`)."""
    return _build("qwen-image", path, seed, overwrite)


def build_tiny_qwen_image_cached(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """:func:`build_tiny_qwen_image` once under the cache folder."""
    return build_tiny_qwen_image(_cache_root(cache_dir) / "tiny-qwen-image")


def build_tiny_qwen_image_edit(path: str | os.PathLike[str], *, seed: int = 0,
                               overwrite: bool = False) -> pathlib.Path:
    """A tiny random ``QwenImageEditPlusPipeline`` in ``path`` (reused like :func:`build_tiny_sd3`)."""
    return _build("qwen-image-edit", path, seed, overwrite)


def build_tiny_qwen_image_edit_cached(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """:func:`build_tiny_qwen_image_edit` once under the cache folder."""
    return build_tiny_qwen_image_edit(_cache_root(cache_dir) / "tiny-qwen-image-edit")


def random_flux_pipeline(
    *,
    num_layers: int = 4,
    num_single_layers: int = 8,
    num_attention_heads: int = 24,
    attention_head_dim: int = 128,
    vae_channels: tuple[int, ...] = (128, 256, 512, 512),
    latent_channels: int = 16,
    guidance_embeds: bool = True,
    seed: int = 0,
    dtype: Any = None,
    device: Any = None,
) -> Any:
    """An in-memory ``FluxPipeline`` with a random transformer of the given size.

    Defaults: FLUX.1-dev's width (24 heads x 128) with 4 double and 8 single blocks (~2.5B
    parameters instead of 12B) and a FLUX-shaped VAE (8x downsampling, 16 channels). The
    transformer is built directly on ``device`` in ``dtype`` when given.
    """
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer

    from .tiny_pipelines import build_tiny_flux_cached

    tiny = build_tiny_flux_cached()
    dtype = dtype or torch.float32
    text_encoder = CLIPTextModel.from_pretrained(tiny / "text_encoder", torch_dtype=dtype)
    text_encoder_2 = T5EncoderModel.from_pretrained(tiny / "text_encoder_2", torch_dtype=dtype)
    tokenizer = CLIPTokenizer.from_pretrained(tiny / "tokenizer")
    tokenizer_2 = T5Tokenizer.from_pretrained(tiny / "tokenizer_2")
    n_blocks = len(vae_channels)
    previous_default = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Built directly in dtype on device: no float32 copy of a multi-billion-parameter model.
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device or "cpu"):
                transformer = FluxTransformer2DModel(
                    patch_size=1, in_channels=4 * latent_channels, num_layers=num_layers,
                    num_single_layers=num_single_layers, attention_head_dim=attention_head_dim,
                    num_attention_heads=num_attention_heads, joint_attention_dim=text_encoder_2.config.d_model,
                    pooled_projection_dim=text_encoder.config.projection_dim, guidance_embeds=guidance_embeds,
                    axes_dims_rope=_rope_axes(attention_head_dim),
                )
                vae = AutoencoderKL(
                    in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=tuple(vae_channels),
                    down_block_types=("DownEncoderBlock2D",) * n_blocks, up_block_types=("UpDecoderBlock2D",) * n_blocks,
                    layers_per_block=2 if vae_channels[0] >= 32 else 1, norm_num_groups=min(32, vae_channels[0]),
                    use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
                )
        finally:
            torch.set_default_dtype(previous_default)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2, transformer=transformer,
    )


def _rope_axes(head_dim: int) -> list[int]:
    """FLUX splits each head's rotary dims over (index, y, x) as 16/56/56 of 128; keep that shape."""
    if head_dim == 128:
        return [16, 56, 56]
    first = max(2, (head_dim // 8) // 2 * 2)
    rest = (head_dim - first) // 2 // 2 * 2
    return [head_dim - 2 * rest, rest, rest]
