"""Training the AdaIN decoder on tiny folders: the loss falls, a resumed run equals one that never
stopped, the saved file loads back, and bad folders fail before training."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from atelier.core.shared.progress import Cancelled
from atelier.core.style import adain_model as am
from atelier.training.loop import TrainingDiverged
from atelier.training.style import adain_decoder as ad

from helpers import SAMPLES, CancelAfter, tiny_adain_files

CONFIG = ad.DecoderConfig(steps=4, batch_size=2, crop=32, resize_to=48, lr=1e-3, checkpoint_every=2, seed=3)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_adain_files(tmp_path_factory.mktemp("adain"))


@pytest.fixture(scope="module")
def styles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("styles")
    for name in ("coffee.webp", "rocket.png"):
        shutil.copy(SAMPLES / name, folder / name)
    return folder


def _model(files: tuple[Path, Path]) -> am.AdaINModel:
    return am.load_model(files[0])  # a fresh decoder, trained from scratch


def _total(losses: list[tuple[float, float]], weight: float) -> list[float]:
    return [c + weight * s for c, s in losses]


def test_training_lowers_the_loss(files, styles: Path, tmp_path: Path) -> None:
    config = replace(CONFIG, steps=60, checkpoint_every=100, lr=1e-4, style_weight=1.0)
    result = ad.train_decoder(_model(files), SAMPLES, styles, config, tmp_path)
    total = _total(result.losses, config.style_weight)
    assert len(total) == 60
    assert sum(total[-10:]) / 10 < 0.7 * sum(total[:10]) / 10, (total[:10], total[-10:])


def test_resume_equals_a_run_that_never_stopped(files, styles: Path, tmp_path: Path) -> None:
    straight = _model(files)
    ad.train_decoder(straight, SAMPLES, styles, CONFIG, tmp_path / "a")
    with pytest.raises(Cancelled):
        ad.train_decoder(_model(files), SAMPLES, styles, CONFIG, tmp_path / "b", progress=CancelAfter(3))
    resumed = _model(files)
    result = ad.train_decoder(resumed, SAMPLES, styles, CONFIG, tmp_path / "b")
    assert result.resumed_from == 3 and len(result.losses) == 4
    for key, value in straight.decoder.state_dict().items():
        torch.testing.assert_close(resumed.decoder.state_dict()[key], value, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="other settings"):
        ad.train_decoder(_model(files), SAMPLES, styles, replace(CONFIG, style_weight=3.0), tmp_path / "b")


def test_the_saved_decoder_loads_back_and_fine_tunes(files, styles: Path, tmp_path: Path) -> None:
    model = _model(files)
    result = ad.train_decoder(model, SAMPLES, styles, CONFIG, tmp_path / "run")
    path = ad.save_trained(model, result, CONFIG, tmp_path / "adain", "mine", "scratch")
    again = am.load_model(files[0], path)
    features = torch.randn(1, model.channels, 5, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(again.decode(features), model.decode(features))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata()["steps"] == "4" and handle.metadata()["format"] == "atelier-adain-decoder"
    tuned = ad.train_decoder(again, SAMPLES, styles, replace(CONFIG, steps=2), tmp_path / "tune")
    assert tuned.step == 2
    assert ad.loss_plot(result, CONFIG).size == (640, 360)


def test_bad_folders_and_settings_fail_before_training(files, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        ad.train_decoder(_model(files), SAMPLES, tmp_path / "empty", CONFIG, tmp_path / "run")
    with pytest.raises(ValueError, match="does not exist"):
        ad.train_decoder(_model(files), tmp_path / "missing", SAMPLES, CONFIG, tmp_path / "run")
    with pytest.raises(ValueError, match="resize_to must be at least the crop"):
        ad.DecoderConfig(crop=256, resize_to=128)
    assert not (tmp_path / "run").exists()


def test_a_non_finite_loss_stops_and_names_the_step(files, styles: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ad.train_decoder(_model(files), SAMPLES, styles, replace(CONFIG, steps=2), tmp_path)
    real = ad.decoder_losses

    def overflowing(*args):
        content_loss, style_loss = real(*args)
        return content_loss * float("inf"), style_loss

    monkeypatch.setattr(ad, "decoder_losses", overflowing)
    with pytest.raises(TrainingDiverged, match=r"at step 3; .*last good checkpoint \(step 2\)"):
        ad.train_decoder(_model(files), SAMPLES, styles, CONFIG, tmp_path)
    from atelier.training import checkpoints

    assert checkpoints.load(tmp_path / "checkpoint")["step"] == 2
