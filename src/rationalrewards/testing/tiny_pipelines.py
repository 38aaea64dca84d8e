"""Tiny, randomly initialised diffusers pipelines for offline tests.

``build_tiny_flux(path)`` writes a :class:`diffusers.FluxPipeline` folder and
``build_tiny_flux_kontext(path)`` a :class:`diffusers.FluxKontextPipeline` folder (the edit
pipeline: it takes a source ``image=``). Both have the same *shape of files* as the real
``black-forest-labs/FLUX.1-dev`` / ``FLUX.1-Kontext-dev`` releases (``model_index.json``,
``transformer/``, ``vae/``, ``text_encoder/`` (CLIP), ``text_encoder_2/`` (T5), two tokenizers and
a flow-matching scheduler), so code that calls ``DiffusionPipeline.from_pretrained(PATH)`` on a
real checkpoint loads these the same way. Only the sizes differ: a few hundred thousand
parameters, a one-block VAE with no downsampling, and tokenizers trained here on a handful of
words (no hub access is needed at any point).

Typical use::

    from diffusers import DiffusionPipeline
    from rationalrewards.testing.tiny_pipelines import TINY_CALL_KWARGS, build_tiny_flux_cached

    pipe = DiffusionPipeline.from_pretrained(build_tiny_flux_cached())
    image = pipe("a red cat", generator=torch.Generator().manual_seed(0), **TINY_CALL_KWARGS["flux"]).images[0]

Sizes and speed (2-core CPU): a build takes well under a second after the imports, the folder is
~0.6 MB, and a 32x32 image with 2 denoising steps takes a fraction of a second. Because the VAE
does not downsample, the transformer sees (H/2)*(W/2) image tokens: keep images small (32-64 px).
Never call the Kontext pipeline with its default ``_auto_resize=True``: it resizes the source to
~1024 px, which is 262k tokens here; use ``TINY_CALL_KWARGS["flux-kontext"]``.

The weights are random: images are structured noise that depends on the seed (and, weakly, on the
prompt). Tests must check plumbing (shapes, seeding, saving, LoRA steps), never content. The
transformer's attention projections are named ``to_q``/``to_k``/``to_v``/``to_out.0`` as in the
real model, so ``transformer.add_adapter(LoraConfig(target_modules=[...]))`` works for RL tests.

Run ``python -m rationalrewards.testing.tiny_pipelines PATH [--kind flux|flux-kontext]`` to build
one from the command line. Only the standard library is imported at module level.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import uuid
from typing import Any

__all__ = [
    "BUILD_MARKER",
    "KINDS",
    "TINY_CALL_KWARGS",
    "build_tiny_flux",
    "build_tiny_flux_cached",
    "build_tiny_flux_kontext",
    "build_tiny_flux_kontext_cached",
    "build_tiny_pipeline",
    "build_tiny_pipeline_cached",
]

# Bump when the recipe changes so that stale cached builds are rebuilt rather than reused.
_BUILDER_VERSION = 1

#: Name of the JSON file recording the parameters a folder was built with; written last, so its
#: presence also means the build completed.
BUILD_MARKER = "rationalrewards_tiny_pipeline.json"

#: The pipeline kinds this module builds, and the diffusers class each one saves as.
KINDS: dict[str, str] = {"flux": "FluxPipeline", "flux-kontext": "FluxKontextPipeline"}

#: Call arguments that keep a tiny pipeline tiny and fast; merge them into ``pipe(...)`` calls.
#: ``max_sequence_length`` shortens the T5 padding (512 by default).
TINY_CALL_KWARGS: dict[str, dict[str, Any]] = {
    "flux": {"height": 32, "width": 32, "num_inference_steps": 2, "max_sequence_length": 32},
    "flux-kontext": {
        "height": 32,
        "width": 32,
        "max_area": 32 * 32,
        "_auto_resize": False,
        "num_inference_steps": 2,
        "max_sequence_length": 32,
    },
}

_REQUIRED_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "transformer/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "text_encoder_2/config.json",
    "tokenizer/tokenizer.json",
    "tokenizer_2/tokenizer.json",
)

# Words for the tokenizers: prompt-ish English plus the words the refinement tests steer with.
# Anything outside it still tokenises (CLIP falls back to bytes, T5 to characters).
_WORDS = """
a an the of on in with and or at to by from under over near next behind front left right top bottom
photo picture painting drawing illustration render image scene portrait close-up view shot style
red green blue yellow orange purple pink black white grey gray brown gold silver colour color colorful
bright brighter brightest dark darker darkest light lighter soft sharp vivid muted warm cool
cat cats dog dogs bird horse cow fish person man woman child people face hand hands eye eyes
car bike bicycle bus train boat plane house building tree trees flower flowers grass sky sun moon star
cloud clouds water sea river lake mountain road street city forest field beach snow rain table chair
cup bottle book sign text letters word words logo poster apple banana orange cake bread pizza ball
big small large tiny tall short round square old new happy sad sitting standing running flying
holding wearing reading says saying written make change add remove replace turn into keep same
background foreground center middle detailed realistic photorealistic high quality sharp focus
""".split()  # noqa: SIM905 - a word block reads better than a 200-item list

_T5_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()[]/&%+=*#@"


def _build_params(kind: str, seed: int) -> dict[str, Any]:
    import diffusers
    import tokenizers
    import torch
    import transformers

    return {
        "builder": "rationalrewards.testing.tiny_pipelines",
        "builder_version": _BUILDER_VERSION,
        "kind": kind,
        "seed": seed,
        # Random init and on-disk formats may change between releases; a cache built under other
        # versions is rebuilt rather than trusted to be identical.
        "diffusers_version": diffusers.__version__,
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "torch_version": torch.__version__.split("+")[0],
    }


def _is_complete_build(path: pathlib.Path, params: dict[str, Any]) -> bool:
    try:
        recorded = json.loads((path / BUILD_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if recorded.get("params") != params:
        return False
    return all((path / name).is_file() for name in _REQUIRED_FILES)


def _clip_tokenizer() -> Any:
    """A byte-level BPE with CLIP's ``</w>`` end-of-word suffix, wrapped as ``CLIPTokenizer``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    # CLIP's layout: start/end tokens first, then every byte symbol both inside a word and at its
    # end, so any text encodes without unknown tokens; merges learnt on _WORDS come after.
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in alphabet:
        vocab.setdefault(symbol, len(vocab))
    for symbol in alphabet:
        vocab.setdefault(symbol + "</w>", len(vocab))
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=len(vocab) + 400,
        min_frequency=1,
        end_of_word_suffix="</w>",
        initial_alphabet=alphabet,
        show_progress=False,
    )
    bpe.train_from_iterator([" ".join(_WORDS)] * 2, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in state["merges"]]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    # model_max_length must be CLIP's 77: the pipeline pads and truncates to it.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _t5_tokenizer() -> Any:
    """A Unigram piece/score list (T5's layout: pad 0, eos 1, unk 2), wrapped as ``T5Tokenizer``."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    seen = {p for p, _ in pieces}
    for word in _WORDS:
        for piece in ("▁" + word, word):
            if piece not in seen:
                seen.add(piece)
                pieces.append((piece, -5.0))
    for ch in _T5_CHARS:
        for piece, score in (("▁" + ch, -9.0), (ch, -8.0)):
            if piece not in seen:
                seen.add(piece)
                pieces.append((piece, score))
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _write_pipeline(out: pathlib.Path, kind: str, seed: int) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    tokenizer = _clip_tokenizer()
    tokenizer_2 = _t5_tokenizer()
    # fork_rng: seeding the global generator would silently change the caller's randomness.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # The sizes of diffusers' own tiny-Flux test components: joint_attention_dim is T5's
        # width, pooled_projection_dim CLIP's, in_channels = 4 * latent_channels (2x2 packing).
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                hidden_size=32,
                intermediate_size=37,
                layer_norm_eps=1e-5,
                num_attention_heads=4,
                num_hidden_layers=2,
                vocab_size=len(tokenizer),
                hidden_act="gelu",
                projection_dim=32,
                max_position_embeddings=77,
            )
        )
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                d_model=32,
                d_ff=37,
                d_kv=8,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
                feed_forward_proj="relu",
                is_encoder_decoder=False,
                use_cache=False,
            )
        )
        vae = AutoencoderKL(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=1,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        )
    cls = FluxKontextPipeline if kind == "flux-kontext" else FluxPipeline
    pipe = cls(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipe.save_pretrained(out)


def build_tiny_pipeline(
    kind: str, path: str | os.PathLike[str], *, seed: int = 0, overwrite: bool = False
) -> pathlib.Path:
    """Build a tiny random diffusers pipeline of ``kind`` (see :data:`KINDS`) in ``path``.

    The same ``kind``, ``seed`` and library versions give identical weights. An existing complete
    build with the same parameters is reused (returned untouched) unless ``overwrite``. The
    folder is written to a sibling temporary folder and renamed into place, so a crash never
    leaves a half-written pipeline and concurrent builders never see one.

    Raises:
        ValueError: unknown ``kind``.
        FileExistsError: ``path`` is a non-empty folder not made by this module and ``overwrite``
            is false; it is never deleted in that case.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tiny pipeline kind {kind!r}; expected one of {', '.join(KINDS)}")
    path = pathlib.Path(path).expanduser()
    params = _build_params(kind, seed)
    if not overwrite and _is_complete_build(path, params):
        return path
    if not overwrite and path.is_dir() and any(path.iterdir()) and not (path / BUILD_MARKER).is_file():
        raise FileExistsError(f"{path} is not empty and was not built by tiny_pipelines; pass overwrite=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_pipeline(tmp, kind, seed)
        (tmp / BUILD_MARKER).write_text(json.dumps({"params": params}, indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")
        if path.exists():
            if not overwrite and _is_complete_build(path, params):
                return path  # another process finished the same build meanwhile
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        try:
            os.replace(tmp, path)
        except OSError:
            if _is_complete_build(path, params):  # lost a rename race to an identical build
                return path
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def build_tiny_flux(path: str | os.PathLike[str], *, seed: int = 0, overwrite: bool = False) -> pathlib.Path:
    """A tiny random text-to-image ``FluxPipeline`` in ``path`` (see :func:`build_tiny_pipeline`)."""
    return build_tiny_pipeline("flux", path, seed=seed, overwrite=overwrite)


def build_tiny_flux_kontext(path: str | os.PathLike[str], *, seed: int = 0, overwrite: bool = False) -> pathlib.Path:
    """A tiny random edit pipeline (``FluxKontextPipeline``, takes ``image=``) in ``path``."""
    return build_tiny_pipeline("flux-kontext", path, seed=seed, overwrite=overwrite)


def build_tiny_pipeline_cached(kind: str, cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Build the default tiny pipeline of ``kind`` once under a cache folder and return its path.

    The folder is ``<root>/tiny-<kind>`` with ``root`` = ``cache_dir`` or
    ``$RATIONALREWARDS_CACHE`` or ``~/.cache/rationalrewards``. Later calls (from any process)
    return the existing build; a build from an older recipe or other library versions is replaced.
    """
    from .tiny_models import default_cache_root

    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    return build_tiny_pipeline(kind, root / f"tiny-{kind}")


def build_tiny_flux_cached(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """:func:`build_tiny_pipeline_cached` for ``flux``."""
    return build_tiny_pipeline_cached("flux", cache_dir)


def build_tiny_flux_kontext_cached(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """:func:`build_tiny_pipeline_cached` for ``flux-kontext``."""
    return build_tiny_pipeline_cached("flux-kontext", cache_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m rationalrewards.testing.tiny_pipelines PATH [--kind K] [--seed N] [--overwrite]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m rationalrewards.testing.tiny_pipelines",
        description="Build a tiny random diffusers pipeline for offline tests and print its path.",
    )
    parser.add_argument("path", help="output folder")
    parser.add_argument("--kind", choices=sorted(KINDS), default="flux")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if an identical build exists")
    args = parser.parse_args(argv)
    print(build_tiny_pipeline(args.kind, args.path, seed=args.seed, overwrite=args.overwrite).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
