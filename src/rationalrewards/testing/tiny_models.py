"""Tiny, randomly initialised Qwen3-VL checkpoints for offline tests.

The checkpoint written here has the same *shape of files* as a real Qwen3-VL release
(``config.json``, ``model.safetensors``, ``generation_config.json``, tokenizer files, image/video
processor configs and a ``chat_template.jinja``), so code that loads
``Qwen/Qwen3-VL-8B-Instruct`` with ``AutoProcessor`` / ``AutoModelForImageTextToText`` loads it the
same way, and servers such as ``transformers serve`` accept its folder. Only the sizes differ: a few
hundred thousand parameters, a 512-token byte-level BPE vocabulary and images capped at a handful of
visual tokens, so building takes about a second and generation runs on a CPU.

The weights are random: the model emits gibberish. Tests must check plumbing (shapes, padding,
stop strings, parsing fallbacks), never content.

Run ``python -m rationalrewards.testing.tiny_models PATH`` to build one from the command line.

Only the standard library is imported at module level; torch, tokenizers and transformers are
imported inside the functions so that importing :mod:`rationalrewards.testing` stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import shutil
import sys
import uuid
from collections.abc import Iterable
from typing import Any

__all__ = [
    "BUILD_MARKER",
    "QWEN3VL_CHAT_TEMPLATE",
    "build_tiny_qwen3vl",
    "build_tiny_qwen3vl_cached",
    "default_cache_root",
]

# Bump when the recipe changes so that stale cached builds are rebuilt rather than reused.
_BUILDER_VERSION = 1

#: Name of the JSON file recording the parameters a folder was built with; written last, so its
#: presence also means the build completed.
BUILD_MARKER = "rationalrewards_tiny_model.json"

# Files whose absence means a folder is not a usable build even if a marker is present
# (e.g. someone deleted the weights by hand).
_REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "processor_config.json",
    "chat_template.jinja",
)

# The Qwen3-VL added tokens, in the real checkpoint's order (ids 151643..151668 there, directly after
# the BPE vocabulary here) and with its `special` flags: `<think>` / `<tool_call>` are *not* special
# in Qwen3, so `skip_special_tokens=True` keeps them, which the critique parser relies on.
_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)

#: The Qwen3-VL chat template with ``{% generation %}`` markers around each assistant turn (the
#: same text as TRL's ``qwen3_vl_training.jinja``). It renders byte-for-byte like the template
#: shipped with Qwen/Qwen3-VL-*-Instruct; the markers only let ``return_assistant_tokens_mask`` /
#: TRL's ``assistant_only_loss`` find the assistant tokens. ``<|im_end|>`` sits inside the block so
#: that the stop token is trained too.
QWEN3VL_CHAT_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- generation -%}
            {%- if message.content is string %}
                {{- message.content }}
            {%- else %}
                {%- for content_item in message.content %}
                    {%- if 'text' in content_item %}
                        {{- content_item.text }}
                    {%- endif %}
                {%- endfor %}
            {%- endif %}
            {%- if message.tool_calls %}
                {%- for tool_call in message.tool_calls %}
                    {%- if (loop.first and message.content) or (not loop.first) %}
                        {{- '\\n' }}
                    {%- endif %}
                    {%- if tool_call.function %}
                        {%- set tool_call = tool_call.function %}
                    {%- endif %}
                    {{- '<tool_call>\\n{"name": "' }}
                    {{- tool_call.name }}
                    {{- '", "arguments": ' }}
                    {%- if tool_call.arguments is string %}
                        {{- tool_call.arguments }}
                    {%- else %}
                        {{- tool_call.arguments | tojson }}
                    {%- endif %}
                    {{- '}\\n</tool_call>' }}
                {%- endfor %}
            {%- endif %}
            {{- '<|im_end|>\\n' }}
        {%- endgeneration -%}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Training text for the BPE merges. Its only job is to make the words our prompts and critiques use
# (dimension names, "justification", "score", markdown headers, digits) come out as a few tokens
# each, so prompts stay short and decoded gibberish looks vaguely word-like.
_DEFAULT_CORPUS = """\
# Evaluation

