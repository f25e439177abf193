"""Audio features, the audio encoder and its alignment training, on tiny models and synthetic sounds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from atelier.core import audio_features
from atelier.core.audio_encoder import (
    AudioEmbedder,
    AudioEncoder,
    AudioEncoderConfig,
    load_audio_encoder,
    save_audio_encoder,
)
from atelier.core.audio_features import MelSpec, SilentAudio
from atelier.core.progress import Cancelled
from atelier.training.audio_aligner import AlignConfig, AlignData, train_aligner

from helpers import CancelAfter, synthetic_sound

SPEC = MelSpec(sample_rate=8000, window_seconds=0.5, n_mels=32, n_fft=256, hop_length=64)


def tiny_encoder(dim: int = 8, seed: int = 0) -> AudioEmbedder:
    torch.manual_seed(seed)
    encoder = AudioEncoder(AudioEncoderConfig(dim, SPEC, widths=(8, 16), blocks_per_stage=1))
    for module in encoder.modules():  # settled BatchNorm statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return AudioEmbedder(encoder.eval(), "tiny-clip", 12.5)


def test_features_keep_the_absolute_level():
    quiet = synthetic_sound(0, gain=0.05)
    loud = synthetic_sound(0, gain=0.5)
    f_quiet, f_loud = audio_features.log_mel(np.stack([quiet, loud]), SPEC)
    assert f_quiet.shape == (SPEC.n_mels, SPEC.frames)
    # 20 dB louder is 20 dB higher in every bin that is above the floor (the scale is 40 dB per unit)
    strong = f_quiet > -1.0
    assert np.allclose((f_loud - f_quiet)[strong], 0.5, atol=1e-3)


def test_louder_sound_of_the_same_class_is_another_point():
    embedder = tiny_encoder()
    quiet, _ = embedder.embed_clip(synthetic_sound(2, gain=0.05)[None], 8000)
    loud, _ = embedder.embed_clip(synthetic_sound(2, gain=0.5)[None], 8000)
    again, _ = embedder.embed_clip(synthetic_sound(2, gain=0.5)[None], 8000)
    assert torch.equal(loud, again)
    assert (loud - quiet).norm() > 0.05 * loud.norm()


def test_channels_are_downmixed_and_rates_resampled():
    mono = synthetic_sound(0, rate=8000)
    stereo = np.stack([mono, mono])
    surround = np.stack([mono] * 6)
    assert np.allclose(audio_features.downmix(stereo), mono)
    assert np.allclose(audio_features.downmix(surround), mono, atol=1e-6)  # the LFE-free 5.1 fold-down keeps level
    lfe_only = np.zeros((6, 100), np.float32)
    lfe_only[3] = 1.0
    assert np.allclose(audio_features.downmix(lfe_only), 0.0)
    resampled, notes = audio_features.prepare(synthetic_sound(0, rate=22050, seconds=0.5)[None], 22050, 8000)
    assert resampled.shape == (4000,) and any("resampled from 22050" in n for n in notes)
    _, notes = audio_features.prepare(surround, 8000, 8000)
    assert notes == ["6 channels downmixed to mono"]
    embedder = tiny_encoder()
    e_mono, _ = embedder.embed_clip(mono[None], 8000)
    e_stereo, _ = embedder.embed_clip(stereo, 8000)
    assert torch.allclose(e_mono, e_stereo, atol=1e-5)


def test_short_clips_are_padded_and_said_silence_is_refused():
    embedder = tiny_encoder()
    _, notes = embedder.embed_clip(synthetic_sound(1, seconds=0.2)[None], 8000)
    assert any("shorter than the 0.5 s window: padded" in n for n in notes)
    with pytest.raises(SilentAudio, match="silent"):
        embedder.embed_clip(np.zeros((2, 8000), np.float32), 8000)
    with pytest.raises(ValueError, match="no samples"):
        embedder.embed_clip(np.zeros((1, 0), np.float32), 8000)


def test_long_clips_average_their_windows():
    wins, notes = audio_features.windows(np.ones(9000, np.float32), SPEC)
    assert wins.shape == (3, 4000) and notes == []  # 0..4000, 4000..8000 and one ending at the end


def test_encoder_file_round_trip_and_dimension_check(tmp_path):
    embedder = tiny_encoder()
    path = save_audio_encoder(tmp_path, "enc", embedder, {})
    loaded = load_audio_encoder(path)
    clip = synthetic_sound(3)[None]
    assert torch.equal(embedder.embed_clip(clip, 8000)[0], loaded.embed_clip(clip, 8000)[0])
    assert loaded.image_encoder == "tiny-clip" and loaded.image_embed_norm == 12.5
    with pytest.raises(ValueError, match="8-d space of 'tiny-clip'"):
        loaded.check_image_dim(768, "CLIP ViT-L/14")
    (tmp_path / "other.safetensors").write_bytes(path.read_bytes()[:50])
    with pytest.raises(Exception):
        load_audio_encoder(tmp_path / "other.safetensors")


def synthetic_align_data(per_class: int = 8, classes: int = 6, dim: int = 8) -> AlignData:
    """Six sound classes at several levels, each paired with an 'image embedding' that a frozen image encoder
    would give: one direction per class, moved along a shared 'intensity' direction by the level (a louder
    stream, a stronger current), so every pair has its own target that its sound predicts."""
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    intensity = torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0)
    sounds, targets, names = [], [], []
    for kind in range(classes):
        for i in range(per_class):
            level = ((i * 5) % per_class) / max(per_class - 1, 1)
            sounds.append(synthetic_sound(kind, gain=0.02 * 25 ** level, seed=kind * 100 + i))
            targets.append(torch.nn.functional.normalize(centres[kind] + 0.6 * level * intensity, dim=0))
            names.append(f"c{kind}_{i}")
    feats = torch.from_numpy(audio_features.log_mel(np.stack(sounds), SPEC))
    return AlignData(feats, torch.stack(targets), names, "synthetic", 1.0)


CONFIG = AlignConfig(epochs=60, batch_size=12, lr=1e-3, val_fraction=0.25, widths=(16, 32), blocks_per_stage=1,
                     mel=SPEC, temperature=0.05)


def test_alignment_reaches_retrieval_far_above_chance(tmp_path):
    result = train_aligner(synthetic_align_data(), CONFIG, tmp_path / "run")
    last = result.history[-1]
    assert len(result.history) == CONFIG.epochs and {"r1", "r10", "loss"} <= set(last)
    assert last["chance_r1"] == pytest.approx(1 / 12)
    assert last["r1"] >= 0.5  # held-out sounds find their picture; chance is 1 in 12
    assert result.history[-1]["loss"] < result.history[0]["loss"]


@pytest.mark.parametrize("options", [{"loss": "l2"}, {"symmetric": True, "learn_scale": True}])
def test_other_losses_train(tmp_path, options):
    config = AlignConfig(**{**CONFIG.__dict__, "epochs": 25, **options})
    result = train_aligner(synthetic_align_data(), config, tmp_path / "run")
    assert result.history[-1]["r1"] >= 3 * result.history[-1]["chance_r1"]


def test_resume_equals_an_uninterrupted_run(tmp_path):
    data = synthetic_align_data(per_class=4)
    config = AlignConfig(**{**CONFIG.__dict__, "epochs": 3, "batch_size": 6})
    whole = train_aligner(data, config, tmp_path / "whole")
    with pytest.raises(Cancelled):
        train_aligner(data, config, tmp_path / "parts", progress=CancelAfter(5))  # mid-epoch
    resumed = train_aligner(data, config, tmp_path / "parts")
    assert resumed.resumed_from == 5
    assert resumed.history == whole.history
    for (k, a), b in zip(whole.embedder.encoder.state_dict().items(), resumed.embedder.encoder.state_dict().values()):
        assert torch.equal(a, b), k


def test_bad_settings_and_data_are_refused(tmp_path):
    with pytest.raises(ValueError, match="loss"):
        AlignConfig(loss="cosine")
    with pytest.raises(ValueError, match="at least 4"):
        AlignData(torch.zeros(3, 32, SPEC.frames), torch.zeros(3, 8), ["a", "b", "c"], "x", 1.0)
    data = synthetic_align_data(per_class=1)
    with pytest.raises(ValueError, match="do not match"):
        train_aligner(data, AlignConfig(mel=MelSpec()), tmp_path)
