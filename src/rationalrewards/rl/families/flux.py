"""FLUX.1 text-to-image and FLUX.1-Kontext editing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import Cond, FlowFamily
from .registry import register_family

if TYPE_CHECKING:
    import torch
    from PIL import Image


@register_family
class FluxFamily(FlowFamily):
    """FLUX.1 text-to-image (``FluxPipeline``): packed 2x2 latents, CLIP pooled + T5 tokens."""

    name = "flux"
    task = "t2i"
    pipeline_classes = ("FluxPipeline",)

    def _check_size(self) -> None:
        step = self.pipe.vae_scale_factor * 2
        if self.height % step or self.width % step:
            raise ValueError(f"{self.name}: height and width must be multiples of {step}, got {self.height}x{self.width}")
        self.lat_h = 2 * (self.height // step)
        self.lat_w = 2 * (self.width // step)
        self.channels = self.transformer_config.in_channels // 4
        self.img_ids = self.pipe._prepare_latent_image_ids(1, self.lat_h // 2, self.lat_w // 2, self.device, self.dtype)

    def latent_shape(self) -> tuple[int, ...]:
        return ((self.lat_h // 2) * (self.lat_w // 2), self.channels * 4)

    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        import torch

        with torch.no_grad():
            embeds, pooled, text_ids = self.pipe.encode_prompt(
                list(prompts), prompt_2=None, device=self.device, num_images_per_prompt=1,
                max_sequence_length=self.max_sequence_length,
            )
        return Cond({"prompt_embeds": embeds.to(self.dtype), "pooled": pooled.to(self.dtype)},
                    {"txt_ids": text_ids.to(self.dtype)})

    def velocity(self, transformer: Any, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        import torch

        n = x.shape[0]
        hidden = x.to(self.dtype)
        img_ids = self.img_ids
        if "image_latents" in cond.per_group:
            hidden = torch.cat([hidden, cond.per_group["image_latents"]], dim=1)
            img_ids = torch.cat([img_ids, cond.shared["image_ids"]], dim=0)
        guidance = None
        if self.transformer_config.guidance_embeds:
            guidance = torch.full((n,), self.guidance_scale, device=self.device, dtype=torch.float32)
        out = transformer(
            hidden_states=hidden,
            timestep=sigma.to(device=self.device, dtype=self.dtype).expand(n),
            guidance=guidance,
            pooled_projections=cond.per_group["pooled"],
            encoder_hidden_states=cond.per_group["prompt_embeds"],
            txt_ids=cond.shared["txt_ids"],
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return out[:, : x.shape[1]]

    def decode(self, x0: torch.Tensor) -> list[Image.Image]:
        import torch

        vae = self.pipe.vae
        with torch.no_grad():
            lat = self.pipe._unpack_latents(x0.to(self.device), self.height, self.width, self.pipe.vae_scale_factor)
            lat = lat / vae.config.scaling_factor + vae.config.shift_factor
            pixels = vae.decode(lat.to(vae.dtype), return_dict=False)[0]
        return self._to_images(pixels)


@register_family
class FluxKontextFamily(FluxFamily):
    """FLUX.1-Kontext editing (``FluxKontextPipeline``): the source image's latents are appended
    to the token sequence (position ids offset by 1) and only the target tokens are denoised."""

    name = "flux-kontext"
    task = "edit"
    pipeline_classes = ("FluxKontextPipeline",)

    def encode_sources(self, sources: Sequence[Sequence[Image.Image]]) -> Cond:
        import torch

        pipe = self.pipe
        vae = pipe.vae
        images = []
        for group in sources:
            img = group[0]
            img = pipe.image_processor.resize(img.convert("RGB"), self.height, self.width)
            images.append(pipe.image_processor.preprocess(img, self.height, self.width))
        pixels = torch.cat(images).to(device=self.device, dtype=vae.dtype)
        with torch.no_grad():
            lat = vae.encode(pixels).latent_dist.mode()
        lat = (lat - vae.config.shift_factor) * vae.config.scaling_factor
        n, c, h, w = lat.shape
        packed = pipe._pack_latents(lat, n, c, h, w).to(self.dtype)
        ids = pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.dtype)
        ids[..., 0] = 1
        return Cond({"image_latents": packed}, {"image_ids": ids})
