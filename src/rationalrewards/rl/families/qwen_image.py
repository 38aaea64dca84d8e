"""Qwen-Image text-to-image and Qwen-Image-Edit (Plus) editing with one or several source images.

Qwen-Image packs 2x2 latent patches of a video-shaped VAE (one frame) and conditions on the last
hidden states of a Qwen2.5-VL text encoder (with a prompt template whose first tokens are
dropped), passed with a padding mask. Qwen-Image-Edit-Plus also shows the encoder every source
image ("Picture 1: ...") and appends each source's packed VAE latents to the token sequence;
only the target tokens are denoised. Differences from the pipeline's ``__call__``, for batched
training: every source is VAE-encoded at the target size (the pipeline uses a 1024x1024 area at
the source's aspect ratio), so all groups of a batch share one token layout; groups with
different numbers of sources are run in separate transformer calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import Cond, FlowFamily
from .registry import register_family

if TYPE_CHECKING:
    import torch
    from PIL import Image

# The attention projections of both streams (image and text) of every dual-stream block.
QWEN_IMAGE_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
# The area the edit pipeline gives the vision-language encoder's copy of each source.
CONDITION_IMAGE_AREA = 384 * 384


def _pad_stack(parts: Sequence[Any]) -> tuple[Any, Any]:
    """Stack (seq_i, dim) tensors into (n, max_seq, dim) with a 0/1 mask of the real positions."""
    import torch

    longest = max(p.shape[0] for p in parts)
    embeds = torch.stack([torch.cat([p, p.new_zeros(longest - p.shape[0], p.shape[1])]) for p in parts])
    mask = torch.stack([torch.cat([torch.ones(p.shape[0], dtype=torch.long, device=p.device),
                                   torch.zeros(longest - p.shape[0], dtype=torch.long, device=p.device)])
                        for p in parts])
    return embeds, mask


@register_family
class QwenImageFamily(FlowFamily):
    """Qwen-Image text-to-image (``QwenImagePipeline``)."""

    name = "qwen-image"
    task = "t2i"
    pipeline_classes = ("QwenImagePipeline",)
    default_lora_targets = QWEN_IMAGE_LORA_TARGETS

    def _check_size(self) -> None:
        f = self.pipe.vae_scale_factor
        step = f * 2
        if self.height % step or self.width % step:
            raise ValueError(f"{self.name}: height and width must be multiples of {step}, got {self.height}x{self.width}")
        self.lat_h = 2 * (self.height // step)
        self.lat_w = 2 * (self.width // step)
        self.channels = self.transformer_config.in_channels // 4
        self.target_shape = (1, self.lat_h // 2, self.lat_w // 2)

    def latent_shape(self) -> tuple[int, ...]:
        return ((self.lat_h // 2) * (self.lat_w // 2), self.channels * 4)

    def _finish_prompts(self, embeds: torch.Tensor, mask: torch.Tensor) -> Cond:
        embeds = embeds[:, : self.max_sequence_length].to(device=self.device, dtype=self.dtype)
        mask = mask[:, : self.max_sequence_length].to(device=self.device)
        return Cond({"prompt_embeds": embeds, "prompt_mask": mask})

    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        import torch

        with torch.no_grad():
            embeds, mask = self.pipe._get_qwen_prompt_embeds(list(prompts), device=self.device)
        return self._finish_prompts(embeds, mask)

    def _transformer_call(self, transformer: Any, hidden: torch.Tensor, sigma: torch.Tensor, embeds: torch.Tensor,
                          mask: torch.Tensor, img_shapes: list[tuple[int, int, int]]) -> torch.Tensor:
        import torch

        n = hidden.shape[0]
        guidance = None
        if self.transformer_config.get("guidance_embeds", False):
            guidance = torch.full((n,), self.guidance_scale, device=self.device, dtype=torch.float32)
        # Trim the text padding this sub-batch does not need (the mask marks the real tokens).
        keep = int(mask.sum(dim=1).max())
        return transformer(
            hidden_states=hidden,
            # The pipeline passes scheduler timesteps / 1000, i.e. sigma itself.
            timestep=sigma.to(device=self.device, dtype=self.dtype).expand(n),
            guidance=guidance,
            encoder_hidden_states=embeds[:, :keep],
            encoder_hidden_states_mask=mask[:, :keep],
            img_shapes=[img_shapes] * n,
            return_dict=False,
        )[0]

    def velocity(self, transformer: Any, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        return self._transformer_call(transformer, x.to(self.dtype), sigma, cond.per_group["prompt_embeds"],
                                      cond.per_group["prompt_mask"], [self.target_shape])

    def decode(self, x0: torch.Tensor) -> list[Image.Image]:
        import torch

        vae = self.pipe.vae
        z = vae.config.z_dim
        with torch.no_grad():
            lat = self.pipe._unpack_latents(x0.to(self.device), self.height, self.width, self.pipe.vae_scale_factor)
            lat = lat.to(vae.dtype)
            mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(lat.device, lat.dtype)
            std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(lat.device, lat.dtype)
            pixels = vae.decode(lat * std + mean, return_dict=False)[0][:, :, 0]
        return self._to_images(pixels)


@register_family
class QwenImageEditFamily(QwenImageFamily):
    """Qwen-Image-Edit-Plus (``QwenImageEditPlusPipeline``): one or several source images per prompt."""

    name = "qwen-image-edit"
    task = "edit"
    pipeline_classes = ("QwenImageEditPlusPipeline",)
    max_sources = 3

    def encode(self, prompts: Sequence[str], sources: Sequence[Sequence[Image.Image]] | None) -> Cond:
        """The text encoder sees each group's sources with its instruction, so prompts and sources
        are encoded together, one group at a time (groups differ in their images)."""
        if sources is None:
            raise ValueError(f"{self.name} edits need source images")
        import math

        import torch

        pipe = self.pipe
        parts: list[Any] = []
        with torch.no_grad():
            for prompt, group in zip(prompts, sources, strict=True):
                shown = []
                for img in group:
                    w, h = img.size
                    cw = max(32, round(math.sqrt(CONDITION_IMAGE_AREA * w / h) / 32) * 32)
                    ch = max(32, round(cw * h / w / 32) * 32)
                    shown.append(pipe.image_processor.resize(img.convert("RGB"), ch, cw))
                embeds, _ = pipe._get_qwen_prompt_embeds([prompt], image=shown, device=self.device)
                parts.append(embeds[0])
        embeds, mask = _pad_stack(parts)
        return self._finish_prompts(embeds, mask).merge(self.encode_sources(sources))

    def encode_sources(self, sources: Sequence[Sequence[Image.Image]]) -> Cond:
        import torch

        pipe = self.pipe
        vae = pipe.vae
        z = vae.config.z_dim
        counts = [len(g) for g in sources]
        if not counts or min(counts) < 1 or max(counts) > self.max_sources:
            raise ValueError(f"{self.name}: each prompt needs 1 to {self.max_sources} source images, got {counts}")
        pixels = torch.cat([pipe.image_processor.preprocess(img.convert("RGB"), self.height, self.width)
                            for g in sources for img in g]).unsqueeze(2)
        with torch.no_grad():
            lat = vae.encode(pixels.to(device=self.device, dtype=vae.dtype)).latent_dist.mode()
        mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(lat.device, lat.dtype)
        std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(lat.device, lat.dtype)
        lat = (lat - mean) / std
        h, w = lat.shape[-2:]
        packed = pipe._pack_latents(lat, lat.shape[0], z, h, w).to(self.dtype)  # (total sources, tokens, 4z)
        tokens = packed.shape[1]
        # One row per group: its sources' tokens in order, zero-padded to the largest count.
        rows, start = [], 0
        for k in counts:
            row = packed[start : start + k].reshape(k * tokens, -1)
            rows.append(torch.cat([row, row.new_zeros((max(counts) - k) * tokens, row.shape[1])]))
            start += k
        return Cond({"image_latents": torch.stack(rows),
                     "n_sources": torch.tensor(counts, device=self.device)},
                    {"source_tokens": torch.tensor(tokens)})

    def velocity(self, transformer: Any, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        import torch

        n_sources = cond.per_group["n_sources"]
        tokens = int(cond.shared["source_tokens"])
        out = torch.empty(x.shape, device=self.device, dtype=x.dtype)
        parts: list[tuple[Any, Any]] = []
        # Every sample of one transformer call needs the same token layout: one call per source count.
        for k in sorted({int(v) for v in n_sources.tolist()}):
            idx = (n_sources == k).nonzero(as_tuple=True)[0]
            hidden = torch.cat([x.index_select(0, idx.to(x.device)).to(self.dtype),
                                cond.per_group["image_latents"].index_select(0, idx)[:, : k * tokens]], dim=1)
            s = sigma if sigma.numel() == 1 else sigma.to(idx.device).index_select(0, idx)
            shapes = [self.target_shape] + [self.target_shape] * k
            v = self._transformer_call(transformer, hidden, s, cond.per_group["prompt_embeds"].index_select(0, idx),
                                       cond.per_group["prompt_mask"].index_select(0, idx), shapes)
            parts.append((idx, v[:, : x.shape[1]]))
        if len(parts) == 1:
            return parts[0][1]
        # index_copy keeps the graph for the backward pass.
        for idx, v in parts:
            out = out.index_copy(0, idx.to(out.device), v.to(out.dtype))
        return out
