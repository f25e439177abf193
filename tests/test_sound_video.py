"""Video from sound (core/audio/sound_video.py and its two nodes) on tiny random models inside a stand-in ComfyUI:
frame arithmetic and window centring, batched embedding equal to a per-frame loop, the smoothing's effect on
flicker, loudness to strength, errors before sampling, outputs for CreateVideo, one seed for every frame,
chaining, the video edit's frames and cancel between frames."""
from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch

from atelier.core.audio import features as audio_features
from atelier.core.audio import sound_video as sv
from atelier.core.audio.encoder import AudioEmbedder, AudioEncoder, AudioEncoderConfig
from atelier.core.audio.features import MelSpec, SilentAudio
from atelier.core.audio.loudness import loudness_strength
from atelier.core.curator.clip_model import load_clip
from atelier.core.sd15.embedding_adapter import AdapterConfig, EmbeddingAdapter, LoadedAdapter
from atelier.core.shared.progress import Cancelled
from atelier.nodes import bridge
from atelier.nodes.sound_video import AtelierSoundToVideoFrames, AtelierVideoSoundEdit

from helpers import CancelAfter, node_defaults, synthetic_sound, tiny_clip_folder

RATE = 8000
SPEC = MelSpec(sample_rate=RATE, window_seconds=0.5, n_mels=32)


def embedder(seed: int = 0) -> AudioEmbedder:
    torch.manual_seed(seed)
    return AudioEmbedder(AudioEncoder(AudioEncoderConfig(16, SPEC, widths=(8, 16), blocks_per_stage=1)).eval(),
                         "tiny", 1.0)


def adapter(seed: int = 0) -> LoadedAdapter:
    torch.manual_seed(seed)
    return LoadedAdapter(EmbeddingAdapter(AdapterConfig(16, tokens=2)).eval(), "tiny")


def changing_sound(seconds: float = 3.0, every: float = 0.25) -> np.ndarray:
    """A sound that switches between two kinds every ``every`` seconds: its embedding jumps at each switch."""
    pieces = [synthetic_sound(k % 2 * 4, seconds=every, rate=RATE, seed=k) for k in range(int(seconds / every))]
    return np.concatenate(pieces)


def prompt() -> list:
    return [[torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1)), {"pooled_output": torch.zeros(1)}]]


def audio_input(wave: np.ndarray, rate: int = RATE) -> dict:
    wave = wave if wave.ndim == 2 else wave[None]
    return {"waveform": torch.from_numpy(np.ascontiguousarray(wave))[None], "sample_rate": rate}


class FakeVae:  # comfy.sd.VAE: latents [B, 4, h, w] <-> pictures [B, 8h, 8w, 3]
    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.nn.functional.interpolate(samples[:, :3], scale_factor=8)).permute(0, 2, 3, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        small = torch.nn.functional.avg_pool2d(images.permute(0, 3, 1, 2), 8)
        return torch.cat([small, small[:, :1]], dim=1)


@pytest.fixture
def comfy(monkeypatch):
    """ComfyUI's common_ksampler: seeded noise, moved by the positive's last tokens and by the start latent as much
    as denoise keeps of it; every call recorded."""
    calls = []

    def common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise=1.0):
        start = latent["samples"]
        calls.append(dict(seed=seed, denoise=denoise, start=start.clone(), positive=positive, negative=negative))
        noise = torch.randn(start.shape, generator=torch.Generator().manual_seed(seed))
        return ({"samples": denoise * (noise + 3 * positive[0][0][:, -2:, 0].mean()) + (1 - denoise) * start},)

    module = types.ModuleType("nodes")  # ComfyUI's nodes.py
    module.common_ksampler = common_ksampler
    monkeypatch.setitem(sys.modules, "nodes", module)
    return calls


def draw(wave: np.ndarray, **overrides):
    args = node_defaults(AtelierSoundToVideoFrames, audio=audio_input(wave), audio_encoder=embedder(),
                         adapter=adapter(), model="MODEL", positive=prompt(), negative=prompt(), vae=FakeVae(),
                         width=64, height=48, fps=10.0, max_seconds=0.0, seed=3, steps=2)
    args.update(overrides)
    return AtelierSoundToVideoFrames().draw(**args)


