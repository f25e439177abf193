"""The headless commands for the parts that had none: FID/KID, retrieval, the story strip and audio embeddings.
Each runs the code its node runs; the tests compare with the core functions called directly on tiny models."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main

from helpers import SAMPLES, synthetic_picture, synthetic_sound, tiny_clip_folder


def _pictures(folder: Path, sizes: list[int], captions: list[str] | None = None) -> Path:
    folder.mkdir(parents=True)
    for i, size in enumerate(sizes):
        Image.fromarray(synthetic_picture(i, seed=i, size=size)).save(folder / f"{i + 1}.png")
        if captions:
            (folder / f"{i + 1}.txt").write_text(captions[i], encoding="utf-8")
    return folder


def test_story_strip_stacks_a_folder_with_its_captions(tmp_path: Path, capsys) -> None:
    from atelier.core.dataset.folder_dataset import load_folder
    from atelier.core.story.strip import StripLayout, make_strip

    panels = _pictures(tmp_path / "panels", [48, 32, 40], ["작은 배가 떠난다.", "", "the sea is calm."])
    out = tmp_path / "strips" / "strip.png"
    assert main(["story-strip", str(panels), "--out", str(out), "--width", "200", "--margin", "8",
                 "--caption-size", "12"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    layout = StripLayout(200, 24, 8, (1.0, 1.0, 1.0), 12, (0.0, 0.0, 0.0))
    data = load_folder(panels)
    expected = make_strip([i.image for i in data.images], ["작은 배가 떠난다.", "", "the sea is calm."], layout)
    written = np.asarray(Image.open(out)).astype(np.float32) / 255
    assert written.shape == tuple(expected.shape)
    assert np.abs(written - expected.numpy()).max() <= 0.5 / 255 + 1e-6
    assert list(out.parent.iterdir()) == [out]  # no temporary file left beside it

    assert main(["story-strip", str(panels), "--out", str(tmp_path / "strip.jpg")]) == 2
    assert "give a .png file name" in capsys.readouterr().err


def test_story_strip_refuses_too_few_caption_lines(tmp_path: Path, capsys) -> None:
    panels = _pictures(tmp_path / "panels", [32, 32, 32])
    lines = tmp_path / "story.txt"
    lines.write_text("one\ntwo\n", encoding="utf-8")
    assert main(["story-strip", str(panels), "--out", str(tmp_path / "s.png"), "--captions", str(lines)]) == 2
    assert "has 2 line(s) for 3 panels" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_audio_encode_writes_what_encode_audio_computes(tmp_path: Path, capsys) -> None:
    import soundfile
    from safetensors.torch import load_file

    from atelier.core.audio.encoder import (
        AudioEmbedder,
        AudioEncoder,
        AudioEncoderConfig,
        load_audio_encoder,
        save_audio_encoder,
    )
    from atelier.core.audio.features import MelSpec, read_audio

    torch.manual_seed(0)
    spec = MelSpec(sample_rate=8000, window_seconds=0.5, n_mels=32, n_fft=256, hop_length=64)
    embedder = AudioEmbedder(AudioEncoder(AudioEncoderConfig(8, spec, widths=(8, 16), blocks_per_stage=1)).eval(),
                             "tiny-clip", 12.5)
    path = save_audio_encoder(tmp_path / "encoders", "tiny", embedder, {})
    sounds = []
    for kind, rate in ((0, 8000), (3, 22050)):
        sound = tmp_path / f"소리_{kind}.wav"
        soundfile.write(sound, np.stack([synthetic_sound(kind, seconds=1.2, rate=rate)] * 2, axis=1), rate)
        sounds.append(str(sound))
    out = tmp_path / "embeds.safetensors"
    assert main(["audio-encode", str(path), *sounds, "--out", str(out), "--device", "cpu"]) == 0
    assert f"wrote {out}: 2 embedding(s) of 8 values" in capsys.readouterr().out
    tensors = load_file(str(out))
    loaded = load_audio_encoder(path)
    for row, sound in enumerate(sounds):
        expected, _ = loaded.embed_clip(*read_audio(sound))
        assert torch.equal(tensors["audio_embeds"][row], expected)
    assert torch.allclose(tensors["image_embeds"], tensors["audio_embeds"] * 12.5)
    # the sounds peak at 0.5 in both channels: a sine reads -9.0 dBFS, x1.87 at -11.7 dBFS; a chirp the same
    assert main(["audio-encode", str(path), *sounds, "--out", str(out), "--reference-dbfs", "-11.7"]) == 0
    assert "the sound: level -9.0 dBFS, +2.7 dB from the reference -11.7 dBFS: token strength x1.2" in \
        capsys.readouterr().err
    tensors = load_file(str(out))
    assert torch.allclose(tensors["level_db"], torch.tensor([-9.03, -9.03]), atol=0.1)
    assert torch.allclose(tensors["strength"], 2 ** ((tensors["level_db"] + 11.7) / 10))
    assert torch.allclose(tensors["pan"], torch.zeros(2), atol=1e-6)  # the same in both channels: centred

    assert main(["audio-encode", str(tmp_path / "no_encoder.safetensors"), str(tmp_path / "missing.wav"), "--out",
                 str(tmp_path / "x.safetensors")]) == 2
    assert "no sound file" in capsys.readouterr().err  # the sounds are checked before the encoder loads


def test_retrieve_and_evaluate_retrieval_headless(tmp_path: Path, capsys) -> None:
    from atelier.core.curator import clip_model
    from atelier.core.dataset.image_files import list_images
    from atelier.nodes.curator import AtelierEvaluateRetrieval, AtelierRetrieveImages

    clip = tiny_clip_folder(tmp_path / "clip")
    folder = _pictures(tmp_path / "collection", [32, 32, 32, 32], ["a red square", "a green square", "a blue one",
                                                                     "a yellow one"])
    args = ["--clip", str(clip), "--device", "cpu", "--output", str(tmp_path / "out")]
    assert main(["retrieve", str(folder), "a green square", "--top-k", "3", *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["1", "2", "3"]
    assert {Path(line.split("\t")[2]) for line in lines} < set(list_images(folder))
    assert (tmp_path / "out" / "atelier" / "clip_cache").is_dir()  # the node's cache, under --output
    model = clip_model.load_clip(clip, "cpu", "fp32")
    assert lines == AtelierRetrieveImages().retrieve(model, str(folder), "a green square", 3, 64, 32, False)[1] \
        .splitlines()

    assert main(["evaluate-retrieval", str(folder), "--k", "2", "--exact-limit", "0", *args]) == 0
    report = capsys.readouterr().out.strip()
    assert report.startswith("MRR@2 ") and report.splitlines()[0].endswith("over 4 queries")
    assert report.splitlines()[1] == "exact search (FAISS flat inner product) over 4 vectors"  # few queries: exact
    assert report == AtelierEvaluateRetrieval().evaluate(model, str(folder), 2, 32)[2]
    assert main(["evaluate-retrieval", str(folder), "--pairs", str(tmp_path / "nope.csv"), *args]) == 2


def test_fid_headless_equals_the_core_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
                                           recwarn: pytest.WarningsRecorder) -> None:
    from atelier.core.metrics import fid

    # FID's 2048-d matrix square root takes over a minute on a busy 2-core CPU, and test_fid.py holds its maths to
    # pytorch-fid's: here the same function on the first 32 features stands in, and the features must be the ones
    # the core computes for each folder
    real_fid = fid.fid_from_features
    monkeypatch.setattr(fid, "fid_from_features", lambda a, b: real_fid(a[:, :32], b[:, :32]))
    torch.manual_seed(0)
    model = fid.FIDInceptionV3()
    for module in model.modules():  # activations that neither vanish nor explode
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    weights = tmp_path / "fid" / fid.FID_WEIGHTS_NAME
    weights.parent.mkdir()
    torch.save(model.state_dict(), weights)
    generated = _pictures(tmp_path / "generated", [40, 40, 40])
    originals = tmp_path / "originals"
    originals.mkdir()
    for name in ("rocket.png", "chelsea.jpg", "coffee.webp"):
        shutil.copy(SAMPLES / name, originals / name)
    assert main(["fid", str(generated), str(originals), "--weights", str(weights.parent), "--kid-subsets", "5",
                 "--kid-subset-size", "2", "--device", "cpu", "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    cache = tmp_path / "out" / "atelier" / "fid_cache"
    assert any(p.is_file() for p in cache.rglob("*")), "features cached under --output"
    loaded = fid.load_fid_inception(weights)
    a, b = (fid.folder_features(loaded, folder) for folder in (generated, originals))  # computed anew, no cache
    kid, kid_std = fid.kid_from_features(a, b, 5, 2, 0)
    inception, inception_std = fid.inception_score(loaded.logits(a), 3, True, 0)  # the first folder's, 3 splits
    assert (f"FID {fid.fid_from_features(a, b):.3f}  KID {kid:.5f} ± {kid_std:.5f}  IS {inception:.3f} ± "
            f"{inception_std:.3f}  (3 vs 3 images; IS of the first set over 3 splits") in out

    assert main(["fid", str(generated), str(originals), "--weights", str(tmp_path / "nothing")]) == 2
    assert "FID needs the Inception weights file" in capsys.readouterr().err
