"""DiffusionNFT on diffusers flow-matching pipelines: the objective, advantages and generator access.

DiffusionNFT (Zheng et al., 2025) does RL on the forward process: sample K images per prompt with
the old policy and a deterministic ODE sampler, score them, turn group-relative advantages into
an optimality probability ``r`` in [0, 1], then regress the SAME clean samples with flow
matching, contrasting an implicit positive policy ``v+ = (1-b) v_old + b v`` (pulled to the
data where ``r`` is high) with an implicit negative policy ``v- = (1+b) v_old - b v`` (pulled to
the data where ``r`` is low). No likelihoods, no CFG, any sampler. See docs/rl_trainer.md for the
exact objective.

This module has two halves:

* the algorithm on plain tensors and lists (:func:`group_advantages`, :func:`optimality`,
  :func:`solved_groups`, :func:`nft_loss`, :func:`sample_train_sigmas`, :func:`ode_sample`,
  LoRA adapter helpers);
* generator access through a pipeline's own components (:class:`FlowFamily` and its Flux,
  Flux-Kontext and SD3 implementations, picked by :func:`family_for`).

torch and diffusers are imported by the functions that need them (and by type checkers only), so
importing this module stays cheap.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

NAN = float("nan")


# -- advantages ---------------------------------------------------------------------------------
def _is_nan(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def group_advantages(
    rewards: Sequence[float],
    group_keys: Sequence[Hashable],
    *,
    std: str = "global",
    clip: float = 5.0,
    eps: float = 1e-4,
) -> list[float]:
    """Group-relative advantages, NaN where the reward is missing.

    ``A_i = (R_i - mean of R in i's group) / s`` with ``s`` the population std of ALL valid
    rewards of the batch (``std="global"``) or of i's own group (``std="group"``), plus ``eps``;
    then clipped to ``[-clip, clip]``. Groups are keyed by whatever identifies a conditioning
    (the trainer uses prompt + source-image content), never by prompt text alone. Missing
    rewards (NaN/None) take no part in any statistic; a group with a single valid reward has
    advantage 0 (it has nothing to be compared with).
    """
    if len(rewards) != len(group_keys):
        raise ValueError(f"{len(rewards)} rewards but {len(group_keys)} group keys")
    if std not in ("global", "group"):
        raise ValueError(f"std must be 'global' or 'group', not {std!r}")
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(group_keys):
        if not _is_nan(rewards[i]):
            members.setdefault(key, []).append(i)
    valid = [float(rewards[i]) for idx in members.values() for i in idx]
    global_std = statistics.pstdev(valid) if len(valid) > 1 else 0.0
    out = [NAN] * len(rewards)
    for idx in members.values():
        values = [float(rewards[i]) for i in idx]
        mean = statistics.fmean(values)
        scale = (statistics.pstdev(values) if len(values) > 1 else 0.0) if std == "group" else global_std
        for i, value in zip(idx, values, strict=True):
            # Exactly 0 for equal rewards: float noise over eps must not become a signal.
            adv = 0.0 if len(idx) < 2 or value == mean else (value - mean) / (scale + eps)
            out[i] = max(-clip, min(clip, adv))
    return out


def optimality(advantages: Sequence[float], adv_clip_max: float = 5.0) -> list[float]:
    """Optimality probability ``r = clip(A / adv_clip_max, -1, 1) / 2 + 1/2`` (NaN stays NaN)."""
    out = []
    for a in advantages:
        if _is_nan(a):
            out.append(NAN)
        else:
            out.append(max(-1.0, min(1.0, float(a) / adv_clip_max)) / 2 + 0.5)
    return out


def solved_groups(
    rewards: Sequence[float],
    group_keys: Sequence[Hashable],
    *,
    max_std: float = 0.05,
    min_mean: float = 0.9,
    min_valid: int = 2,
) -> list[Hashable]:
    """Groups the policy has solved: every sample valid, at least ``min_valid`` of them, reward
    std below ``max_std`` and mean above ``min_mean`` (rewards on the [0, 1] scale). They carry
    no learning signal any more; the trainer stops sampling them."""
    groups: dict[Hashable, list[float]] = {}
    broken: set[Hashable] = set()
    for r, key in zip(rewards, group_keys, strict=True):
        if _is_nan(r):
            broken.add(key)
        else:
            groups.setdefault(key, []).append(float(r))
    out = []
    for key, values in groups.items():
        if key in broken or len(values) < min_valid:
            continue
        if statistics.pstdev(values) < max_std and statistics.fmean(values) > min_mean:
            out.append(key)
    return out


# -- the objective --------------------------------------------------------------------------------
@dataclass
class NFTLoss:
    """One DiffusionNFT loss evaluation: ``loss`` carries the graph, the rest are detached floats."""

    loss: torch.Tensor
    policy_loss: float
    kl: float
    positive: float
    negative: float
    n_used: int


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1)


def nft_loss(
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    r: torch.Tensor,
    *,
    beta: float = 1.0,
    weighting: str = "adaptive",
    v_ref: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    mask: torch.Tensor | None = None,
) -> NFTLoss:
    """The DiffusionNFT objective for a batch of forward-process points.

    Args:
        v_theta: velocity of the policy being trained at ``x_t = (1 - sigma) x0 + sigma noise``.
        v_old: velocity of the old (sampling) policy at the same point (no gradient).
        x0, noise: the clean sample and the noise that made ``x_t``; the flow-matching target
            is ``noise - x0`` (diffusers' convention: ``x_{s'} = x_s + (s' - s) v``).
        sigma: ``(B,)`` noise levels in (0, 1].
        r: ``(B,)`` optimality probabilities in [0, 1].
        beta: implicit-policy strength.
        weighting: ``velocity``: squared velocity error; ``adaptive``: the equivalent error on
            the x0 prediction ``x_t - sigma v``, divided by its own detached mean absolute value
            (per sample), which keeps every noise level's contribution O(1).
        v_ref, kl_coef: add ``kl_coef * ||v_theta - v_ref||^2`` (a KL-like pull to the frozen
            reference model) when both are given.
        mask: ``(B,)`` bool, False for samples without a valid reward (they are left out).

    Returns:
        :class:`NFTLoss`, whose ``loss`` is the mean over used samples of
        ``(r * L+ + (1 - r) * L-) / beta  (+ kl_coef * KL)``. With no usable sample the loss is
        ``0 * v_theta.sum()`` (keeps every process of a distributed run in the same graph).
    """
    import torch

    if weighting not in ("adaptive", "velocity"):
        raise ValueError(f"weighting must be 'adaptive' or 'velocity', not {weighting!r}")
    b = v_theta.shape[0]
    v_theta_f = v_theta.float()
    v_old_f = v_old.detach().float()
    target = (noise - x0).float()
    v_pos = (1.0 - beta) * v_old_f + beta * v_theta_f
    v_neg = (1.0 + beta) * v_old_f - beta * v_theta_f
    if weighting == "velocity":
        pos = _per_sample_mean((v_pos - target) ** 2)
        neg = _per_sample_mean((v_neg - target) ** 2)
    else:
        # x0_hat - x0 = -sigma (v - target): the x0-space error, scale-normalised per sample.
        s = sigma.float().reshape(b, *([1] * (v_theta.dim() - 1)))
        err_pos = s * (v_pos - target)
        err_neg = s * (v_neg - target)
        w_pos = _per_sample_mean(err_pos.detach().abs()).clamp_min(1e-5)
        w_neg = _per_sample_mean(err_neg.detach().abs()).clamp_min(1e-5)
        pos = _per_sample_mean(err_pos**2) / w_pos
        neg = _per_sample_mean(err_neg**2) / w_neg
    r = r.float().to(pos.device)
    r_safe = torch.where(torch.isnan(r), torch.full_like(r, 0.5), r)
    per_sample = (r_safe * pos + (1.0 - r_safe) * neg) / beta
    kl_per = torch.zeros_like(per_sample)
    if v_ref is not None and kl_coef > 0:
        kl_per = _per_sample_mean((v_theta_f - v_ref.detach().float()) ** 2)
    used = ~torch.isnan(r)
    if mask is not None:
        used = used & mask.to(used.device).bool()
    n_used = int(used.sum().item())
    if n_used == 0:
        zero = 0.0 * v_theta_f.sum()
        return NFTLoss(zero, 0.0, 0.0, 0.0, 0.0, 0)
    weights = used.float() / n_used
    policy = (per_sample * weights).sum()
    kl = (kl_per * weights).sum()
    total = policy + kl_coef * kl if kl_coef > 0 else policy
    return NFTLoss(
        loss=total,
        policy_loss=float(policy.detach()),
        kl=float(kl.detach()),
        positive=float((pos.detach() * weights).sum()),
        negative=float((neg.detach() * weights).sum()),
        n_used=n_used,
    )


def sample_train_sigmas(
    n: int,
    generator: torch.Generator,
    *,
    t_min: float = 0.0,
    t_max: float = 1.0,
    sampling: str = "uniform",
    shift: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``n`` forward-process noise levels: ``u ~ U(t_min, t_max)`` (or a logit-normal), warped by
    ``shift`` (the scheduler's time shift), kept inside [1e-3, 1 - 1e-3] (both ends carry no
    training signal and the adaptive weighting divides by the error scale)."""
    import torch

    if sampling == "logit-normal":
        u = torch.sigmoid(torch.randn(n, generator=generator))
        u = t_min + (t_max - t_min) * u
    elif sampling == "uniform":
        u = t_min + (t_max - t_min) * torch.rand(n, generator=generator)
    else:
        raise ValueError(f"unknown timestep sampling {sampling!r}")
    if shift is not None:
        u = shift(u)
    return u.clamp(1e-3, 1.0 - 1e-3)


# -- LoRA adapters --------------------------------------------------------------------------------
POLICY = "default"
OLD = "old"


def add_lora_adapters(transformer: Any, *, rank: int, alpha: int, target_modules: Sequence[str],
                      dropout: float = 0.0) -> list[torch.nn.Parameter]:
    """Add the trained adapter (``default``) and the old-policy adapter (``old``, a frozen copy)
    to a diffusers transformer; return the trainable parameters (float32)."""
    import torch
    from peft import LoraConfig

    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                     init_lora_weights=True)
    transformer.add_adapter(cfg, adapter_name=POLICY)
    with warnings.catch_warnings():
        # peft warns that a second adapter is unusual; two adapters is the point here.
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")
        transformer.add_adapter(cfg, adapter_name=OLD)
    policy = adapter_params(transformer, POLICY)
    if not policy:
        raise ValueError(f"no LoRA layer was created: none of {list(target_modules)} names a module of "
                         f"{type(transformer).__name__}")
    old = adapter_params(transformer, OLD)
    with torch.no_grad():
        for key, p in policy.items():
            p.data = p.data.float()
            old[key].data = p.data.clone()
    activate(transformer, POLICY)
    return list(policy.values())


def adapter_params(transformer: Any, name: str) -> dict[str, torch.nn.Parameter]:
    """The LoRA parameters of adapter ``name``, keyed by their name with the adapter name removed
    (so two adapters' dicts line up key by key)."""
    out = {}
    tag = f".{name}."
    for pname, p in transformer.named_parameters():
        if ".lora_" in pname and tag in pname:
            out[pname.replace(tag, ".")] = p
    return out


def activate(transformer: Any, name: str) -> None:
    """Make adapter ``name`` the one used by forward passes; only the policy adapter ever trains."""
    transformer.set_adapter(name)
    for p in adapter_params(transformer, POLICY).values():
        p.requires_grad_(True)
    for p in adapter_params(transformer, OLD).values():
        p.requires_grad_(False)


def snapshot(params: dict[str, torch.nn.Parameter] | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached float32 copies (for EMA, checkpoints and swaps)."""
    return {k: v.detach().float().clone() for k, v in params.items()}


def copy_into(target: dict[str, Any], source: dict[str, Any]) -> None:
    """``target[k] <- source[k]`` in place for every key (shapes must match)."""
    import torch

    missing = sorted(set(target) ^ set(source))
    if missing:
        raise ValueError(f"adapter keys differ ({len(missing)}), e.g. {missing[0]!r}")
    with torch.no_grad():
        for key, t in target.items():
            t.copy_(source[key].to(device=t.device, dtype=t.dtype))


def lerp_into(target: dict[str, Any], source: dict[str, Any], decay: float) -> None:
    """``target <- decay * target + (1 - decay) * source`` in place (an EMA step)."""
    import torch

    with torch.no_grad():
        for key, t in target.items():
            s = source[key].to(device=t.device, dtype=t.dtype)
            if decay == 0.0:
                t.copy_(s)
            else:
                t.mul_(decay).add_(s, alpha=1.0 - decay)


# -- conditioning ---------------------------------------------------------------------------------
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

    def encode_sources(self, sources: Sequence[Image.Image]) -> Cond:
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


class FluxKontextFamily(FluxFamily):
    """FLUX.1-Kontext editing (``FluxKontextPipeline``): the source image's latents are appended
    to the token sequence (position ids offset by 1) and only the target tokens are denoised."""

    name = "flux-kontext"
    task = "edit"
    pipeline_classes = ("FluxKontextPipeline",)

    def encode_sources(self, sources: Sequence[Image.Image]) -> Cond:
        import torch

        pipe = self.pipe
        vae = pipe.vae
        images = []
        for img in sources:
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


FAMILIES: dict[str, type[FlowFamily]] = {
    FluxFamily.name: FluxFamily,
    FluxKontextFamily.name: FluxKontextFamily,
    SD3Family.name: SD3Family,
}


def register_family(cls: type[FlowFamily]) -> type[FlowFamily]:
    """Add a pipeline family (usable as a decorator); ``pipeline_family: NAME`` then selects it."""
    FAMILIES[cls.name] = cls
    return cls


def family_for(pipe: Any, name: str = "auto", **kwargs: Any) -> FlowFamily:
    """The :class:`FlowFamily` for ``pipe`` (by class name when ``name="auto"``)."""
    if name != "auto":
        if name not in FAMILIES:
            raise ValueError(f"unknown pipeline family {name!r}; known: {', '.join(FAMILIES)}")
        return FAMILIES[name](pipe, **kwargs)
    # Most specific first: a subclass's pipeline names never collide with another family's.
    for cls in FAMILIES.values():
        if cls.matches(pipe):
            return cls(pipe, **kwargs)
    known = sorted(c for f in FAMILIES.values() for c in f.pipeline_classes)
    raise ValueError(f"no DiffusionNFT support for {type(pipe).__name__}; supported pipelines: {', '.join(known)} "
                     "(set pipeline_family explicitly, or register_family() your own)")


# -- sampling -----------------------------------------------------------------------------------
def ode_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    sampler: str = "heun",
) -> torch.Tensor:
    """Integrate the probability-flow ODE from ``sigmas[0]`` to ``sigmas[-1]`` (deterministic).

    ``velocity(x, sigma)`` returns ``dx/dsigma``. ``euler`` takes one evaluation per step;
    ``heun`` (2nd order) averages it with the slope at the end of the step, except on the last
    step into sigma = 0 where that slope is undefined in practice.
    """
    import torch

    if sampler not in ("euler", "heun"):
        raise ValueError(f"unknown sampler {sampler!r}; use euler or heun")
    x = x.float()
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        ds = float(s_next - s)
        v = velocity(x, s.reshape(1)).float()
        x_euler = x + ds * v
        if sampler == "heun" and float(s_next) > 0:
            v2 = velocity(x_euler, s_next.reshape(1)).float()
            x = x + ds * 0.5 * (v + v2)
        else:
            x = x_euler
    return x.to(torch.float32)


def chunks(seq: Sequence[Any] | Iterable[Any], size: int) -> list[list[Any]]:
    items = list(seq)
    return [items[i : i + size] for i in range(0, len(items), size)]
