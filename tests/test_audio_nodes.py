"""Pictures from sound, through the nodes: training the audio encoder from paired files and from videos,
encoding ComfyUI AUDIO, conditioning, mixing, thumbnails and image-plus-sound edits (tiny models)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from atelier.core.audio.encoder import AudioEmbedding, load_audio_encoder
from atelier.core.audio.features import MelSpec, SilentAudio
from atelier.core.audio.image_embedding import clip_embedder, embed_pictures
from atelier.core.audio.video_frames import NoAudioTrack
from atelier.core.curator.clip_model import load_clip
from atelier.core.sd15.embedding_adapter import AdapterConfig, EmbeddingAdapter, LoadedAdapter, condition
from atelier.nodes import audio as nodes
from atelier.nodes import bridge
from atelier.training.audio import job as audio_job
from atelier.training.audio.aligner import AlignConfig

from helpers import (
    node_defaults,
    synthetic_paired_folder,
    synthetic_picture,
    synthetic_sound,
    tiny_clip_folder,
    write_video,
)

SPEC = MelSpec(sample_rate=8000, window_seconds=0.5, n_mels=32)  # the node's settings below
ENCODERS = "audio_encoders"  # the models folder the training node writes into
ALIGN = AlignConfig(epochs=40, batch_size=12, lr=1e-3, val_fraction=0.25, widths=(16, 32), blocks_per_stage=1,
                    mel=SPEC, temperature=0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny CLIP, a synthetic paired folder, and an encoder trained on it by the node (in its own models and
    output folders)."""
    root = tmp_path_factory.mktemp("audio")
    clip = load_clip(tiny_clip_folder(root / "clip"))
    pairs = synthetic_paired_folder(root / "pairs", per_class=6)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATELIER_MODELS_DIR", str(root / "models"))
        mp.setattr(bridge, "_output_override", root / "output")
        node = nodes.AtelierTrainAudioEncoder()
        args = node_defaults(nodes.AtelierTrainAudioEncoder, folder=str(pairs), name="sounds", epochs=40,
                             batch_size=12, learning_rate=1e-3, temperature=0.05, val_fraction=0.25, sample_rate=8000,
                             window_seconds=0.5, n_mels=32)
        encoder, path, curve, report = node.train(**args, clip_model=clip)
    return {"root": root, "clip": clip, "pairs": pairs, "encoder": encoder, "path": Path(path), "curve": curve,
            "report": report}


def audio_input(wave: np.ndarray, rate: int) -> dict:
    wave = wave if wave.ndim == 2 else wave[None]
    return {"waveform": torch.from_numpy(wave)[None], "sample_rate": rate}


def test_training_node_reaches_retrieval_far_above_chance_and_writes_the_encoder(world):
    encoder = world["encoder"]
    assert world["path"].is_file() and world["path"].parent == world["root"] / "models" / "atelier" / ENCODERS
    assert "R@1" in world["report"] and world["curve"].shape[-1] == 3
    assert encoder.metrics["r1"] >= 3 * encoder.metrics["chance_r1"]  # 9 held out: chance is 0.11
    loaded = load_audio_encoder(world["path"])
    clip = synthetic_sound(1)[None]
    assert torch.allclose(loaded.embed_clip(clip, 8000)[0], encoder.embed_clip(clip, 8000)[0], atol=1e-6)
    assert loaded.image_encoder == world["clip"].name
    job = audio_job.AudioJob(str(world["pairs"]), align=AlignConfig(epochs=40, batch_size=12, val_fraction=0.25))
    assert audio_job.estimated_steps(job) == 36 + 40 * 2  # 36 pairs loaded; 27 train in batches of 12