You are an expert image evaluator. Look at the image and the text prompt, think step by step, and
write a critique before you give any score. For each dimension, write a justification and then a
score from 1 to 4.

## Text Faithfulness
Justification: The image shows a red apple on a wooden table, as the prompt asks. The text in the
image is legible and correctly spelled. Every object requested by the prompt is present.
Score: 4

## Physical Quality
Justification: The lighting is consistent and the shadows fall in one direction. Hands have five
fingers. There are no artifacts, no blur, no distortion and no duplicated limbs.
Score: 3

## Aesthetic Quality
Justification: The composition is balanced, the colors are harmonious and the style is coherent.
Score: 3

## Text Rendering
Justification: The rendered text matches the requested words; one letter is slightly warped.
Score: 2

## Image Editing
Justification: The edit follows the instruction. The source image is preserved outside the edited
region, and the edited region is consistent with the rest of the image.
Score: 4

# Summary
The image is faithful to the prompt and physically plausible, with minor rendering flaws.
Overall score: 3.5

# Refined Request
A photorealistic red apple on a wooden table, soft morning light, sharp focus, high detail.

# Comparison
Image A is better than Image B on text faithfulness. Image B is better than Image A on physical
quality. Both images have similar aesthetic quality. Preference: Image A. Tie. Which image is better?

Scores: 1 2 3 4 5 6 7 8 9 10 0.5 1.5 2.5 3.5 0 100 2024 2025 1/4 2/4 3/4 4/4
Numbers 12 34 56 78 90 and decimals 0.25 0.75 3.14 with percent 50% and ranges 1-4.

<think>
Let me look at the image carefully. The prompt asks for a cat sitting on a chair next to a window.
The image shows a cat, a chair and a window. The cat is sitting on the chair. The window is on the
left. The lighting comes from the window. The reward model should judge the quality of the image,
the faithfulness to the text, and the physical plausibility of the scene.
</think>

