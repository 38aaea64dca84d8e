"""Stable Diffusion 3 / 3.5."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import Cond, FlowFamily
from .registry import register_family

if TYPE_CHECKING:
    import torch
    from PIL import Image


@register_family
class SD3Family(FlowFamily):
    """Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``): unpacked latents, two CLIPs + T5."""

    name = "sd3"
    task = "t2i"
    pipeline_classes = ("StableDiffusion3Pipeline",)

    def _check_size(self) -> None:
        f = self.pipe.vae_scale_factor
        patch = self.transformer_config.patch_size
        if self.height % (f * patch) or self.width % (f * patch):
            raise ValueError(f"sd3: height and width must be multiples of {f * patch}, got {self.height}x{self.width}")
        self.channels = self.transformer_config.in_channels
        self.lat_h, self.lat_w = self.height // f, self.width // f

    def latent_shape(self) -> tuple[int, ...]:
        return (self.channels, self.lat_h, self.lat_w)

    def image_seq_len(self) -> int:
        patch = self.transformer_config.patch_size
        return (self.lat_h // patch) * (self.lat_w // patch)

    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        import torch

        with torch.no_grad():
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                list(prompts), prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
                do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length,
            )
        return Cond({"prompt_embeds": embeds.to(self.dtype), "pooled": pooled.to(self.dtype)})

    def velocity(self, transformer: Any, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        n = x.shape[0]
        # SD3's transformer takes the timestep on the 0-1000 scale.
        t = (sigma.to(device=self.device, dtype=self.dtype) * 1000.0).expand(n)
        return transformer(
            hidden_states=x.to(self.dtype),
            timestep=t,
            encoder_hidden_states=cond.per_group["prompt_embeds"],
            pooled_projections=cond.per_group["pooled"],
            return_dict=False,
        )[0]

    def decode(self, x0: torch.Tensor) -> list[Image.Image]:
        import torch

        vae = self.pipe.vae
        with torch.no_grad():
            lat = x0.to(self.device) / vae.config.scaling_factor + vae.config.shift_factor
            pixels = vae.decode(lat.to(vae.dtype), return_dict=False)[0]
        return self._to_images(pixels)
