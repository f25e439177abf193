"""Damaged pictures and sounds among good ones: the trainers and Style Augmentation settle what is usable
before they start, skip the rest and name every skip, and never stop half-way on a bad file."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.core.dataset.image_files import ImageFolderError
from atelier.core.style import adain_model as am
from atelier.training.style import adain_decoder as ad

from helpers import SAMPLES, tiny_adain_files

CONFIG = ad.DecoderConfig(steps=6, batch_size=2, crop=32, resize_to=48, lr=1e-3, checkpoint_every=100, seed=3)


def truncated(path: Path, fmt: str, seed: int = 0) -> Path:
    """A picture whose header is intact and whose pixel data is cut after 60 % of its bytes."""
    noise = np.random.default_rng(seed).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format=fmt)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


def mixed_folder(folder: Path) -> Path:
    """Two good pictures and two truncated ones (a JPEG and a PNG)."""
    folder.mkdir(parents=True)
    for name in ("chelsea.jpg", "rocket.png"):
        shutil.copy(SAMPLES / name, folder / name)
    truncated(folder / "broken.jpg", "JPEG")
    truncated(folder / "cut.png", "PNG", seed=1)
    return folder


@pytest.fixture(scope="module")
def adain_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_adain_files(tmp_path_factory.mktemp("adain"))


def test_the_truncated_files_pass_a_header_check_but_do_not_decode(tmp_path: Path) -> None:
    for path in (truncated(tmp_path / "a.jpg", "JPEG"), truncated(tmp_path / "b.png", "PNG")):
        with Image.open(path) as img:
            assert img.size == (96, 80)
            with pytest.raises(OSError, match="truncated"):
                img.load()


def test_decoder_training_skips_truncated_pictures_and_names_them(adain_files, tmp_path: Path) -> None:
    content = mixed_folder(tmp_path / "content")
    styles = mixed_folder(tmp_path / "styles")
    result = ad.train_decoder(am.load_model(adain_files[0]), content, styles, CONFIG, tmp_path / "run")
    assert result.step == CONFIG.steps and len(result.losses) == CONFIG.steps
    assert [Path(s.path) for s in result.skipped] == [content / "broken.jpg", content / "cut.png",
                                                      styles / "broken.jpg", styles / "cut.png"]
    lines = result.report().splitlines()
    assert lines[0] == f"trained {CONFIG.steps} steps"
    assert lines[1].startswith("skipped broken.jpg: cannot decode") and "truncated" in lines[1]
    assert lines[2].startswith("skipped cut.png: cannot decode")


def test_decoder_training_with_only_broken_pictures_fails_before_training(adain_files, tmp_path: Path) -> None:
    content = mixed_folder(tmp_path / "content")
    broken = tmp_path / "broken"
    broken.mkdir()
    truncated(broken / "a.jpg", "JPEG")
    with pytest.raises(ImageFolderError, match=r"no readable picture in the style folder .*a\.jpg: cannot decode"):
        ad.train_decoder(am.load_model(adain_files[0]), content, broken, CONFIG, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_train_decoder_command_lists_its_skips(adain_files, tmp_path: Path, capsys) -> None:
    content = mixed_folder(tmp_path / "content")
    styles = tmp_path / "styles"
    styles.mkdir()
    shutil.copy(SAMPLES / "coffee.webp", styles / "coffee.webp")
    assert main(["train-decoder", str(content), str(styles), "--encoder", str(adain_files[0]), "--out-dir",
                 str(tmp_path / "out"), "--run", str(tmp_path / "run"), "--steps", "3", "--batch-size", "2",
                 "--resize-to", "48", "--crop", "32", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert f"skipped {content / 'broken.jpg'}: cannot decode" in captured.err
    assert f"skipped {content / 'cut.png'}: cannot decode" in captured.err
    assert "after 3 steps" in captured.out


def bomb_png(path: Path, width: int = 30_000, height: int = 30_000) -> Path:
    """A small PNG whose header declares ``width`` x ``height`` pixels (900 MP: a decompression bomb)."""
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of header fields
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))
    return path


def test_a_16_bit_tiff_pair_gives_the_pictures_of_its_8_bit_twin(tmp_path: Path) -> None:
    import soundfile

    from atelier.core.audio.features import MelSpec
    from atelier.core.audio.pairs import paired_folder

    from helpers import synthetic_sound

    folder = tmp_path / "pairs"
    folder.mkdir()
    grey8 = np.random.default_rng(0).integers(0, 256, (24, 32), dtype=np.uint16)
    Image.fromarray(grey8 * 257).save(folder / "deep.tif")  # mode I;16: 16-bit grey
    Image.fromarray(grey8.astype(np.uint8)).save(folder / "flat.png")
    for stem in ("deep", "flat"):
        soundfile.write(folder / f"{stem}.wav", synthetic_sound(0), 8000)
    with Image.open(folder / "deep.tif") as img:
        assert img.mode == "I;16"
    pairs = paired_folder(folder, MelSpec(sample_rate=8000, window_seconds=0.5, n_mels=32))
    assert pairs.names == ["deep", "flat"]
    deep, flat = pairs.pictures
    assert deep.shape == flat.shape == (24, 32, 3)
    torch.testing.assert_close(deep, flat, rtol=0, atol=1e-6)
    assert float(deep.min()) < 0.05 and float(deep.mean()) < 0.6  # not all white


def _bad_pairs(folder: Path) -> Path:
    from helpers import synthetic_paired_folder

    synthetic_paired_folder(folder, per_class=2)
    truncated(folder / "c0_00.png", "PNG")
    (folder / "c1_01.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    bomb_png(folder / "c2_00.png")
    return folder


def test_bad_pictures_and_sounds_are_skipped_with_their_names(tmp_path: Path) -> None:
    from atelier.core.audio.features import MelSpec
    from atelier.core.audio.pairs import paired_folder
    from atelier.core.shared.progress import SilentProgress

    folder = _bad_pairs(tmp_path / "pairs")
    progress = SilentProgress(12)
    pairs = paired_folder(folder, MelSpec(sample_rate=8000, window_seconds=0.5, n_mels=32), progress)
    assert len(pairs.names) == 9 and not {"c0_00", "c1_01", "c2_00"} & set(pairs.names)
    assert pairs.features.shape[0] == len(pairs.pictures) == 9
    skips = [n for n in pairs.notes if n.startswith("skipped ")]
    assert len(skips) == 3
    assert skips[0].startswith("skipped c0_00.png: cannot decode") and "truncated" in skips[0]
    assert skips[1].startswith("skipped c1_01.wav: ")
    assert skips[2].startswith("skipped c2_00.png: ") and "decompression bomb" in skips[2]
    assert progress.done == 12  # skipped pairs count towards the progress total too
    for name in ("c0_00.png", "c1_01.wav", "c2_00.png"):
        (folder / name).unlink()
    (folder / "c0_00.wav").unlink()
    for name in folder.iterdir():
        if name.suffix == ".png":
            truncated(name, "PNG")
    with pytest.raises(ValueError, match=r"no usable pair in .*skipped c0_01\.png: cannot decode"):
        paired_folder(folder, MelSpec(sample_rate=8000, window_seconds=0.5, n_mels=32))


def test_audio_train_command_names_the_skipped_pairs(tmp_path: Path, capsys) -> None:
    from helpers import tiny_clip_folder

    clip = tiny_clip_folder(tmp_path / "clip")
    folder = _bad_pairs(tmp_path / "pairs")
    assert main(["audio-train", str(folder), "--clip", str(clip), "--out-dir", str(tmp_path / "enc"), "--run",
                 str(tmp_path / "runs"), "--epochs", "1", "--batch-size", "4", "--sample-rate", "8000",
                 "--window-seconds", "0.5", "--n-mels", "32", "--val-fraction", "0.25", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "note: skipped c0_00.png: cannot decode" in captured.err
    assert "note: skipped c1_01.wav: " in captured.err and "note: skipped c2_00.png: " in captured.err
    assert (tmp_path / "enc" / "atelier_audio.safetensors").is_file()


def test_style_command_lists_unreadable_originals_and_styles(adain_files, tmp_path: Path, capsys) -> None:
    originals = mixed_folder(tmp_path / "originals")
    styles = tmp_path / "styles"
    styles.mkdir()
    shutil.copy(SAMPLES / "coffee.webp", styles / "coffee.webp")
    truncated(styles / "붓터치.png", "PNG")
    assert main(["style", str(originals), "--direction", "restyle_originals", "--styles", str(styles), "--encoder",
                 str(adain_files[0]), "--decoder", str(adain_files[1]), "--output", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "wrote 4 images (2 virtual): 2 content pictures in the style of 1 style pictures" in captured.out
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped ")]
    assert sorted(line.split(": ")[0] for line in skipped) == [f"skipped {originals / 'broken.jpg'}",
                                                               f"skipped {originals / 'cut.png'}",
                                                               f"skipped {styles / '붓터치.png'}"]
    assert all("truncated" in line for line in skipped)


def test_a_large_set_is_checked_whole_and_read_again_each_step(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ad, "CACHE_LIMIT", 1)  # more usable pictures than the cache holds: read from disk
    folder = mixed_folder(tmp_path / "content")
    pool = ad.PicturePool(folder, 48, "content")
    assert [p.name for p in pool.paths] == ["chelsea.jpg", "rocket.png"] and len(pool.skipped) == 2
    first = pool.get(0)
    assert min(first.shape[:2]) == 48
    torch.testing.assert_close(pool.get(0), first, rtol=0, atol=0)
    truncated(folder / "rocket.png", "PNG")  # damaged after the check: named, with what to do
    with pytest.raises(ImageFolderError, match=r"rocket\.png' changed or went missing during training .*put it "
                                               r"back as it was, or remove it and run again"):
        pool.get(1)