def test_frames_are_counted_and_timed_at_the_frame_rate():
    plan = sv.plan_frames(3 * RATE, RATE, 10.0)
    assert plan.count == 30 and plan.seconds == 3.0 and plan.samples(44100) == 3 * 44100
    np.testing.assert_allclose(plan.times[:3], [0.0, 0.1, 0.2])
    assert sv.plan_frames(int(2.95 * RATE), RATE, 10.0).count == 29  # the video never outlasts the sound
    assert sv.plan_frames(3 * RATE, RATE, 12.0, max_seconds=1.0).count == 12
    assert sv.plan_frames(RATE // 10, RATE, 10.0).count == 1  # exactly one frame long
    assert sv.pick_frames(30, 30.0, 10.0) == [3 * i for i in range(10)]
    assert sv.pick_frames(5, 10.0, 10.0) == [0, 1, 2, 3, 4]


def test_each_frames_window_is_centred_on_its_time():
    mono = np.zeros(2 * RATE, np.float32)
    plan = sv.plan_frames(mono.size, RATE, 8.0)
    for i in (0, 5, 15):
        mono[int(round(i / 8.0 * RATE))] = 1.0
    windows = np.concatenate(list(sv.window_batches(mono, SPEC, plan, batch=4)))
    half = SPEC.window_samples // 2
    assert windows.shape == (16, SPEC.window_samples)
    for i in (0, 5, 15):
        assert windows[i, half] == 1.0
    assert windows[0, :half].sum() == 0  # before the sound: silence


@pytest.mark.parametrize("fps", [0.0, -2.0, float("nan")])
def test_a_frame_rate_not_above_zero_is_refused(fps):
    with pytest.raises(ValueError, match="frame rate must be above 0"):
        sv.plan_frames(RATE, RATE, fps)


def test_errors_come_before_any_frame_is_sampled(comfy):
    with pytest.raises(ValueError, match="shorter than one frame at 10 fps"):
        draw(synthetic_sound(0, seconds=0.05, rate=RATE))
    with pytest.raises(ValueError, match="frame rate must be above 0"):
        draw(synthetic_sound(0, seconds=1.0, rate=RATE), fps=0.0)
    with pytest.raises(SilentAudio):
        draw(np.zeros(RATE, np.float32))
    assert comfy == []


def test_windows_are_embedded_in_batches_as_a_per_frame_loop_would():
    enc = embedder()
    wave = changing_sound(2.0)
    framed = sv.embed_frames(enc, wave[None], RATE, 12.0)
    mono, _ = audio_features.prepare(wave[None], RATE, RATE)
    loop = [enc.embed_features(audio_features.log_mel(w[None], SPEC))[0]
            for w in np.concatenate(list(sv.window_batches(mono, SPEC, framed.plan, batch=1)))]
    assert framed.embeds.shape == (24, 16)
    torch.testing.assert_close(framed.embeds, torch.stack(loop), atol=1e-5, rtol=1e-4)


def test_smoothing_keeps_a_steady_signal_and_reduces_flicker():
    steady = torch.ones(20, 3) * torch.tensor([1.0, -2.0, 0.5])
    torch.testing.assert_close(sv.smooth(steady, 10.0, 0.5), steady)  # renormalised at the ends: not pulled to 0
    ramp = torch.arange(40.0)[:, None]
    torch.testing.assert_close(sv.smooth(ramp, 10.0, 0.2)[10:30], ramp[10:30])  # centred: no lag
    assert sv.smooth(ramp, 10.0, 0.0) is ramp
    values = torch.randn(25, 2, 3, generator=torch.Generator().manual_seed(0))
    sigma = 0.3 * 10.0  # frames; weights reach 3 sigma = 9 frames each way
    expected = torch.stack([
        sum(math.exp(-0.5 * ((i - j) / sigma) ** 2) * values[j] for j in range(25) if abs(i - j) <= 9)
        / sum(math.exp(-0.5 * ((i - j) / sigma) ** 2) for j in range(25) if abs(i - j) <= 9) for i in range(25)])
    torch.testing.assert_close(sv.smooth(values, 10.0, 0.3), expected)

    enc, ada = embedder(), adapter()
    wave = changing_sound(3.0)
    raw = sv.sound_conditionings(enc, ada, prompt(), wave[None], RATE, 10.0, smoothing_seconds=0.0)
    smoothed = sv.sound_conditionings(enc, ada, prompt(), wave[None], RATE, 10.0, smoothing_seconds=0.5)
    assert len(raw.conditionings) == len(smoothed.conditionings) == 30
    assert sv.flicker(smoothed.conditionings) < 0.5 * sv.flicker(raw.conditionings)
    assert sv.flicker(raw.conditionings[:1]) == 0.0


def test_token_strength_follows_the_loudness_over_time():
    # the law of a still picture from a sound (loudness.strength_for): doubled every 10 dB over the reference
    levels = torch.tensor([0.1, 0.1 * 10 ** 0.5, 0.1 * 10 ** -0.5, 0.0, 1.0])  # RMS: -20, -10, -30, silence, 0 dBFS
    torch.testing.assert_close(sv.frame_strengths(levels, 2.0, True), torch.tensor([2.0, 4.0, 1.0, 0.125, 8.0]))
    torch.testing.assert_close(sv.frame_strengths(levels, 2.0, True, reference_db=-10.0),
                               torch.tensor([1.0, 2.0, 0.5, 0.125, 4.0]))
    torch.testing.assert_close(sv.frame_strengths(levels, 2.0, False), torch.full((5,), 2.0))
    # a tone for 3 s then the same tone 24 dB louder: 2 ** 2.4 times the strength, and each half drawn at the
    # strength Encode Audio gives a clip of that level
    tone = synthetic_sound(0, seconds=3.0, rate=RATE, gain=1.0)
    wave = np.concatenate([0.05 * tone, 0.8 * tone])
    frames = sv.sound_conditionings(embedder(), adapter(), prompt(), wave[None], RATE, 10.0, smoothing_seconds=0.1)
    # frames whose 2 s windows, and those of every neighbour the 0.1 s Gaussian reaches (3 sigma), lie wholly
    # inside one half
    quiet, loud = frames.strengths[13:18], frames.strengths[43:48]
    louder_db = 20 * math.log10(0.8 / 0.05)  # 24.08 dB
    torch.testing.assert_close(loud / quiet, torch.full((5,), 2 ** (louder_db / 10)), rtol=2e-3, atol=0)
    for part, gain in ((quiet, 0.05), (loud, 0.8)):
        still = loudness_strength(gain * tone, RATE).strength
        torch.testing.assert_close(part, torch.full((5,), still), rtol=0.02, atol=0)
    tokens = [frames.conditionings[i][0][0][0, 77:] for i in (15, 45)]  # the LayerNorm's scale times the strength
    torch.testing.assert_close(tokens[1].norm() / tokens[0].norm(), loud[2] / quiet[2], rtol=1e-3, atol=0)
    steady = sv.sound_conditionings(embedder(), adapter(), prompt(), wave[None], RATE, 10.0, follow_loudness=False)
    assert torch.equal(steady.strengths, torch.ones(60))


def test_the_node_gives_frames_sound_and_rate_for_create_video(comfy):
    wave = np.stack([changing_sound(2.0), 0.5 * changing_sound(2.0)])
    stretched = np.concatenate([wave, wave[:, :RATE // 20]], axis=1)  # 2.05 s: 20 frames, the tail cut
    frames, audio, fps, report = draw(stretched, chain_denoise=0.5)
    assert frames.shape == (20, 48, 64, 3) and frames.dtype == torch.float32
    assert audio["sample_rate"] == RATE and tuple(audio["waveform"].shape) == (1, 2, 2 * RATE)
    torch.testing.assert_close(audio["waveform"][0], torch.from_numpy(wave))
    assert isinstance(fps, float) and fps == 10.0 and "20 frames at 10 fps" in report
    assert [c["seed"] for c in comfy] == [3] * 20  # one noise seed for every frame
    assert comfy[0]["denoise"] == 1.0 and not comfy[0]["start"].any()
    assert all(c["denoise"] == 0.5 for c in comfy[1:])  # chained from the previous frame's latent
    negative = comfy[0]["negative"][0][0]
    assert negative.shape == (1, 79, 768)  # 'no picture' tokens: the two sides have the same length


def test_the_same_seed_gives_the_same_frames(comfy):
    wave = changing_sound(1.0)
    first, second = draw(wave)[0], draw(wave)[0]
    assert torch.equal(first, second)
    assert not torch.equal(first, draw(wave, seed=4)[0])
    independent = draw(wave, chain_denoise=1.0)[0]
    assert all(c["denoise"] == 1.0 and not c["start"].any() for c in comfy[-10:])  # every frame from noise
    assert not torch.equal(first, independent)


def test_cancel_stops_between_frames(comfy, monkeypatch):
    monkeypatch.setattr(bridge, "progress", lambda total, desc="": CancelAfter(3))
    with pytest.raises(Cancelled):
        draw(changing_sound(1.0))
    assert len(comfy) == 3


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return load_clip(tiny_clip_folder(tmp_path_factory.mktemp("clip")))


def test_the_edit_redraws_each_frame_from_its_own_latent(comfy, clip):
    torch.manual_seed(0)
    video = torch.rand(30, 32, 40, 3)  # 1 s at 30 fps
    wave = changing_sound(3.0)
    args = node_defaults(AtelierVideoSoundEdit, images=video, audio=audio_input(wave), audio_encoder=embedder(),
                         adapter=adapter(), model="MODEL", positive=prompt(), negative=prompt(), vae=FakeVae(),
                         fps=10.0, max_seconds=0.0, seed=2, steps=2, sound_weight=0.5, denoise=0.4, clip_model=clip,
                         video_fps=30.0)
    frames, audio, fps, report = AtelierVideoSoundEdit().edit(**args)
    assert frames.shape == (10, 32, 40, 3) and fps == 10.0 and "10 frames" in report  # every third frame, 1 s
    assert tuple(audio["waveform"].shape) == (1, 1, RATE)
    for i, call in enumerate(comfy):
        assert call["denoise"] == 0.4 and call["seed"] == 2
        torch.testing.assert_close(call["start"], FakeVae().encode(video[3 * i:3 * i + 1]))
    by_sound = AtelierVideoSoundEdit().edit(**{**args, "sound_weight": 1.0})[0]
    by_picture = AtelierVideoSoundEdit().edit(**{**args, "sound_weight": 0.0})[0]
    assert not torch.equal(by_sound, by_picture)
    with pytest.raises(ValueError, match="shorter than one frame"):
        AtelierVideoSoundEdit().edit(**{**args, "audio": audio_input(wave[:100])})


def test_the_command_writes_frames_the_sound_and_a_video(tmp_path, capsys):
    import av
    import soundfile
    from PIL import Image

    from atelier.cli import main
    from atelier.core.audio.encoder import save_audio_encoder
    from atelier.core.sd15.embedding_adapter import save_adapter

    from helpers import tiny_sd15_folder

    model = tiny_sd15_folder(tmp_path / "sd15")
    encoder = save_audio_encoder(tmp_path, "sound", embedder(), {})
    adapter_file = save_adapter(tmp_path, "adapter", adapter().adapter, "tiny", {})
    sound = tmp_path / "소리.wav"
    soundfile.write(sound, np.stack([changing_sound(1.0)] * 2, axis=1), RATE)
    args = ["sound-video", str(sound), "--encoder", str(encoder), "--adapter", str(adapter_file), "--model",
            str(model), "--fps", "4", "--width", "64", "--height", "64", "--steps", "2", "--output",
            str(tmp_path / "out"), "--device", "cpu"]
    assert main(args) == 0
    folder = tmp_path / "out" / "atelier" / "sound_video" / "v001"
    assert "wrote video.mp4, 4 frames at 4 fps" in capsys.readouterr().out
    assert sorted(p.name for p in folder.glob("frame_*.png")) == [f"frame_0000{i}.png" for i in range(1, 5)]
    assert Image.open(folder / "frame_00001.png").size == (64, 64)
    assert not list(folder.glob(".*"))  # every file renamed into place from its temporary name
    assert soundfile.info(folder / "sound.wav").frames == RATE
    with av.open(str(folder / "video.mp4")) as video:
        assert len(list(video.decode(video=0))) == 4 and video.streams.audio
    assert main(args) == 0  # the same seed: the same frames, in a new folder
    again = tmp_path / "out" / "atelier" / "sound_video" / "v002"
    assert np.array_equal(np.asarray(Image.open(again / "frame_00003.png")),
                          np.asarray(Image.open(folder / "frame_00003.png")))
    capsys.readouterr()
    with pytest.raises(SystemExit):  # below the command's 1 fps floor: refused by the parser
        main([*args, "--fps", "0.5"])
    assert main([*args, "--max-seconds", "0.1"]) == 2
    assert "shorter than one frame at 4 fps" in capsys.readouterr().err
