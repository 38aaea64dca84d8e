"""Image intake: every input shape, normalisation, caps and clear errors."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from rationalrewards.images import (
    DEFAULT_MAX_PIXELS,
    ImageInputError,
    PreparedImage,
    fit_within,
    load_image,
    load_images,
)


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_small_png_file_passes_through_byte_for_byte(tmp_path):
    data = png_bytes(Image.new("RGB", (32, 24), (10, 200, 30)))
    path = tmp_path / "x.png"
    path.write_bytes(data)
    img = load_image(path)
    assert img.data == data
    assert img.mime == "image/png"
    assert img.size == (32, 24)
    assert img.data_url().startswith("data:image/png;base64,")


def test_jpeg_keeps_jpeg_mime():
    img = load_image(png_bytes(Image.new("RGB", (16, 16), "red"), "JPEG"))
    assert img.mime == "image/jpeg"


def test_large_image_is_downscaled_to_the_training_cap_keeping_aspect_ratio():
    img = load_image(Image.new("RGB", (2048, 1024), "white"))
    w, h = img.size
    assert w * h <= DEFAULT_MAX_PIXELS
    assert abs(w / h - 2.0) < 0.01
    assert img.mime == "image/png"
    assert img.original_size == (2048, 1024)


def test_fit_within_never_exceeds_budget():
    for size in [(1000, 999), (4096, 3), (3, 4096), (897, 897)]:
        w, h = fit_within(size, 802_816)
        assert w * h <= 802_816


def test_max_pixels_none_disables_downscaling():
    img = load_image(Image.new("RGB", (1200, 1200)), max_pixels=None)
    assert img.size == (1200, 1200)


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    img = load_image(png_bytes(rgba))
    assert img.image.mode == "RGB"
    assert img.image.getpixel((0, 0)) == (255, 255, 255)


def test_palette_cmyk_and_16bit_become_rgb():
    pal = Image.new("P", (8, 8))
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    grey16 = Image.new("I;16", (8, 8), 65535)
    for src in (pal, cmyk, grey16):
        img = load_image(src)
        assert img.image.mode == "RGB"
    assert load_image(grey16).image.getpixel((0, 0))[0] >= 250  # rescaled, not clipped garbage


def test_exif_orientation_is_applied():
    base = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = png_bytes(base, "JPEG", exif=exif.tobytes())
    img = load_image(data)
    assert img.size == (20, 40)


def test_hf_image_dict_with_bytes_and_with_path(tmp_path):
    data = png_bytes(Image.new("RGB", (4, 4)))
    assert load_image({"bytes": data, "path": None}).size == (4, 4)
    (tmp_path / "a.png").write_bytes(data)
    assert load_image({"bytes": None, "path": "a.png"}, base_dir=tmp_path).size == (4, 4)


def test_relative_paths_resolve_against_base_dir(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(png_bytes(Image.new("RGB", (4, 4))))
    assert load_image("sub/a.png", base_dir=tmp_path).size == (4, 4)


def test_data_url_and_base64_only_when_allowed():
    data = png_bytes(Image.new("RGB", (300, 300), "green"))
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert load_image(url, allow_base64=True).size == (300, 300)
    assert load_image(base64.b64encode(data).decode(), allow_base64=True, allow_paths=False).size == (300, 300)
    with pytest.raises(ImageInputError, match="not valid base64"):
        load_image("data:image/png;base64,@@@@", allow_base64=True)


def test_data_urls_are_accepted_wherever_paths_are_but_plain_base64_only_when_allowed(tmp_path):
    data = png_bytes(Image.new("RGB", (300, 300), "green"))
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    # A JSONL batch line may carry a data URL; it never reads as "file not found: data:...".
    assert load_image(url, base_dir=tmp_path).size == (300, 300)
    with pytest.raises(ImageInputError, match="image file not found"):
        load_image(base64.b64encode(data).decode())  # without allow_base64 a bare string is a path
    with pytest.raises(ImageInputError, match="data URL is not base64-encoded"):
        load_image("data:image/png,rawbytes")
    with pytest.raises(ImageInputError, match="not valid base64"):
        load_image("data:image/png;base64,@@@@")
    with pytest.raises(ImageInputError, match="not a recognised image"):
        load_image("data:image/png;base64," + base64.b64encode(b"not an image").decode())


def test_server_side_paths_can_be_refused():
    with pytest.raises(ImageInputError, match="file paths are not accepted"):
        load_image("/etc/passwd", allow_paths=False)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ImageInputError, match=r"image file not found: .*nope\.png"):
        load_image(tmp_path / "nope.png")


def test_corrupt_and_truncated_files_are_clear_errors(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    with pytest.raises(ImageInputError, match="not a recognised image"):
        load_image(tmp_path / "junk.png")
    good = png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"))
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageInputError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageInputError, match="empty"):
        load_image(tmp_path / "empty.png")


def test_decompression_bomb_is_refused_before_decoding():
    # A tiny file that claims to be huge: 20000 x 20000 pixels of one colour compresses to ~1 MB.
    bomb = png_bytes(Image.new("1", (20000, 20000)))
    assert len(bomb) < 2_000_000
    with pytest.raises(ImageInputError, match=r"refusing to decode|decompression bomb"):
        load_image(bomb, max_input_pixels=64_000_000)


def test_prepared_image_is_returned_as_is_and_hash_is_stable():
    img = load_image(Image.new("RGB", (8, 8), "red"))
    assert load_image(img) is img
    assert isinstance(img, PreparedImage)
    assert img.sha256 == load_image(Image.new("RGB", (8, 8), "red")).sha256


def test_load_images_accepts_one_or_many():
    one = Image.new("RGB", (4, 4))
    assert len(load_images(one)) == 1
    assert len(load_images([one, one])) == 2
    assert load_images(None) == []


def test_unsupported_type_is_named():
    with pytest.raises(ImageInputError, match="unsupported image type int"):
        load_image(42)


def test_plain_base64_jpeg_is_not_mistaken_for_a_path():
    data = png_bytes(Image.new("RGB", (300, 300), "green"), "JPEG")
    text = base64.b64encode(data).decode()
    assert text.startswith("/9j/")
    img = load_image(text, allow_base64=True, allow_paths=False)
    assert img.mime == "image/jpeg" and img.size == (300, 300)