def test_encode_audio_downmixes_resamples_and_offers_clip_vision_output(world):
    rate = 22050
    mono = synthetic_sound(0, seconds=1.0, rate=rate)
    embedding, vision, notes = nodes.AtelierEncodeAudio().encode(world["encoder"],
                                                                 audio_input(np.stack([mono, mono]), rate))
    assert embedding.embeds.shape == (1, world["clip"].dim)
    assert "2 channels downmixed to mono" in notes and "resampled from 22050 Hz to 8000 Hz" in notes
    assert torch.allclose(vision["image_embeds"], embedding.embeds * world["encoder"].image_embed_norm)
    assert torch.equal(vision.image_embeds, vision["image_embeds"])
    with pytest.raises(SilentAudio, match="silent"):
        nodes.AtelierEncodeAudio().encode(world["encoder"], audio_input(np.zeros((6, 8000), np.float32), 8000))
    with pytest.raises(ValueError, match="Load Audio"):
        nodes.AtelierEncodeAudio().encode(world["encoder"], torch.zeros(1, 1, 100))


def test_mix_sounds_adds_the_gained_sources_at_the_highest_rate():
    """Exact: the mix is the sum of each source times its gain, nothing normalised (a mix above full scale is kept
    and said). That loudness then reaches the conditioning and the picture is test_loudness_reaches_the_picture."""
    mixer = nodes.AtelierMixSounds()
    stream, bark = synthetic_sound(4, seconds=1.0), synthetic_sound(1, seconds=0.5)
    mixed, notes = mixer.mix(audio_input(stream, 8000), 0.25, 1.5, 1.0, 1.0, audio_2=audio_input(bark, 8000))
    expected = 0.25 * stream
    expected[:bark.size] += 1.5 * bark
    assert mixed["sample_rate"] == 8000 and torch.allclose(mixed["waveform"][0, 0], torch.from_numpy(expected))
    assert notes == ""
    mixed, notes = mixer.mix(audio_input(stream, 8000), 3.0, 3.0, 1.0, 1.0, audio_2=audio_input(stream, 16000))
    assert mixed["sample_rate"] == 16000 and mixed["waveform"].shape == (1, 1, 16000)
    assert "above full scale" in notes


def test_encode_audio_measures_loudness_and_can_turn_it_off(world):
    """The strength Encode Audio gives each clip: its gated RMS level against the reference, doubled every 10 dB;
    a quiet sound draws weakly (not an error), silence is still refused."""
    encode = nodes.AtelierEncodeAudio().encode
    tone = synthetic_sound(0, seconds=1.0, gain=1.0)  # a sine at full scale: -3.01 dBFS
    batch = {"waveform": torch.from_numpy(np.stack([tone, 0.1 * tone]))[:, None], "sample_rate": 8000}
    embedding, _, notes = encode(world["encoder"], batch, True, -13.0)
    assert torch.allclose(embedding.strengths, torch.tensor([2.0, 0.5]), rtol=1e-3)  # 10 dB over, then 10 under
    assert "clip 1 of the AUDIO: level -3.0 dBFS, +10.0 dB from the reference -13 dBFS: token strength x2.00" in notes
    quiet, _, notes = encode(world["encoder"], audio_input(1e-3 * tone, 8000))  # -63 dBFS
    assert quiet.strengths.tolist() == [1 / 16] and "x0.06 (the limit)" in notes
    off, _, notes = encode(world["encoder"], batch, False)
    assert off.strengths is None and torch.equal(off.row_strengths(), torch.ones(2))
    assert "loudness off" in notes and torch.equal(off.embeds, embedding.embeds)
    adapter = LoadedAdapter(EmbeddingAdapter(AdapterConfig(world["clip"].dim, tokens=2)), "tiny")
    text = [[torch.zeros(1, 77, 768), {}]]
    (cond,) = nodes.AtelierAudioConditioning().apply(text, adapter, embedding, 0.5)
    tokens = adapter.tokens(embedding.embeds)
    assert torch.allclose(cond[0][0][:, 77:], tokens * 0.5 * embedding.strengths[:, None, None], atol=1e-6)


