"""Atelier FID / KID Score as ComfyUI calls it: weights from models/atelier/fid, batches or folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from atelier.core.metrics import fid
from atelier.nodes.fid import AtelierFID

from helpers import SAMPLES, as_batch, photo

NODE_ARGS = {"kid_subsets": 10, "kid_subset_size": 3, "seed": 0, "batch_size": 4}


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output_dir: Path) -> fid.FIDInceptionV3:
    """A random FID Inception saved where the node looks (the real file is not redistributable here)."""
    torch.manual_seed(0)
    model = fid.FIDInceptionV3()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    folder = tmp_path / "models" / "atelier" / "fid"
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / fid.FID_WEIGHTS_NAME)
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "models"))
    return model.eval()


def test_scores_a_batch_against_a_folder(weights: fid.FIDInceptionV3, output_dir: Path) -> None:
    names = ["chelsea.jpg", "coffee.webp", "rocket.png"]
    batch = as_batch(*(photo(n, (128, 96)) for n in names))
    with pytest.warns(UserWarning):  # the random weights' hash is not the canonical one
        out = AtelierFID().score(folder_a="", folder_b=str(SAMPLES), images_a=batch, **NODE_ARGS)
    value, kid, kid_std, report, inception, inception_std = out["result"]
    a = fid.features(weights, batch)
    b = fid.folder_features(weights, SAMPLES)
    assert value == pytest.approx(fid.fid_from_features(a, b), rel=1e-6)
    assert (kid, kid_std) == pytest.approx(fid.kid_from_features(a, b, 10, 3, 0), rel=1e-6)
    # IS of the first set (the wired batch), its 10 default splits clipped to its 3 images
    assert (inception, inception_std) == pytest.approx(fid.inception_score(weights.logits(a), 3, True, 0), rel=1e-6)
    assert out["ui"]["text"] == [report] and "3 vs 4 images; IS of the first set over 3 splits" in report
    assert f"IS {inception:.3f} ± {inception_std:.3f}" in report
    assert np.isfinite(value) and value > 0
    assert any((output_dir / "atelier" / "fid_cache").rglob("*.safetensors"))  # folder features were cached

    with pytest.warns(UserWarning):  # set a from the folder (cached now), IS in one split
        again = AtelierFID().score(folder_a=str(SAMPLES), folder_b="", images_b=batch, is_splits=1, **NODE_ARGS)
    assert again["result"][4:] == pytest.approx(fid.inception_score(weights.logits(b), 1, True, 0), rel=1e-6)
    assert "4 vs 3 images; IS of the first set over 1 split;" in again["result"][3]


def test_missing_weights_and_missing_sets_are_clear_errors(tmp_path: Path, monkeypatch, output_dir: Path) -> None:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(ValueError, match="wire images_a or give folder_a"):
        AtelierFID().score(folder_a="", folder_b=str(SAMPLES), **NODE_ARGS)
    with pytest.raises(ValueError, match="at least 2"):
        AtelierFID().score(folder_a="", folder_b=str(SAMPLES), images_a=torch.rand(1, 64, 64, 3), **NODE_ARGS)
    with pytest.raises(FileNotFoundError, match=fid.FID_WEIGHTS_NAME) as err:
        AtelierFID().score(folder_a=str(SAMPLES), folder_b=str(SAMPLES), **NODE_ARGS)
    assert str(tmp_path / "models" / "atelier" / "fid") in str(err.value)
