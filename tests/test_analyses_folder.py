"""The folder form of the analyses on tiny random models: a folder with Korean file names, a broken file, a picture
too small for the detector, metadata with an empty note; the jsonl equals the per-picture engine calls, each model
is loaded once, cancel stops it, and a missing folder fails before any work."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.core.analyses import colour, emotion, folder, intent, objects, space, style_match
from atelier.core.analyses.folder import ANALYSES_FILE, analyse_folder
from atelier.core.curator.clip_model import load_clip
from atelier.core.curator.taxonomy import load_taxonomy
from atelier.core.dataset.image_files import ImageFolderError
from atelier.core.shared.progress import Cancelled, SilentProgress
from atelier.core.style.adain_model import load_model

from helpers import tiny_adain_files, tiny_clip_folder, tiny_owl_folder

TAXONOMY = """name: works
templates: ["{}"]
groups:
  subject:
    mode: multi
    labels:
      cat: {display: {en: cat, ko: 고양이}, prompts: [a cat]}
      vase: {prompts: [a vase]}
  space:
    mode: exclusive
    labels:
      cafe: {display: {en: cafe, ko: 카페}, prompts: [a busy coffee shop]}
      library: {display: {en: library, ko: 도서관}, prompts: [shelves of old books]}
"""
NOTE = "A quiet morning over the sea. The light is soft and warm. Boats rest in the harbour."
KOREAN_NOTE = "고요한 아침 바다. 빛이 부드럽다."  # bytes to the English CLIP: refused, not guessed


def _picture(seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (size, size, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    clip = load_clip(tiny_clip_folder(root / "clip"))
    taxonomy_path = root / "works.yaml"
    taxonomy_path.write_text(TAXONOMY, encoding="utf-8")
    adain = load_model(*tiny_adain_files(root / "adain", base=4, seed=0))
    detector = objects.load_detector(tiny_owl_folder(root / "owl"))
    templates = root / "templates"
    templates.mkdir()
    for i, name in enumerate(("물결", "grid")):
        Image.fromarray(_picture(100 + i)).save(templates / f"{name}.png")
    (templates / "물결.txt").write_text("잔잔한 물결 무늬\n", encoding="utf-8")  # grid.png has no description
    paths = {"clip": root / "clip", "taxonomy": taxonomy_path, "adain": root / "adain", "owl": root / "owl"}
    return clip, load_taxonomy(taxonomy_path), adain, detector, templates, paths


@pytest.fixture
def pictures(tmp_path):
    work = tmp_path / "작품"
    work.mkdir()
    Image.fromarray(_picture(1)).save(work / "바다 1.png")
    Image.fromarray(_picture(2)).save(work / "숲.png")
    (work / "숲.txt").write_text("shelves of old books in a reading room", encoding="utf-8")
    Image.fromarray(_picture(3, size=20)).save(work / "작은.png")
    (work / "깨진.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"바다 1": {"title": "바다", "artist_note": NOTE, "expert_review": "Calm and exact."},
                                "숲.png": {"artist_note": ""}, "작은": {"artist_note": KOREAN_NOTE}},
                               ensure_ascii=False), encoding="utf-8")
    return work, meta


def _image(path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).float() / 255.0


def test_the_jsonl_equals_the_per_picture_engine_calls(models, pictures, tmp_path):
    clip, taxonomy, adain, detector, templates, _ = models
    work, meta = pictures
    result = analyse_folder(work, clip, taxonomy, adain, templates, detector, "subject", meta, seed=3,
                            cache_dir=tmp_path / "cache")
    lines = (work / ANALYSES_FILE).read_text(encoding="utf-8").splitlines()
    written = [json.loads(line) for line in lines]
    assert written == result.records
    assert [r["file"] for r in written] == ["바다 1.png", "숲.png", "작은.png"]  # natural order, broken one skipped
    assert [s.path.endswith("깨진.png") for s in result.skipped] == [True]

    bank = style_match.load_templates(adain, templates)
    for record in written:
        path = work / record["file"]
        image = _image(path)
        assert record["colour"] == colour.analyse_colour(image, colour.DEFAULT_PALETTE, colour.DEFAULT_BINS,
                                                         3).record()
        note = {"바다 1.png": NOTE, "숲.png": "", "작은.png": ""}[record["file"]]  # the Korean one refused
        expected = emotion.analyse_emotion(clip, image, note).record()
        assert (record["emotion"]["text"] is None) == (not note)
        assert record["emotion"]["fused"]["step"] == expected["fused"]["step"]
        for key, value in expected["fused"]["basic"].items():
            assert record["emotion"]["fused"]["basic"][key] == pytest.approx(value, abs=2e-4)
        assert record["style"] == style_match.match_style(adain, image, bank).record()
        text = path.with_suffix(".txt").read_text(encoding="utf-8") if path.with_suffix(".txt").exists() else note
        if text:
            expected_space = space.space_from_text(clip, taxonomy, text, image, "space").record()
            assert record["space"]["from_text"] == expected_space["from_text"]  # the text: same calls
            assert [(r["space"], r["score"]) for r in record["space"]["from_picture"]] == [
                (r["space"], pytest.approx(r["score"], abs=1e-4)) for r in expected_space["from_picture"]]
        else:
            assert record["space"] is None
    sea, forest, small = written
    assert sea["objects"] == objects.detect_objects(detector, _image(work / "바다 1.png"), taxonomy,
                                                    "subject").record()
    assert forest["objects"] is not None and small["objects"] is None  # 20 px: under the detector's 32
    assert sea["intent"] == intent.summarize_intent(NOTE, "Calm and exact.", 2, None, clip).record()
    assert forest["intent"] is None
    assert small["intent"] == intent.summarize_intent(KOREAN_NOTE, "", 2, None, clip).record()
    assert small["space"] is None  # no caption, and a note the CLIP cannot read
    report = result.report()
    assert "작은.png: 20x20 is under the detector's 32 pixels" in report
    assert "intent, 숲.png: the artist's note and the expert review are empty" in report
    assert report.count("grid") == 1  # the undescribed template said once, not once per picture
    assert "깨진.png" in report
    assert "emotion, 작은.png: CLIP" in report and "cannot read this text" in report
    assert "space, 작은.png: CLIP" in report


def test_without_models_only_colour_runs(pictures):
    work, _ = pictures
    result = analyse_folder(work)
    assert all(r["colour"] and not any(r[k] for k in ("emotion", "style", "objects", "intent", "space"))
               for r in result.records)
    assert "no metadata file" in result.report()


def test_each_model_is_used_once_for_shared_work(models, pictures, monkeypatch):
    clip, taxonomy, adain, detector, templates, _ = models
    work, meta = pictures
    calls = {"prompts": 0, "images": 0, "templates": 0}
    real_prompts, real_embed, real_templates = emotion.prompt_embeddings, clip.embed_images, style_match.load_templates

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(emotion, "prompt_embeddings", count("prompts", real_prompts))
    monkeypatch.setattr(clip, "embed_images", count("images", real_embed))
    monkeypatch.setattr(style_match, "load_templates", count("templates", real_templates))
    analyse_folder(work, clip, taxonomy, adain, templates, detector, "subject", meta)
    assert calls == {"prompts": 1, "images": 1, "templates": 1}  # 3 readable pictures in one CLIP batch


def test_cancel_stops_before_writing(pictures):
    work, _ = pictures

    class CancelSecond(SilentProgress):
        def __init__(self) -> None:
            super().__init__(4)
            self.seen = 0

        def check_cancel(self) -> None:
            self.seen += 1
            if self.seen == 2:
                raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        analyse_folder(work, progress=CancelSecond())
    assert not (work / ANALYSES_FILE).exists()


def test_clear_errors_before_work(models, pictures, tmp_path, monkeypatch):
    clip, taxonomy, adain, detector, _, _ = models
    work, _ = pictures
    with pytest.raises(ImageFolderError, match="does not exist"):
        analyse_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="needs a taxonomy"):
        analyse_folder(work, detector=detector)
    with pytest.raises(ValueError, match="template folder"):
        analyse_folder(work, adain=adain)
    monkeypatch.setattr(clip, "embed_images", lambda *a, **k: pytest.fail("the CLIP pass ran before the check"))
    with pytest.raises(ImageFolderError, match="does not exist"):
        analyse_folder(work, clip, adain=adain, template_folder=tmp_path / "no_templates")
    with pytest.raises(Exception, match="no group 'things'"):
        analyse_folder(work, taxonomy=taxonomy, detector=detector, object_group="things")
    assert not (work / ANALYSES_FILE).exists()


def test_picture_metadata_by_name_or_stem():
    from atelier.core.captions.curation_text import Metadata

    meta = {"a": Metadata(title="by stem"), "b.png": Metadata(title="by name")}
    from pathlib import Path

    assert folder.picture_metadata(meta, Path("x/a.jpg")).title == "by stem"
    assert folder.picture_metadata(meta, Path("b.png")).title == "by name"
    assert folder.picture_metadata(meta, Path("c.png")) == Metadata()


def test_analyse_folder_node(models, pictures, tmp_path, monkeypatch):
    from atelier.nodes import bridge
    from atelier.nodes.analyses import AtelierAnalyseFolder

    from helpers import node_defaults

    clip, taxonomy, adain, detector, templates, _ = models
    work, meta = pictures
    monkeypatch.setattr(bridge, "output_directory", lambda: tmp_path / "out")
    args = node_defaults(AtelierAnalyseFolder, folder=str(work), template_folder=str(templates),
                         metadata_file=str(meta), seed=3)
    out_folder, analyses_json, report = AtelierAnalyseFolder().run(**args, clip_model=clip, taxonomy=taxonomy,
                                                                   adain_model=adain, detector=detector)
    assert out_folder == str(work)
    records = json.loads(analyses_json)
    assert records == [json.loads(line) for line in (work / ANALYSES_FILE).read_text(encoding="utf-8").splitlines()]
    assert all(r["style"] and r["emotion"] for r in records) and records[0]["intent"]
    assert report.splitlines()[0].startswith("바다 1.png: colour, emotion, style, objects, intent, space (")
    assert "skipped 깨진.png" in report
    only_colour = AtelierAnalyseFolder().run(**{**args, "metadata_file": ""})[1]
    assert [set(k for k, v in r.items() if v) for r in json.loads(only_colour)] == [{"file", "colour"}] * 3


def test_analyse_command(models, pictures, tmp_path, capsys):
    from atelier.cli import main

    clip, taxonomy, adain, detector, templates, paths = models
    work, meta = pictures
    encoder, decoder = paths["adain"] / "vgg_normalised.pth", paths["adain"] / "decoder.pth"
    argv = ["analyse", str(work), "--clip", str(paths["clip"]), "--taxonomy", str(paths["taxonomy"]),
            "--adain-encoder", str(encoder), "--adain-decoder", str(decoder), "--templates", str(templates),
            "--detector", str(paths["owl"]), "--metadata", str(meta), "--seed", "3", "--output", str(tmp_path / "o")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"wrote {work / ANALYSES_FILE}" in out
    assert out.splitlines()[0].startswith("바다 1.png: colour, emotion, style, objects, intent, space (")
    expected = analyse_folder(work, clip, taxonomy, adain, templates, detector, "subject", meta, seed=3).records
    assert [json.loads(line) for line in (work / ANALYSES_FILE).read_text(encoding="utf-8").splitlines()] == expected
    assert main(["analyse", str(work), "--adain-encoder", str(encoder)]) == 2
    assert "together" in capsys.readouterr().err
