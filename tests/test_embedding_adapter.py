"""Training the image-embedding adapter against a frozen tiny SD 1.5, and its file."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.core.audio.image_embedding import clip_embedder, probe_embedding
from atelier.core.curator.clip_model import load_clip
from atelier.core.dataset.folder_dataset import load_folder
from atelier.core.sd15.embedding_adapter import load_adapter
from atelier.core.shared.progress import Cancelled
from atelier.training.sd15 import adapter_job
from atelier.training.sd15 import latents as train_data
from atelier.training.sd15.adapter_trainer import AdapterTrainConfig, train_adapter

from helpers import CancelAfter, synthetic_picture, tiny_clip_folder, tiny_sd15_parts


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    for kind in range(4):
        Image.fromarray(synthetic_picture(kind, kind, size=64)).save(folder / f"p{kind}.png")
        (folder / f"p{kind}.txt").write_text(f"pattern {kind}")
    return folder


def test_adapter_job_trains_only_the_adapter_and_writes_a_loadable_file(tmp_path, pictures):
    parts = tiny_sd15_parts()
    unet_before = {k: v.clone() for k, v in parts.unet.state_dict().items()}
    images = clip_embedder(load_clip(tiny_clip_folder(tmp_path / "clip")))
    config = AdapterTrainConfig(tokens=3, steps=40, batch_size=2, lr=1e-2, checkpoint_every=10)
    result = adapter_job.run(parts, load_folder(pictures), images, config, "sound_adapter", tmp_path / "adapters",
                             tmp_path / "run", resolution=64)
    assert all(torch.equal(v, parts.unet.state_dict()[k]) for k, v in unet_before.items())  # SD stays frozen
    assert len(result.result.losses) == 40 and all(np.isfinite(result.result.losses))
    assert np.mean(result.result.losses[-10:]) < np.mean(result.result.losses[:10])
    assert (tmp_path / "run" / "loss.png").is_file()
    loaded = load_adapter(result.path)
    assert loaded.image_encoder == images.name and loaded.file == result.path.name
    assert torch.allclose(loaded.probe, probe_embedding(images), atol=1e-5)  # the encoder's fingerprint
    loaded.check_encoder(images)
    g = torch.Generator().manual_seed(0)
    embeds = torch.nn.functional.normalize(torch.randn(2, images.dim, generator=g), dim=-1)
    tokens = loaded.tokens(embeds)
    assert tokens.shape == (2, 3, 768)
    assert torch.allclose(tokens, result.result.adapter.eval()(embeds), atol=1e-6)


def test_adapter_resume_equals_an_uninterrupted_run(tmp_path):
    parts = tiny_sd15_parts()
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 8, 8, generator=g)
    data = train_data.TrainData([train_data.Bucket(latents, torch.randn(3, 77, 768, generator=g), torch.arange(3))],
                                torch.zeros(77, 768))
    embeds = torch.nn.functional.normalize(torch.randn(3, 16, generator=g), dim=-1)
    config = AdapterTrainConfig(tokens=2, steps=6, batch_size=2, lr=1e-3, checkpoint_every=4)
    whole = train_adapter(parts.unet, data, embeds, config, tmp_path / "whole")
    with pytest.raises(Cancelled):
        train_adapter(parts.unet, data, embeds, config, tmp_path / "parts", CancelAfter(3))
    resumed = train_adapter(parts.unet, data, embeds, config, tmp_path / "parts")
    assert resumed.resumed_from == 3 and resumed.losses == whole.losses
    for a, b in zip(whole.adapter.state_dict().values(), resumed.adapter.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_adapter_settings_and_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="tokens"):
        AdapterTrainConfig(tokens=0)
    with pytest.raises(ValueError, match="text_dropout"):
        AdapterTrainConfig(text_dropout=1.5)
    (tmp_path / "x.safetensors").write_bytes(b"not a file")
    with pytest.raises(Exception):
        load_adapter(tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError):
        load_adapter(tmp_path / "missing.safetensors")