def test_tokens_append_to_a_conditioning_with_the_right_shape():
    adapter = LoadedAdapter(EmbeddingAdapter(AdapterConfig(16, tokens=4)), "tiny")
    text = torch.randn(2, 77, 768)
    conditioning = [[text, {"pooled_output": torch.ones(2, 768)}]]
    embedding = AudioEmbedding(torch.randn(1, 16), "tiny", 1.0)
    (out,) = nodes.AtelierAudioConditioning().apply(conditioning, adapter, embedding, 0.5)
    cond, options = out[0]
    assert cond.shape == (2, 81, 768) and torch.equal(cond[:, :77], text)
    assert torch.allclose(cond[0, 77:], cond[1, 77:])  # one sound steers every image of the batch
    assert torch.allclose(cond[0, 77:], 0.5 * adapter.tokens(embedding.embeds)[0])
    assert torch.equal(options["pooled_output"], torch.ones(2, 768))
    (same,) = nodes.AtelierAudioConditioning().apply(conditioning, adapter, embedding, 0.0)
    assert same[0][0].shape == (2, 77, 768)
    batch = AudioEmbedding(torch.randn(3, 16), "tiny", 1.0)
    assert condition([[torch.zeros(3, 77, 768), {}]], adapter.tokens(batch.embeds))[0][0].shape == (3, 81, 768)
    one_prompt = condition([[text[:1], {}]], adapter.tokens(batch.embeds))[0][0]  # one picture per embedding
    assert one_prompt.shape == (3, 81, 768) and torch.equal(one_prompt[2, :77], text[0])
    with pytest.raises(ValueError, match="3 embeddings for a conditioning batch of 2"):
        condition(conditioning, adapter.tokens(batch.embeds))
    with pytest.raises(ValueError, match="16-d"):
        adapter.tokens(torch.randn(1, 32))
    with pytest.raises(ValueError, match="empty"):
        condition([], adapter.tokens(embedding.embeds))


def test_image_plus_sound_blends_the_two_embeddings(world):
    adapter = LoadedAdapter(EmbeddingAdapter(AdapterConfig(world["clip"].dim, tokens=2)), "tiny")
    picture = torch.from_numpy(synthetic_picture(2).astype(np.float32) / 255)[None]
    sound = AudioEmbedding(torch.randn(1, world["clip"].dim), "tiny", 1.0)
    conditioning = [[torch.zeros(1, 77, 768), {}]]
    node = nodes.AtelierImageSoundConditioning()
    (only_picture,) = node.apply(conditioning, adapter, picture, sound, 0.0, 1.0, clip_model=world["clip"])
    unit = embed_pictures(clip_embedder(world["clip"]), picture).unit
    assert torch.allclose(only_picture[0][0][:, 77:], adapter.tokens(unit), atol=1e-6)
    (only_sound,) = node.apply(conditioning, adapter, picture, sound, 1.0, 1.0, clip_model=world["clip"])
    assert torch.allclose(only_sound[0][0][:, 77:], adapter.tokens(sound.embeds), atol=1e-6)
    quiet = AudioEmbedding(sound.embeds, "tiny", 1.0, torch.tensor([0.5]))  # 10 dB under the reference
    (half,) = node.apply(conditioning, adapter, picture, quiet, 1.0, 1.0, clip_model=world["clip"])
    assert torch.allclose(half[0][0][:, 77:], adapter.tokens(0.5 * unit + 0.5 * sound.embeds), atol=1e-6)
    with pytest.raises(ValueError, match="exactly one image encoder"):
        node.apply(conditioning, adapter, picture, sound, 0.5, 1.0)
    wrong = AudioEmbedding(torch.randn(1, 8), "other", 1.0)
    with pytest.raises(ValueError, match="not the one the audio encoder was trained for"):
        node.apply(conditioning, adapter, picture, wrong, 0.5, 1.0, clip_model=world["clip"])


