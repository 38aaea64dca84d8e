"""Image intake shared by every backend.

Accepts paths, bytes, PIL images, Hugging Face image dicts (``{"bytes": ..., "path": ...}``),
``data:`` URLs, and plain base64 strings (when ``allow_base64``). Produces a
:class:`PreparedImage`: RGB, EXIF-upright, within ``max_pixels``, with encoded bytes and the
MIME type that matches them. Images that need no change keep their original bytes, so nothing
is re-encoded (or degraded) on the way to a server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

# The released checkpoints were trained with images capped at 802,816 pixels (896 x 896).
DEFAULT_MAX_PIXELS = 802_816
# Decoded size above which an input is refused outright: a 64-megapixel RGB image already
# needs ~200 MB; anything larger is almost certainly a mistake or a decompression bomb.
DEFAULT_MAX_INPUT_PIXELS = 64_000_000
# Encoded size refused before decoding (a data URL or file this large is not a photo).
DEFAULT_MAX_INPUT_BYTES = 64 * 1024 * 1024

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
# Formats a chat server accepts as-is; anything else (TIFF, BMP, ...) is re-encoded to PNG.
_PASSTHROUGH = {"PNG", "JPEG", "WEBP"}


class ImageInputError(ValueError):
    """An image could not be used; the message names the input and the problem."""


@dataclass(eq=False)
class PreparedImage:
    """An RGB image ready for a model, with its encoded form.

    Pixels are decoded lazily: an image that passes through unchanged (already RGB, upright and
    within the pixel cap) is only verified, so an HTTP backend never pays for decoding it.
    """

    data: bytes
    mime: str
    source: str = "<image>"
    original_size: tuple[int, int] = (0, 0)
    _image: Image.Image | None = field(default=None, repr=False)
    _sha256: str | None = field(default=None, repr=False)
    _data_url: str | None = field(default=None, repr=False)

    @property
    def image(self) -> Image.Image:
        if self._image is None:
            try:
                img = Image.open(io.BytesIO(self.data))
                img.load()
            except (OSError, SyntaxError, ValueError) as exc:
                raise ImageInputError(f"{self.source}: corrupt image data ({exc})") from None
            self._image = _to_rgb(img)
        return self._image

    @property
    def size(self) -> tuple[int, int]:
        if self._image is not None:
            return self._image.size
        return self.original_size

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self.data).hexdigest()
        return self._sha256

    def data_url(self) -> str:
        if self._data_url is None:
            self._data_url = f"data:{self.mime};base64," + base64.b64encode(self.data).decode("ascii")
        return self._data_url

    def b64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


def _decode_base64(text: str, name: str) -> bytes:
    payload = text
    if text.startswith("data:"):
        header, sep, payload = text.partition(",")
        if not sep or ";base64" not in header:
            raise ImageInputError(f"{name}: data URL is not base64-encoded")
    if len(payload) > DEFAULT_MAX_INPUT_BYTES * 4 // 3 + 4:
        raise ImageInputError(f"{name}: encoded image larger than {DEFAULT_MAX_INPUT_BYTES} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError(f"{name}: not valid base64 image data") from None


_B64_CHARS = re.compile(r"[A-Za-z0-9+/=\s]+")


def _looks_like_base64(text: str) -> bool:
    # JPEG base64 begins with "/9j/", so a "/" is no sign of a path: a long run of base64
    # characters that is not an existing file is image data.
    return len(text) > 256 and _B64_CHARS.fullmatch(text[:1024]) is not None and not os.path.exists(text[:4096])


def _read_source(src: Any, *, base_dir: Path | None, allow_paths: bool, allow_base64: bool, name: str) -> tuple[bytes | None, Image.Image | None, str]:
    if isinstance(src, PreparedImage):
        return src.data, src.image, src.source
    if isinstance(src, Image.Image):
        return None, src, name
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), None, name
    if isinstance(src, dict):
        if src.get("bytes") is not None:
            return bytes(src["bytes"]), None, str(src.get("path") or name)
        if src.get("path"):
            return _read_source(src["path"], base_dir=base_dir, allow_paths=allow_paths, allow_base64=False, name=name)
        raise ImageInputError(f"{name}: image dict has neither 'bytes' nor 'path'")
    if isinstance(src, (str, os.PathLike)):
        text = os.fspath(src)
        # A data URL says what it is, so it is accepted wherever images are (a JSONL batch line
        # may carry one); plain base64 only where asked for, since any string could be a path.
        if (isinstance(src, str) and text.startswith("data:")) or (allow_base64 and _looks_like_base64(text)):
            return _decode_base64(text, name), None, name
        if not allow_paths:
            raise ImageInputError(f"{name}: file paths are not accepted here; send image bytes as base64")
        path = Path(text).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        shown = str(path) if len(str(path)) <= 200 else str(path)[:200] + "..."
        try:
            exists = path.exists()
        except (OSError, ValueError):  # a name too long for the filesystem, or not encodable
            exists = False
        if not exists:
            raise ImageInputError(f"image file not found: {shown}")
        if not path.is_file():
            raise ImageInputError(f"not a file: {shown}")
        size = path.stat().st_size
        if size > DEFAULT_MAX_INPUT_BYTES:
            raise ImageInputError(f"image file too large ({size} bytes): {path}")
        if size == 0:
            raise ImageInputError(f"image file is empty: {path}")
        return path.read_bytes(), None, str(path)
    raise ImageInputError(f"{name}: unsupported image type {type(src).__name__}")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: rescale to 8 bits instead of clipping everything to white.
        arr = img.point(lambda v: v * (255.0 / 65535.0)) if img.mode != "I" else img
        return arr.convert("L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        # Transparent regions become white: the colour a viewer of a PNG most often sees.
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def fit_within(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """Largest size with the same aspect ratio and at most ``max_pixels`` pixels."""
    w, h = size
    if w * h <= max_pixels:
        return w, h
    scale = math.sqrt(max_pixels / (w * h))
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    while nw * nh > max_pixels:  # float rounding
        if nw >= nh:
            nw -= 1
        else:
            nh -= 1
    return nw, nh


def load_image(
    src: Any,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
    base_dir: str | os.PathLike | None = None,
    allow_paths: bool = True,
    allow_base64: bool = False,
    name: str = "image",
) -> PreparedImage:
    """Load and normalise one image. Raises :class:`ImageInputError` with a clear reason."""
    if isinstance(src, PreparedImage) and (max_pixels is None or src.size[0] * src.size[1] <= max_pixels):
        return src
    data, img, label = _read_source(
        src,
        base_dir=Path(base_dir) if base_dir is not None else None,
        allow_paths=allow_paths,
        allow_base64=allow_base64,
        name=name,
    )
    fmt: str | None = None
    if img is None:
        assert data is not None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                fmt = img.format
                w, h = img.size
                if w * h > max_input_pixels:
                    raise ImageInputError(
                        f"{label}: image is {w}x{h} ({w * h} pixels), above the limit of "
                        f"{max_input_pixels}; refusing to decode it"
                    )
                if (
                    fmt == "PNG"
                    and img.mode == "RGB"
                    and (max_pixels is None or w * h <= max_pixels)
                    and not _has_rotation(img)
                ):
                    # Already what a model wants: check the chunk CRCs (catches truncation)
                    # without inflating the pixels; they are decoded later only if needed.
                    Image.open(io.BytesIO(data)).verify()
                    return PreparedImage(data, "image/png", label, (w, h))
                if (
                    fmt == "JPEG"
                    and img.mode == "RGB"
                    and (max_pixels is None or w * h <= max_pixels)
                    and not _has_rotation(img)
                ):
                    # Decoding at 1/8 scale reads the whole stream (so truncation still fails)
                    # for a fraction of the cost; full pixels are decoded later only if needed.
                    probe = Image.open(io.BytesIO(data))
                    probe.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                    probe.load()
                    return PreparedImage(data, "image/jpeg", label, (w, h))
                img.load()
        except ImageInputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageInputError(f"{label}: image is too large to decode safely (decompression bomb guard)") from None
        except UnidentifiedImageError:
            raise ImageInputError(f"{label}: not a recognised image file") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageInputError(f"{label}: corrupt or truncated image ({exc})") from None
    else:
        w, h = img.size
        if w * h > max_input_pixels:
            raise ImageInputError(f"{label}: image is {w}x{h}, above the limit of {max_input_pixels} pixels")
    original_size = img.size
    changed = _has_rotation(img)
    if changed:
        img = ImageOps.exif_transpose(img)
    rgb = _to_rgb(img)
    changed = changed or rgb is not img
    if max_pixels is not None:
        target = fit_within(rgb.size, max_pixels)
        if target != rgb.size:
            rgb = rgb.resize(target, Image.Resampling.LANCZOS)
            changed = True
    if data is not None and not changed and fmt in _PASSTHROUGH:
        return PreparedImage(data, _MIME[fmt], label, original_size, _image=rgb)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return PreparedImage(buf.getvalue(), "image/png", label, original_size, _image=rgb)


def _has_rotation(img: Image.Image) -> bool:
    try:
        if img.format == "PNG" and not getattr(img, "im", None):
            # PngImageFile.getexif() decodes the whole image to look for a late eXIf chunk;
            # an early one (the norm) is already in info.
            raw = img.info.get("exif")
            if not raw:
                return False
            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(0x0112, 1)) not in (0, 1)
        return int(img.getexif().get(0x0112, 1)) not in (0, 1)
    except Exception:  # a broken EXIF block is not worth failing the image for
        return False


def load_images(srcs: Any, **kwargs: Any) -> list[PreparedImage]:
    """One or several images (a list or tuple)."""
    if srcs is None:
        return []
    if isinstance(srcs, (list, tuple)):
        return [load_image(s, **{**kwargs, "name": f"{kwargs.get('name', 'image')}[{i}]"}) for i, s in enumerate(srcs)]
    return [load_image(srcs, **kwargs)]
