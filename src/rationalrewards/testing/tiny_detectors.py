"""Tiny, randomly initialised Grounding DINO and SAM checkpoints for offline tests.

Each builder writes a folder with the same kind of files as the public checkpoints
(``config.json``, ``model.safetensors``, processor and tokenizer files), so it loads through the
exact calls used for ``IDEA-Research/grounding-dino-tiny`` (``AutoProcessor`` +
``AutoModelForZeroShotObjectDetection``) and ``facebook/sam-vit-base`` (``SamProcessor`` +
``SamModel``). Only the sizes differ: a 4-stage Swin backbone 8 channels wide, a one-layer BERT
text encoder over a WordPiece vocabulary built here (no download), 10 queries; a 2-layer SAM
encoder on 64x64 inputs. Boxes and masks are arbitrary: tests check plumbing and well-formedness,
never what is found.

torch and transformers are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

__all__ = ["build_tiny_grounding_dino", "build_tiny_sam", "tiny_bert_vocab"]

# Words the tests' phrases use, so they tokenise to whole words (anything else falls back to
# characters, which WordPiece handles through the "##x" pieces).
_WORD_LIST = (
    "the a an of and left right hand hands finger fingers face eye eyes text sign letters letter word shadow "
    "sand smear dog tail cat tree sky car wheel bicycle chain spokes window door red blue green yellow grey "
    "square circle blurry distorted extra missing wrong garbled broken melted"
)


def tiny_bert_vocab() -> dict[str, int]:
    """A small BERT WordPiece vocabulary: special tokens, single characters (whole and ``##``
    continuation), digits, punctuation and a few whole words."""
    vocab: dict[str, int] = {}
    for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        vocab[token] = len(vocab)
    for ch in string.ascii_lowercase + string.digits + string.punctuation:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault("##" + ch, len(vocab))
    for word in _WORD_LIST.split():
        vocab.setdefault(word, len(vocab))
    return vocab


def build_tiny_grounding_dino(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a tiny random Grounding DINO checkpoint + processor to ``path`` and return it."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    vocab = tiny_bert_vocab()
    tokenizer = BertTokenizer(vocab=vocab)
    backbone = SwinConfig(image_size=128, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=2, out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    # d_model must be a multiple of 32 (GroupNorm with 32 groups); two decoder layers because the
    # box heads of layers > 0 are tied to layer 0's.
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, num_queries=10, encoder_layers=1,
        decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, num_feature_levels=4, encoder_n_points=1, decoder_n_points=1, max_text_len=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 192}),
        tokenizer=tokenizer,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_sam(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a tiny random SAM checkpoint + processor (64x64 input) to ``path`` and return it."""
    import torch
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    config = SamConfig(
        vision_config=SamVisionConfig(hidden_size=16, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                                      image_size=64, patch_size=8, window_size=2, global_attn_indexes=[1],
                                      num_pos_feats=8, mlp_dim=32),
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=8,
                                                     mask_input_channels=4),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=16, mlp_dim=32, num_hidden_layers=2,
                                                 num_attention_heads=2, iou_head_hidden_dim=16),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SamModel(config)
    processor = SamProcessor(image_processor=SamImageProcessor(
        size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16},
    ))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
