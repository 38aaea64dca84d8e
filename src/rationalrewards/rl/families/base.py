"""What the trainer needs from a family of flow-matching pipelines, and the conditioning it carries.

A :class:`FlowFamily` drives one kind of diffusers pipeline through its own components: prompt
(and source) encoding, the latent layout, one velocity evaluation, decoding, and the
scheduler's noise levels. Velocities follow diffusers' convention (``v ~ noise - x0``, ``sigma``
from 1 = noise to 0 = data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image


@dataclass
class Cond:
    """Conditioning for a set of groups: ``per_group`` tensors have one row per group (expanded
    per sample with :meth:`take`), ``shared`` tensors are the same for every sample."""

    per_group: dict[str, torch.Tensor] = field(default_factory=dict)
    shared: dict[str, torch.Tensor] = field(default_factory=dict)

    def take(self, group_index: torch.Tensor) -> Cond:
        idx = group_index.to(next(iter(self.per_group.values())).device) if self.per_group else group_index
        return Cond({k: v.index_select(0, idx) for k, v in self.per_group.items()}, dict(self.shared))

    def merge(self, other: Cond) -> Cond:
        return Cond({**self.per_group, **other.per_group}, {**self.shared, **other.shared})

    @staticmethod
    def cat(conds: Sequence[Cond]) -> Cond:
        import torch

        if not conds:
            return Cond()
        keys = conds[0].per_group.keys()
        return Cond({k: torch.cat([c.per_group[k] for c in conds]) for k in keys}, dict(conds[0].shared))


# -- generator access -----------------------------------------------------------------------------
class FlowFamily:
    """How to drive one family of flow-matching pipelines through its own components.

    Subclasses implement prompt (and source) encoding, the latent layout, one velocity
    evaluation and decoding. Velocities follow diffusers' convention (``v ~ noise - x0``,
    ``sigma`` from 1 = noise to 0 = data).
    """

    name = "base"
    task = "t2i"
    pipeline_classes: tuple[str, ...] = ()
    max_sources = 1
    """Source images an edit family takes per prompt (rows with more are skipped with a reason)."""
    default_lora_targets: tuple[str, ...] | None = None
    """LoRA target modules used when the config leaves ``lora_target_modules`` at its default
    (None: the config's default, diffusers' attention projections)."""

    def __init__(self, pipe: Any, *, height: int, width: int, max_sequence_length: int = 512,
                 guidance_scale: float = 3.5, device: Any = None, dtype: Any = None) -> None:
        import copy

        import torch

        self.pipe = pipe
        self.height = height
        self.width = width
        self.max_sequence_length = max_sequence_length
        self.guidance_scale = guidance_scale
        self.device = torch.device(device or "cpu")
        self.dtype = dtype or torch.float32
        self.transformer_config = pipe.transformer.config
        # A private scheduler: set_timesteps mutates state the pipeline's own __call__ relies on.
        self.scheduler = copy.deepcopy(pipe.scheduler)
        self._check_size()

    @classmethod
    def matches(cls, pipe: Any) -> bool:
        return type(pipe).__name__ in cls.pipeline_classes

    def _check_size(self) -> None:
        return None

    # to implement
    def latent_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        raise NotImplementedError

    def encode(self, prompts: Sequence[str], sources: Sequence[Sequence[Image.Image]] | None) -> Cond:
        """All conditioning for a set of groups; by default prompts and sources separately."""
        cond = self.encode_prompts(prompts)
        return cond.merge(self.encode_sources(sources)) if sources is not None else cond

    def encode_sources(self, sources: Sequence[Sequence[Image.Image]]) -> Cond:
        """Conditioning from each group's source images (one list per group)."""
        raise NotImplementedError(f"{self.name} pipelines do not take a source image")

    def velocity(self, transformer: Any, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, x0: torch.Tensor) -> list[Image.Image]:
        raise NotImplementedError

    # shared
    def image_seq_len(self) -> int:
        shape = self.latent_shape()
        return int(shape[0]) if len(shape) == 2 else int(math.prod(shape[1:]) // 4)

    def _mu(self) -> float | None:
        cfg = self.scheduler.config
        if not cfg.get("use_dynamic_shifting", False):
            return None
        seq = self.image_seq_len()
        base_len, max_len = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
        base_shift, max_shift = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
        m = (max_shift - base_shift) / (max_len - base_len)
        return seq * m + (base_shift - m * base_len)

    def sampling_sigmas(self, num_steps: int) -> torch.Tensor:
        """The scheduler's own noise levels for ``num_steps`` steps, ending with 0."""
        import numpy as np

        sigmas = np.linspace(1.0, 1.0 / num_steps, num_steps)
        mu = self._mu()
        kwargs = {"mu": mu} if mu is not None else {}
        self.scheduler.set_timesteps(sigmas=sigmas, device="cpu", **kwargs)
        return self.scheduler.sigmas.detach().float().cpu().clone()

    def shift(self, u: torch.Tensor) -> torch.Tensor:
        """The scheduler's time shift applied to uniform noise levels ``u``."""
        import torch

        cfg = self.scheduler.config
        mu = self._mu()
        if mu is not None:
            if cfg.get("time_shift_type", "exponential") == "linear":
                return mu / (mu + (1 / u - 1))
            return math.exp(mu) / (math.exp(mu) + (1 / u - 1))
        s = float(cfg.get("shift", 1.0))
        return torch.as_tensor(s * u / (1 + (s - 1) * u))

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Gaussian noise in the model's latent layout, drawn on the CPU (reproducible across devices)."""
        import torch

        return torch.randn((n, *self.latent_shape()), generator=generator, dtype=torch.float32)

    def _to_images(self, pixels: torch.Tensor) -> list[Image.Image]:
        return self.pipe.image_processor.postprocess(pixels.float(), output_type="pil")
