"""Damaged pictures and sounds among good ones: the trainers and Style Augmentation settle what is usable
before they start, skip the rest and name every skip, and never stop half-way on a bad file."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atelier.cli import main
from atelier.core import adain_model as am
from atelier.core.image_files import ImageFolderError
from atelier.training import adain_decoder as ad

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
