"""Audio features, the audio encoder and its alignment training, on tiny models and synthetic sounds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from atelier.core.audio import features as audio_features
from atelier.core.audio.encoder import (
    AudioEmbedder,
    AudioEncoder,
    AudioEncoderConfig,
    load_audio_encoder,
    save_audio_encoder,
)
from atelier.core.audio.features import MelSpec, SilentAudio
from atelier.core.shared.progress import Cancelled
from atelier.training.audio.aligner import AlignConfig, AlignData, train_aligner

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


# --------------------------------------------------------------------------------------------
# Sounds built to exhaust memory, and samples out of range
# --------------------------------------------------------------------------------------------


def test_a_wav_declaring_1_hz_is_refused_from_its_header(tmp_path):
    """The 72 KB WAV of the report: 36,000 samples declared at 1 Hz would resample to ten hours of sound."""
    import soundfile

    path = tmp_path / "one_hertz.wav"
    soundfile.write(path, (0.1 * np.sin(np.arange(36_000))).astype(np.float32), 1, subtype="PCM_16")
    assert path.stat().st_size < 80_000
    with pytest.raises(ValueError, match=r"one_hertz\.wav' declares a sample rate of 1 Hz, below the 4000 Hz"):
        audio_features.read_audio(path)
    wave = (0.1 * np.sin(np.arange(2000))).astype(np.float32)[None]  # the same, as an AUDIO
    with pytest.raises(ValueError, match="clip 1 declares a sample rate of 1 Hz"):
        tiny_encoder().embed_clip(wave, 1, "clip 1")


def test_a_sound_over_the_length_limit_is_refused_before_reading_or_resampling(tmp_path, monkeypatch):
    import soundfile

    monkeypatch.setattr(audio_features, "MAX_SECONDS", 10)
    path = tmp_path / "long.wav"
    soundfile.write(path, synthetic_sound(0, seconds=12.0), 8000)
    with pytest.raises(ValueError, match=r"long\.wav' lasts 12 s \(96000 samples at 8000 Hz\), over the limit "
                                         "of 10 s: cut it into shorter files"):
        audio_features.read_audio(path)
    with pytest.raises(ValueError, match="the audio lasts 12 s"):
        audio_features.prepare(synthetic_sound(0, seconds=12.0, rate=22050)[None], 22050, 8000)
    monkeypatch.setattr(audio_features, "MAX_SECONDS", 3 * 3600)  # the default: three hours
    with pytest.raises(ValueError, match=r"lasts 3.47 hours \(50000000 samples at 4000 Hz\), over the limit of 3 h"):
        audio_features.check_length(50_000_000, 4000, "a file")
    assert audio_features.read_audio(path)[0].shape == (1, 96_000)


@pytest.mark.parametrize(("rate", "channels"), [(22050, 2), (44100, 6), (8000, 1)])
def test_blockwise_downmix_and_resampling_give_the_samples_of_one_piece(monkeypatch, rate, channels):
    import librosa

    rng = np.random.default_rng(rate)
    wave = (0.3 * rng.standard_normal((channels, int(3.3 * rate)))).astype(np.float32)
    whole, _ = audio_features.prepare(wave, rate, 8000)
    monkeypatch.setattr(audio_features, "BLOCK_SECONDS", 0.25)  # 14 blocks
    blocks, notes = audio_features.prepare(wave, rate, 8000)
    mono = audio_features.downmix(wave)
    reference = mono if rate == 8000 else librosa.resample(mono, orig_sr=rate, target_sr=8000, res_type="soxr_hq")
    assert blocks.shape == whole.shape == reference.shape
    # the same samples (the 5.1 fold-down is a matrix product, whose rounding may differ in the last bit)
    assert np.allclose(blocks, reference, rtol=0, atol=1e-6) and np.allclose(whole, reference, rtol=0, atol=1e-6)
    assert ("resampled from" in " ".join(notes)) == (rate != 8000)


def test_resampling_a_long_sound_holds_little_more_than_its_result():
    """Ten minutes of stereo at 22.05 kHz to 8 kHz mono: 19 MB of result. Downmixing and resampling in one
    piece held 150 MB at once (the whole downmix, soxr's output, librosa's copy); in blocks, the result and
    one block's worth."""
    import tracemalloc

    wave = np.full((2, 22050 * 600), 0.25, np.float32)
    tracemalloc.start()
    try:
        out, _ = audio_features.prepare(wave, 22050, 8000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.size == 8000 * 600
    assert peak < 2 * out.nbytes, (peak, out.nbytes)


def test_features_and_embedding_of_a_long_clip_are_computed_in_batches_with_the_same_result(monkeypatch):
    embedder = tiny_encoder()
    clip = np.concatenate([synthetic_sound(k % 6, seed=k) for k in range(11)])  # 5.5 s: 11 windows
    whole, _ = embedder.embed_clip(clip[None], 8000)
    features = audio_features.log_mel(audio_features.windows(clip, SPEC)[0], SPEC)
    monkeypatch.setattr(audio_features, "WINDOW_BATCH", 3)
    batches = list(audio_features.feature_batches(clip, SPEC))
    assert [len(b) for b in batches] == [3, 3, 3, 2]
    assert np.allclose(np.concatenate(batches), features, atol=1e-6)
    batched, _ = embedder.embed_clip(clip[None], 8000)
    assert torch.allclose(batched, whole, atol=1e-6)


def test_samples_far_above_full_scale_are_refused_naming_the_clip():
    """1e30 is finite, but its power overflows the features and the embedding became NaN without a word."""
    embedder = tiny_encoder()
    huge = synthetic_sound(0) * np.float32(2e30)
    with pytest.raises(ValueError, match=r"clip 2 peaks at 1e\+30 \(\+600 dBFS\), far above full scale .*lower the "
                                         "gain before this node"):
        embedder.embed_clip(huge[None], 8000, "clip 2")
    with pytest.raises(ValueError, match="NaN or infinite samples"):
        embedder.embed_clip(np.full((1, 4000), np.inf, np.float32), 8000)
    loud_mix = synthetic_sound(0) * np.float32(40)  # four sounds at gain 10: +26 dBFS, still a sound
    assert torch.isfinite(embedder.embed_clip(loud_mix[None], 8000)[0]).all()


def test_an_encoder_giving_nan_is_an_error_not_a_nan_embedding():
    embedder = tiny_encoder()
    with torch.no_grad():
        embedder.encoder.head[-1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite embedding for the audio: its weights are damaged"):
        embedder.embed_clip(synthetic_sound(0)[None], 8000)


def test_audio_decoded_by_pyav_is_held_to_the_limits_while_it_decodes(tmp_path, monkeypatch):
    """A compressed file need not declare its length: the limit stops it while it is decoded."""
    from helpers import write_video

    frames = [np.zeros((16, 16, 3), np.uint8)] * 2
    path = write_video(tmp_path / "clip.mkv", frames, 1, synthetic_sound(0, seconds=3.0), 8000)
    assert audio_features.read_audio(path)[0].shape == (1, 24_000)  # soundfile cannot: PyAV reads it
    monkeypatch.setattr(audio_features, "MAX_SECONDS", 1)
    with pytest.raises(ValueError, match=r"the audio track of '.*clip\.mkv' lasts .* over the limit of 1 s"):
        audio_features.read_audio(path)
    monkeypatch.setattr(audio_features, "MAX_SECONDS", 3 * 3600)
    low = write_video(tmp_path / "low.mkv", frames, 1, synthetic_sound(0, seconds=3.0, rate=1000), 1000)
    with pytest.raises(ValueError, match=r"low\.mkv' declares a sample rate of 1000 Hz, below the 4000 Hz"):
        audio_features.read_audio(low)
