"""A sound's level and strength (core/audio/loudness.py) and its position (core/audio/position.py, Sound Position),
on synthetic sounds whose level and pan are known exactly."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atelier.core.audio import loudness
from atelier.core.audio.encoder import AudioEmbedding, blend
from atelier.core.audio.features import SilentAudio
from atelier.core.audio.position import Position, measure_position, position_mask
from atelier.nodes import audio as nodes

RATE = 16000


def sine(seconds: float = 2.0, amplitude: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def panned(mono: np.ndarray, pan: float) -> np.ndarray:
    """The constant-power pan law: left cos t, right sin t, t = (pan + 1) pi / 4."""
    t = (pan + 1) * math.pi / 4
    return np.stack([math.cos(t) * mono, math.sin(t) * mono]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Loudness
# --------------------------------------------------------------------------------------------


def test_level_is_a_gated_rms_in_dbfs():
    assert loudness.measure_level(sine(), RATE) == pytest.approx(-3.0103, abs=1e-3)  # full-scale sine
    assert loudness.measure_level(sine(amplitude=0.5), RATE) == pytest.approx(-9.0309, abs=1e-3)  # -6.02 dB
    assert loudness.measure_level(sine(0.2, 0.5), RATE) == pytest.approx(-9.0309, abs=1e-3)  # under one block
    with_pause = np.concatenate([sine(1.0, 0.5), np.zeros(2 * RATE, np.float32), sine(1.0, 0.5)])
    # the pause is gated out (the blocks that straddle its edges take a little): -9.03 without, -14.0 ungated
    assert loudness.measure_level(with_pause, RATE) == pytest.approx(-9.03, abs=1.0)
    wave = sine(amplitude=0.5)
    assert loudness.measure_level(np.stack([wave, wave]), RATE) == pytest.approx(-9.0309, abs=1e-3)  # its copy
    assert loudness.measure_level(panned(wave * math.sqrt(2), -0.5), RATE) == pytest.approx(-9.0309, abs=1e-3)
    surround = np.stack([wave] * 6)
    surround[3] = 1.0  # the LFE is left out
    assert loudness.measure_level(surround, RATE) == pytest.approx(-9.0309, abs=1e-3)
    assert loudness.measure_level(np.zeros((2, RATE), np.float32), RATE) == -100.0


def test_strength_doubles_every_10_db_within_its_limits():
    assert loudness.strength_for(-20.0) == 1.0
    assert loudness.strength_for(-30.0) == pytest.approx(0.5)
    assert loudness.strength_for(-10.0) == pytest.approx(2.0)
    assert loudness.strength_for(-20.0 - 6.0206) == pytest.approx(0.6588, abs=1e-4)  # half the amplitude
    assert loudness.strength_for(-14.0, reference_db=-14.0) == 1.0
    assert loudness.strength_for(-90.0) == loudness.MIN_STRENGTH == 1 / 16
    assert loudness.strength_for(30.0) == loudness.MAX_STRENGTH == 4.0


def test_a_quiet_sound_draws_weakly_and_silence_is_refused():
    quiet = loudness.loudness_strength(sine(amplitude=1e-3)[None], RATE)  # -63 dBFS: above the -80 dBFS silence
    assert quiet.level_db == pytest.approx(-63.01, abs=0.01) and quiet.strength == 1 / 16
    assert "level -63.0 dBFS, -43.0 dB from the reference -20 dBFS: token strength x0.06 (the limit)" in quiet.note()
    with pytest.raises(SilentAudio, match="clip 2 is silent"):
        loudness.loudness_strength(np.zeros((2, RATE), np.float32), RATE, what="clip 2")


def test_loudness_scales_each_sounds_tokens_and_its_share_of_an_edit():
    embedding = AudioEmbedding(torch.randn(2, 8), "tiny", 1.0, torch.tensor([0.5, 4.0]))
    assert torch.allclose(embedding.blend_weights(0.5), torch.tensor([0.25, 1.0]))  # capped at the sound alone
    picture = torch.zeros(1, 8)
    mixed = blend(picture, embedding.embeds, embedding.blend_weights(0.5))
    assert torch.allclose(mixed, embedding.embeds * torch.tensor([[0.25], [1.0]]))
    with pytest.raises(ValueError, match="0..1"):
        embedding.blend_weights(1.5)


# --------------------------------------------------------------------------------------------
# Position
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pan", "words", "level_db"), [(-1.0, "on the far left", None), (-0.5, "on the left", 7.66),
                                                       (0.0, "in the centre", 0.0), (1.0, "on the far right", None),
                                                       (0.3, "on the right", -4.26)])
def test_level_differences_give_the_pan_they_were_panned_with(pan, words, level_db):
    found = measure_position(panned(noise(), pan), RATE)
    assert found.pan == pytest.approx(pan, abs=0.01) and found.words() == words
    if level_db is not None:  # a silent side reads the -100 dBFS floor
        assert found.level_difference_db == pytest.approx(level_db, abs=0.05)
    assert f"pan {pan:+.2f}" in found.note()


@pytest.mark.parametrize("delay", [3, 6, 11, -6])
def test_a_time_difference_alone_places_the_sound(delay):
    """Equal levels, the right channel ``delay`` samples late (the left leads): pan = -delay / 0.7 ms."""
    mono = noise(seed=delay % 5)
    found = measure_position(np.stack([mono, np.roll(mono, delay)]), RATE)
    expected = max(-1.0, min(1.0, -delay / RATE / 0.7e-3))  # 3 samples: -0.27; 11: -0.98
    assert found.time_difference_ms == pytest.approx(1000 * delay / RATE, abs=0.01)
    assert found.level_difference_db == pytest.approx(0.0, abs=0.01)
    assert found.pan == pytest.approx(expected, abs=0.02)


def test_mono_is_centred_more_channels_use_the_first_two_and_a_tone_has_no_clear_delay():
    assert measure_position(noise()[None], RATE) == Position(0.0, 1)
    assert measure_position(noise()[None], RATE).note("clip 1") == "clip 1: mono, centred (pan 0)"
    surround = np.concatenate([panned(noise(), -0.5), np.stack([noise(seed=k) for k in range(1, 5)])])
    found = measure_position(surround, RATE)
    assert found.pan == pytest.approx(-0.5, abs=0.01) and "channels 1-2 of 6 taken as left-right" in found.note()
    tone = sine(freq=1500)  # its period (0.67 ms) repeats inside the lags searched: no one delay is clear
    found = measure_position(np.stack([tone, np.roll(tone, 4)]), RATE)
    assert found.time_difference_ms is None and found.pan == pytest.approx(0.0, abs=0.01)
    assert "no clear time difference" in found.note()
    # a low rumble 2.5 ms apart (spaced microphones): its correlation still climbs at the 1 ms edge, not a peak
    rumble = np.convolve(noise(), np.full(128, 1 / 128), mode="same").astype(np.float32)
    far = measure_position(np.stack([rumble, np.roll(rumble, 40)]), RATE)
    assert far.time_difference_ms is None and far.pan == pytest.approx(0.0, abs=0.01)
    with pytest.raises(SilentAudio, match="silent"):
        measure_position(np.zeros((2, RATE), np.float32), RATE)
    with pytest.raises(ValueError, match="NaN"):
        measure_position(np.full((2, RATE), np.nan, np.float32), RATE)


def test_the_mask_places_a_soft_band_on_the_sounds_side():
    left = position_mask(-1.0, 100, 4, source_width=0.5, softness=0.2)
    assert left.shape == (4, 100) and left.dtype == torch.float32 and torch.equal(left[0], left[3])
    assert torch.all(left[:, :50] == 1) and torch.all(left[:, 70:] == 0)
    assert torch.all(left[0, 49:71].diff() <= 0) and 0 < float(left[0, 60]) < 1  # the raised-cosine fade
    centre = position_mask(0.0, 100, 1)
    assert torch.equal(centre, centre.flip(-1)) and torch.all(centre[:, 25:75] == 1)
    right = position_mask(1.0, 100, 1)
    assert torch.equal(right, left[:1].flip(-1))
    half = position_mask(-0.5, 80, 1, softness=0.0)
    assert half.sum() == 40 and torch.all(half[0, 10:50] == 1)  # centre 0.375: 0.125..0.625 of 80 px
    with pytest.raises(ValueError, match="outside"):
        position_mask(1.5, 10, 10)


def test_sound_position_node_gives_masks_pan_words_and_notes():
    wave = np.stack([panned(noise(), -0.5), panned(noise(seed=1), 1.0)])
    audio = {"waveform": torch.from_numpy(wave), "sample_rate": RATE}
    mask, pan, prompt, notes = nodes.AtelierSoundPosition().place(audio, 64, 32, 0.5, 0.2, "a bird, ")
    assert mask.shape == (2, 32, 64) and torch.equal(mask[0], position_mask(pan, 64, 32))
    assert pan == pytest.approx(-0.5, abs=0.01) and prompt == "a bird, on the left"
    assert float(mask[1, :, -1].min()) == 1.0 and float(mask[1, :, 0].max()) == 0.0
    assert "clip 1: pan -0.50, on the left" in notes and "clip 2: pan +1.00, on the far right" in notes
    _, _, prompt, _ = nodes.AtelierSoundPosition().place(audio, 64, 32, 0.5, 0.2, "")
    assert prompt == "on the left"
