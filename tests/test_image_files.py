"""Reading every kind of file a folder of originals holds, and every kind of bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atelier.core.dataset.folder_dataset import load_folder
from atelier.core.dataset.image_files import ImageFolderError, list_images, load_image
from atelier.core.dataset.preprocess import PreprocessSpec

from helpers import photo


def _u8(path: Path, **kw: object) -> np.ndarray:
    return (load_image(path, **kw).numpy() * 255 + 0.5).astype(np.uint8)


def test_formats_all_read_as_the_same_rgb(tmp_path: Path) -> None:
    cat = photo("chelsea.jpg")
    img = Image.fromarray(cat)
    for name in ("a.png", "a.bmp", "a.tif", "a.tiff", "a.webp"):
        img.save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
        assert np.array_equal(_u8(tmp_path / name), cat), name
    img.save(tmp_path / "a.jpg", quality=95)
    assert np.abs(_u8(tmp_path / "a.jpg").astype(int) - cat).mean() < 3


def test_sixteen_bit_greyscale_uses_the_full_range(tmp_path: Path) -> None:
    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    Image.fromarray(ramp).save(tmp_path / "g16.tif")
    for name in ("g16.png", "g16.tif"):
        out = load_image(tmp_path / name).numpy()
        assert out.shape == (32, 64, 3)
        assert np.allclose(out[..., 0], ramp / 65535.0, atol=1e-6), name


def test_cmyk_palette_greyscale_and_multipage(tmp_path: Path) -> None:
    cat = Image.fromarray(photo("chelsea.jpg"))
    cat.convert("CMYK").save(tmp_path / "cmyk.tif")
    assert np.abs(_u8(tmp_path / "cmyk.tif").astype(int) - np.asarray(cat.convert("CMYK").convert("RGB"))).max() <= 1
    cat.convert("P").save(tmp_path / "pal.png")
    assert np.array_equal(_u8(tmp_path / "pal.png"), np.asarray(cat.convert("P").convert("RGB")))
    cat.convert("L").save(tmp_path / "grey.png")
    grey = _u8(tmp_path / "grey.png")
    assert np.array_equal(grey[..., 0], np.asarray(cat.convert("L"))) and np.array_equal(grey[..., 0], grey[..., 2])
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    red.save(tmp_path / "pages.tif", save_all=True, append_images=[blue])
    assert _u8(tmp_path / "pages.tif")[0, 0].tolist() == [255, 0, 0]


def test_alpha_is_composited_on_the_chosen_colour(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :2, 3] = 255  # left half opaque red, right half transparent
    rgba[:, 2, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = _u8(tmp_path / "a.png", background=(0.0, 0.0, 1.0))
    assert out[0, 0].tolist() == [200, 0, 0] and out[0, 3].tolist() == [0, 0, 255]
    assert out[0, 2].tolist() == [round(200 * 128 / 255), 0, round(255 * 127 / 255)]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.fromarray(photo("chelsea.jpg"))  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    assert load_image(tmp_path / "phone.jpg").shape[:2] == (img.width, img.height)


def test_natural_order_and_captions(tmp_path: Path) -> None:
    for name in ("img10.png", "img2.png", "img1.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "img2.txt").write_text("  a caption \n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["img1.png", "img2.png", "img10.png"]
    data = load_folder(tmp_path)
    assert [i.caption for i in data.images] == [None, "a caption", None]


def test_missing_empty_and_imageless_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageFolderError, match="does not exist"):
        list_images(tmp_path / "nope")
    with pytest.raises(ImageFolderError, match="holds no image"):
        list_images(tmp_path)
    (tmp_path / "f.png").write_bytes(b"")
    with pytest.raises(ImageFolderError, match="is a file"):
        list_images(tmp_path / "f.png")


def _bad_files(folder: Path) -> None:
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a picture")
    Image.fromarray(photo("chelsea.jpg")).save(folder / "cut.png")
    data = (folder / "cut.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])


def test_bad_files_are_skipped_with_reasons_and_good_ones_kept(tmp_path: Path) -> None:
    _bad_files(tmp_path)
    Image.new("RGB", (16, 16), "green").save(tmp_path / "good.png")
    data = load_folder(tmp_path)
    assert [i.stem for i in data.images] == ["good"]
    reasons = {Path(s.path).name: s.reason for s in data.skipped}
    assert "0 bytes" in reasons["empty.png"]
    assert "not a readable image" in reasons["text.jpg"]
    assert "truncated" in reasons["cut.png"]
    assert "skipped cut.png" in data.report()


def test_a_folder_of_only_bad_files_fails_naming_them(tmp_path: Path) -> None:
    _bad_files(tmp_path)
    with pytest.raises(ImageFolderError, match=r"no readable image.*empty\.png"):
        load_folder(tmp_path)


def test_decompression_bombs_are_refused_before_decoding(tmp_path: Path) -> None:
    Image.new("L", (4000, 3000)).save(tmp_path / "big.png")  # 12 MP of zeros: a tiny file
    data_ok = load_folder(tmp_path, max_megapixels=20)
    assert len(data_ok.images) == 1
    with pytest.raises(ImageFolderError, match="megapixel limit"):
        load_folder(tmp_path, max_megapixels=10)


def test_mixed_sizes_must_be_planned_into_one_batch(tmp_path: Path) -> None:
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    Image.new("RGB", (20, 30)).save(tmp_path / "b.png")
    assert [i.image.shape for i in load_folder(tmp_path).images] == [(20, 30, 3), (30, 20, 3)]
    with pytest.raises(ImageFolderError, match="2 different sizes"):
        load_folder(tmp_path, same_size=True)
    square = load_folder(tmp_path, PreprocessSpec(resize="longer_edge", size=16, pad="square"), same_size=True)
    assert square.batch().shape == (2, 16, 16, 3)


def test_unreadable_caption_skips_its_image(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes(b"\xff\xfe\x00bad")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    data = load_folder(tmp_path)
    assert [i.stem for i in data.images] == ["b"] and "UTF-8" in data.skipped[0].reason


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR declares ``width`` x ``height`` and that holds no pixel data: Pillow opens its header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_max_megapixels_above_pillows_own_limit_is_the_one_that_applies(tmp_path: Path) -> None:
    from atelier.core.dataset.image_files import open_image

    def size(path: Path, **kw: float) -> tuple[int, int]:
        with open_image(path, **kw) as img:  # the header only
            return img.size

    pillow_limit = Image.MAX_IMAGE_PIXELS
    path = tmp_path / "huge.png"
    _png_header_only(path, 20_000, 12_000)  # 240 MP: over twice Pillow's limit (about 179 MP)
    assert 20_000 * 12_000 > 2 * pillow_limit
    assert size(path, max_megapixels=300) == (20_000, 12_000)  # the user's limit, not Pillow's
    with pytest.raises(ImageFolderError, match=r"20000x12000 is over the 200 megapixel limit.*raise 'max_megapixels'"):
        size(path, max_megapixels=200)
    with pytest.raises(ImageFolderError, match="over the 100 megapixel limit"):  # the default: Pillow fires first
        size(path)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # Pillow's own limit is put back


def test_max_megapixels_above_pillows_limit_decodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow checks again when it decodes (a TIFF's tile): with its limit made small, a real picture over it
    decodes when the user's limit allows it, and is refused by the user's limit otherwise."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    picture = np.arange(60 * 50 * 3, dtype=np.uint8).reshape(50, 60, 3)
    Image.fromarray(picture).save(tmp_path / "a.tif")  # 3000 pixels: over twice Pillow's (patched) limit
    assert np.array_equal(_u8(tmp_path / "a.tif", max_megapixels=0.004), picture)
    with pytest.raises(ImageFolderError, match="over the 0.0025 megapixel limit"):
        load_image(tmp_path / "a.tif", max_megapixels=0.0025)
    assert Image.MAX_IMAGE_PIXELS == 1000