**Score**: 4
- **Justification**: The generated image matches the instruction.
- **Dimension**: text faithfulness, physical quality, aesthetic quality, text rendering.
Reward, preference, pairwise, pointwise, critique, rationale, reasoning, judge, evaluator, model.
The user asked for a photo of a dog running on the beach at sunset with waves in the background.
The assistant answered with a detailed critique and a final score. Please output the score only.
System: you are a helpful assistant. User: describe this image. Assistant: this image shows
a person, a car, a tree, a building, a sky, a road, a mountain, a river, a flower and a bird.
"""


def _corpus_lines(corpus: Iterable[str] | None) -> list[str]:
    if corpus is None:
        return _DEFAULT_CORPUS.splitlines(keepends=True)
    # Materialise once: the text is both hashed for the marker and fed to the BPE trainer.
    return [str(line) for line in corpus]


def _build_params(
    *,
    seed: int,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    image_size_cap: int,
    corpus_lines: list[str],
) -> dict[str, Any]:
    import tokenizers
    import torch
    import transformers

    digest = hashlib.sha256("\x00".join(corpus_lines).encode("utf-8")).hexdigest()
    return {
        "builder": "rationalrewards.testing.tiny_models.build_tiny_qwen3vl",
        "builder_version": _BUILDER_VERSION,
        "seed": seed,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "image_size_cap": image_size_cap,
        "corpus_sha256": digest,
        # Random init and on-disk formats may change between releases; a cache built under other
        # versions is rebuilt rather than trusted to be identical.
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "torch_version": torch.__version__.split("+")[0],
    }


def _is_complete_build(path: pathlib.Path, params: dict[str, Any]) -> bool:
    marker = path / BUILD_MARKER
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if recorded.get("params") != params:
        return False
    return all((path / name).is_file() for name in _REQUIRED_FILES)


def _train_tokenizer(corpus_lines: list[str], vocab_size: int) -> Any:
    from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    n_bpe = vocab_size - len(_ADDED_TOKENS)
    n_bytes = len(pre_tokenizers.ByteLevel.alphabet())
    if n_bpe < n_bytes:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: need at least {n_bytes + len(_ADDED_TOKENS)} "
            f"({n_bytes} byte tokens + {len(_ADDED_TOKENS)} Qwen special tokens)"
        )

    # Same normaliser / pre-tokeniser as Qwen2Tokenizer builds, so the merges learnt here are the
    # ones it will apply after reload.
    bpe = Tokenizer(BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=n_bpe,
        min_frequency=1,
        # Seed all 256 byte symbols so any UTF-8 text (including text not in the corpus) encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(corpus_lines, trainer=trainer)
    model_state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = model_state["vocab"]
    # Qwen2Tokenizer hands merges to tokenizers.models.BPE, which wants (left, right) tuples.
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model_state["merges"]]

    # The constructor registers its special tokens itself; give it only <|endoftext|> so that it
    # gets the first id after the BPE vocabulary, as in the real checkpoint, and add the rest in
    # order before switching eos to <|im_end|>.
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=262144,
    )
    tokenizer.add_tokens(
        [AddedToken(content, special=special, normalized=False) for content, special in _ADDED_TOKENS[1:]]
    )
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = QWEN3VL_CHAT_TEMPLATE
    return tokenizer


def _write_checkpoint(
    out: pathlib.Path,
    *,
    seed: int,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    image_size_cap: int,
    corpus_lines: list[str],
) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = _train_tokenizer(corpus_lines, vocab_size)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok, _ in _ADDED_TOKENS}

    patch_size, merge_size, temporal_patch_size = 16, 2, 2
    factor = patch_size * merge_size  # side of one visual token (after the 2x2 merge), in pixels
    if image_size_cap < factor * factor:
        raise ValueError(f"image_size_cap must be at least {factor * factor} pixels (one visual token)")
    # Qwen3-VL's own preprocessor settings, only with a tiny pixel budget: at most
    # image_size_cap / 32**2 visual tokens per image (16 for the default 128*128).
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": factor * factor, "longest_edge": image_size_cap},
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    # Qwen3VLProcessor requires a video processor even for image-only use; keep its budget small too.
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": factor * factor, "longest_edge": image_size_cap * 4},
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        max_video_tokens=64,
        max_frames=8,
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3VL_CHAT_TEMPLATE,
    )

    num_heads, num_kv_heads = 4, 2
    head_dim = hidden_size // num_heads
    if head_dim * num_heads != hidden_size or head_dim % 2:
        raise ValueError(f"hidden_size={hidden_size} must be a multiple of {2 * num_heads}")
    # Multimodal RoPE splits head_dim/2 frequencies over (t, h, w); real checkpoints use [24, 20, 20]
    # for head_dim 128. Keep about the same proportions ([2, 3, 3] for head_dim 16), remainder on t.
    half = head_dim // 2
    hw = min(max(1, math.ceil(half * 20 / 64)), (half - 1) // 2)
    mrope_section = [half - 2 * hw, hw, hw]

    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": hidden_size * 2,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_kv_heads,
            "head_dim": head_dim,
            "max_position_embeddings": 262144,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": mrope_section,
                "mrope_interleaved": True,
            },
            "dtype": "float32",
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": patch_size,
            "spatial_merge_size": merge_size,
            "temporal_patch_size": temporal_patch_size,
            "out_hidden_size": hidden_size,
            # A 16x16 grid of learnt position embeddings, interpolated to the image grid as in the
            # real model (which uses 48x48).
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )

    # fork_rng: seeding the global generator would silently change the randomness of the caller
    # (e.g. a test that builds the model and then samples).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    model.eval()
    # Greedy by default (unlike the real checkpoint, which samples) so tests are reproducible;
    # eos/pad ids match the real generation_config.json.
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)


def build_tiny_qwen3vl(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    image_size_cap: int = 128 * 128,
    corpus: Iterable[str] | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Build a tiny random Qwen3-VL checkpoint and processor in ``path`` and return the folder.

    The folder loads offline exactly like a real Qwen3-VL checkpoint::

        processor = AutoProcessor.from_pretrained(path)  # Qwen3VLProcessor (needs torchvision)
        model = AutoModelForImageTextToText.from_pretrained(path)  # Qwen3VLForConditionalGeneration

    It holds a byte-level BPE tokenizer (``Qwen2Tokenizer``) trained on ``corpus`` with Qwen3-VL's
    added tokens (``<|im_start|>``, ``<|im_end|>`` (eos), ``<|endoftext|>`` (pad), vision tokens,
    ``<think>``...), the Qwen3-VL chat template with ``{% generation %}`` markers, Qwen3-VL image and
    video processors with a tiny pixel budget, and a float32 model with ``num_layers`` text layers of
    width ``hidden_size`` and a 2-layer vision tower with deepstack.

    Args:
        path: Output folder. Created if missing.
        seed: Seed for the weight initialisation; the same seed and parameters give identical files.
        vocab_size: Total vocabulary size (BPE tokens plus the 26 Qwen added tokens). It is also the
            model's embedding size, unless the corpus is too small to learn that many merges, in which
            case both are smaller.
        hidden_size: Text model width; must be a multiple of 8 (4 heads of even size).
        num_layers: Number of text decoder layers.
        image_size_cap: Most pixels an image is resized to (``max_pixels``); each 32x32 block is one
            visual token, so the default 128*128 gives at most 16 tokens per image.
        corpus: Lines of text to train the BPE merges on; a built-in reward-model corpus if omitted.
        overwrite: Rebuild even when ``path`` already holds a build with these parameters. The
            folder is deleted first.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        FileExistsError: ``path`` is a non-empty folder that was not made by this function (no
            marker file) and ``overwrite`` is false; it is never deleted in that case.
    """
    path = pathlib.Path(path).expanduser()
    corpus_lines = _corpus_lines(corpus)
    params = _build_params(
        seed=seed,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        image_size_cap=image_size_cap,
        corpus_lines=corpus_lines,
    )
    if not overwrite and _is_complete_build(path, params):
        return path
    if not overwrite and path.is_dir() and any(path.iterdir()) and not (path / BUILD_MARKER).is_file():
        raise FileExistsError(
            f"{path} is not empty and was not built by build_tiny_qwen3vl; pass overwrite=True to replace it"
        )

    # Build in a sibling temp folder and rename it into place, so that a crash never leaves a
    # half-written folder behind and concurrent builders (pytest-xdist workers) never see one.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_checkpoint(
            tmp,
            seed=seed,
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            image_size_cap=image_size_cap,
            corpus_lines=corpus_lines,
        )
        marker = {"params": params}
        (tmp / BUILD_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")

        if path.exists():
            if not overwrite and _is_complete_build(path, params):
                # Another process finished the same build while we were working.
                return path
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        try:
            os.replace(tmp, path)
        except OSError:
            # Lost a race: another builder renamed its folder into place between our check and
            # our rename. Theirs is as good as ours if it matches.
            if _is_complete_build(path, params):
                return path
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def default_cache_root() -> pathlib.Path:
    """Return ``$RATIONALREWARDS_CACHE`` or ``~/.cache/rationalrewards``."""
    env = os.environ.get("RATIONALREWARDS_CACHE")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "rationalrewards"


def build_tiny_qwen3vl_cached(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Build the default tiny Qwen3-VL once under a cache folder and return its path.

    The checkpoint goes to ``<root>/tiny-qwen3vl`` where ``root`` is ``cache_dir`` if given, else
    :func:`default_cache_root`. Later calls (from any process) return the existing build without
    touching it; a build from an older recipe or other library versions is replaced.
    """
    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    return build_tiny_qwen3vl(root / "tiny-qwen3vl")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m rationalrewards.testing.tiny_models PATH [--seed N] [--overwrite]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m rationalrewards.testing.tiny_models",
        description="Build a tiny random Qwen3-VL checkpoint for offline tests and print its path.",
    )
    parser.add_argument("path", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if an identical build exists")
    args = parser.parse_args(argv)
    out = build_tiny_qwen3vl(args.path, seed=args.seed, overwrite=args.overwrite)
    print(out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
