"""Image batches as RL frameworks hand them over, turned into something the judge can read.

Accepted for a batch of N images:

* a torch tensor ``N x C x H x W`` (float in [0, 1], or uint8), as flow_grpo / DiffusionNFT
  decode them; ``N x H x W x C`` is recognised too;
* a numpy array ``N x H x W x C`` (uint8, or float in [0, 1]) or ``N x C x H x W``;
* a list whose elements are any of: PIL images, paths, bytes, ``PreparedImage``, HF image
  dicts, or single ``C x H x W`` / ``H x W x C`` tensors and arrays.

Torch is never imported here: tensors are recognised by duck typing and converted through
their own methods, so a pipeline without torch (PIL lists) pays nothing.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

_CHANNELS = (1, 3, 4)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch" and hasattr(x, "detach")


def _is_numpy(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "numpy" and hasattr(x, "ndim") and hasattr(x, "dtype")


def is_array(x: Any) -> bool:
    """A torch tensor or a numpy array (not a list of them)."""
    return _is_torch(x) or _is_numpy(x)


def _to_uint8_numpy(x: Any) -> Any:
    """A tensor or array as a uint8 numpy array of the same shape (floats read as [0, 1])."""
    import numpy as np

    if _is_torch(x):
        import torch  # already loaded: the caller handed us a tensor

        t = x.detach()
        if t.dtype != torch.uint8:
            t = (t.float().nan_to_num(0.0).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        return t.cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"image array has unsupported dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr, 0, 255).astype(np.uint8)
    return (np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _channels_last(shape: tuple[int, ...], prefer_channels_first: bool) -> bool:
    """Whether a 3-d image shape is H x W x C (else C x H x W)."""
    first, last = shape[0] in _CHANNELS, shape[-1] in _CHANNELS
    if first and not last:
        return False
    if last and not first:
        return True
    if not first and not last:
        raise ValueError(f"cannot tell the channel axis of an image of shape {tuple(shape)}; "
                         "expected C x H x W or H x W x C with 1, 3 or 4 channels")
    return not prefer_channels_first


def _array_image(x: Any, *, prefer_channels_first: bool) -> Image.Image:
    arr = _to_uint8_numpy(x)
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L").convert("RGB")
    if arr.ndim != 3:
        raise ValueError(f"an image array must have 2 or 3 dimensions, got shape {tuple(arr.shape)}")
    if not _channels_last(tuple(arr.shape), prefer_channels_first):
        arr = arr.transpose(1, 2, 0)
    channels = arr.shape[-1]
    if channels == 1:
        return Image.fromarray(arr[..., 0], mode="L").convert("RGB")
    img = Image.fromarray(arr.copy(), mode="RGB" if channels == 3 else "RGBA")
    return img


def to_image(x: Any) -> Any:
    """One image: arrays and tensors become PIL; anything else is returned for ``load_image``."""
    if _is_torch(x):
        return _array_image(x, prefer_channels_first=True)
    if _is_numpy(x):
        return _array_image(x, prefer_channels_first=False)
    return x


def as_image_list(images: Any, *, name: str = "images") -> list[Any]:
    """A batch of images as a list with one entry per sample (see the module docstring)."""
    if images is None:
        raise TypeError(f"{name} is None; expected a batch of images")
    if is_array(images):
        ndim = int(images.ndim)
        if ndim == 3:
            # A single C x H x W image is a batch of one only if that is unambiguous.
            raise ValueError(f"{name} has shape {tuple(images.shape)}: pass a batch (N x C x H x W) or a list")
        if ndim != 4:
            raise ValueError(f"{name} must be a 4-d batch (N x C x H x W), got shape {tuple(images.shape)}")
        prefer_cf = _is_torch(images)
        return [_array_image(images[i], prefer_channels_first=prefer_cf) for i in range(int(images.shape[0]))]
    if isinstance(images, (str, bytes, bytearray, Image.Image)):
        raise TypeError(f"{name} must be a batch (a list or an N x C x H x W tensor), not a single "
                        f"{type(images).__name__}")
    try:
        items = list(images)
    except TypeError:
        raise TypeError(f"{name} must be a list of images or an image tensor, not {type(images).__name__}") from None
    return [to_image(x) for x in items]


def as_source_list(sources: Any, n: int) -> list[Any]:
    """Per-sample source images (edit tasks): None, or N entries each None / one image / a list."""
    if sources is None:
        return [None] * n
    if is_array(sources):
        if int(sources.ndim) == 5:  # N x K x C x H x W: K sources per sample
            return [[to_image(sources[i][k]) for k in range(int(sources.shape[1]))] for i in range(n)]
        entries = as_image_list(sources, name="sources")
    else:
        if isinstance(sources, (str, bytes, bytearray, Image.Image)):
            raise TypeError("sources must be a list with one entry per sample")
        entries = list(sources)
    if len(entries) != n:
        raise ValueError(f"sources has {len(entries)} entries but there are {n} images")
    out: list[Any] = []
    for entry in entries:
        if entry is None:
            out.append(None)
        elif isinstance(entry, (list, tuple)):
            out.append([to_image(s) for s in entry] or None)
        elif is_array(entry) and int(entry.ndim) == 4:
            out.append([to_image(entry[k]) for k in range(int(entry.shape[0]))])
        else:
            out.append(to_image(entry))
    return out