def test_thumbnails_pick_the_largest_cluster(world):
    rate = 8000
    parts = [(0, 6), (4, 3), (1, 2)]  # class, seconds: the low tone fills most of the file
    wave = np.concatenate([synthetic_sound(kind, seconds=sec, rate=rate, seed=kind) for kind, sec in parts])
    node = nodes.AtelierAudioThumbnails()
    reps, thumb, report = node.cluster(world["encoder"], audio_input(wave, rate), 1.0, 0.0, 3, 0)
    assert reps.embeds.shape == (3, world["clip"].dim) and torch.equal(thumb.embeds[0], reps.embeds[0])
    assert "cluster 1: 6 segments, representative at" in report
    start = float(report.split("cluster 1: 6 segments, representative at ")[1].split(" s")[0])
    assert 0 <= start < 6  # inside the tone's six seconds
    # a sine peaking at 0.5 reads -9.0 dBFS: 11 dB over the reference, so it draws at 2 ** 1.1
    assert "level -9.0 dBFS" in report.split("cluster 2")[0]
    assert float(thumb.strengths[0]) == pytest.approx(2 ** ((-9.03 + 20) / 10), rel=0.01)
    assert torch.equal(reps.strengths[:1], thumb.strengths)
    assert "cluster 2: 3 segments" in report and "cluster 3: 2 segments" in report
    with pytest.raises(ValueError, match="too few for 20 clusters"):
        node.cluster(world["encoder"], audio_input(wave, rate), 1.0, 0.0, 20, 0)


def test_frame_selection_keeps_the_frames_that_match_their_sound(world, tmp_path):
    """A video whose sound is the first class throughout, showing that class's picture for half its frames and
    another class's for the rest: scored by the trained encoder, the matching frames are the ones kept."""
    rate, fps = 8000, 2
    frames = [synthetic_picture(0 if i % 2 == 0 else 3, seed=i) for i in range(12)]
    folder = tmp_path / "videos"
    folder.mkdir()
    sound = np.concatenate([synthetic_sound(0, seconds=0.5, rate=rate, seed=i) for i in range(12)])
    write_video(folder / "clip.mkv", frames, fps, sound, rate)
    job = audio_job.AudioJob(str(folder), "from_video", AlignConfig(**{**ALIGN.__dict__, "epochs": 2}),
                             frames_per_second=fps, top_k=6, threshold=-1.0)
    result = audio_job.run(job, clip_embedder(world["clip"]), tmp_path / "encoders", tmp_path / "runs",
                           scorer=world["encoder"])
    kept = sorted(float(name.split("@")[1].split("s")[0]) for name in (s.split(" ")[0] for s in result.selected))
    assert kept == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # the even frames, which show the tone's picture
    assert result.path.is_file()


def test_video_without_audio_and_empty_folders_are_clear_errors(world, tmp_path):
    folder = tmp_path / "silent_film"
    folder.mkdir()
    write_video(folder / "film.mkv", [synthetic_picture(0)] * 4, 2, None, 8000)
    job = audio_job.AudioJob(str(folder), "x", ALIGN)
    with pytest.raises(NoAudioTrack, match="film.mkv' has no audio track"):
        audio_job.run(job, clip_embedder(world["clip"]), tmp_path / "enc", tmp_path / "runs")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no pairs"):
        audio_job.run(audio_job.AudioJob(str(tmp_path / "empty"), "x", ALIGN), clip_embedder(world["clip"]),
                      tmp_path / "enc", tmp_path / "runs")


def test_comfy_clip_vision_is_an_image_encoder_and_dimensions_are_checked(world):
    class FakeClipVision:  # the part of comfy.clip_vision.ClipVisionModel the pack uses
        def encode_image(self, images):
            out = bridge.ClipVisionOutput()
            out["image_embeds"] = images.mean(dim=(1, 2)).repeat(1, 256)  # [B, 768]
            return out

    embedder = nodes.image_embedder(clip_vision=FakeClipVision())
    assert embedder.dim == 768
    with pytest.raises(ValueError, match="trained for the 16-d space"):
        world["encoder"].check_image_dim(embedder.dim, embedder.name)
    with pytest.raises(TypeError, match="Load CLIP Vision"):
        nodes.image_embedder(clip_vision=object())


def test_load_nodes_find_trained_files_and_name_missing_ones(world, monkeypatch):
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(world["root"] / "models"))
    assert world["path"].name in nodes.AtelierLoadAudioEncoder.INPUT_TYPES()["required"]["encoder"][0]
    (encoder,) = nodes.AtelierLoadAudioEncoder().load(world["path"].name)
    assert encoder.dim == world["clip"].dim
    with pytest.raises(FileNotFoundError, match="Train Embedding Adapter"):
        nodes.AtelierLoadEmbeddingAdapter().load("missing.safetensors")
