"""A vision-text dual encoder (tiny BERT with Korean word pieces + tiny CLIP vision tower) wherever the pack uses
CLIP: labelling, curation, the embedding cache, the curator's analyses (emotion, space, intent, the folder form and
their nodes), and the audio encoder's image space (its trainer included); the text paths also with a Korean
CLIPModel (its own word-piece tokenizer). Korean text throughout."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from atelier.core.analyses import emotion, intent, space
from atelier.core.analyses.folder import analyse_folder
from atelier.core.audio.encoder import load_audio_encoder
from atelier.core.audio.image_embedding import clip_embedder, embed_pictures
from atelier.core.curator.clip_model import load_clip
from atelier.core.curator.image_index import index_folder
from atelier.core.curator.taxonomy import load_taxonomy
from atelier.nodes.analyses import AtelierEmotionAnalysis, AtelierSpaceFromText
from atelier.nodes.curator import AtelierCurateFolder, AtelierLabelImages
from atelier.training.audio import job as audio_job
from atelier.training.audio.aligner import AlignConfig

from helpers import (
    node_defaults,
    synthetic_paired_folder,
    synthetic_picture,
    tiny_clip_folder,
    tiny_dual_encoder_folder,
    tiny_korean_clip_folder,
)

NOTE = "바닷가 마을의 오래된 집에서 고양이가 창밖을 바라본다. 빨간 집 바다 그림."


@pytest.fixture(scope="module")
def dual(tmp_path_factory: pytest.TempPathFactory) -> Any:
    clip = load_clip(tiny_dual_encoder_folder(tmp_path_factory.mktemp("dual") / "ko-en"))
    assert clip.kind == "vision-text-dual-encoder" and clip.languages == ("en", "ko")
    return clip


@pytest.fixture(scope="module", params=["dual encoder", "Korean CLIP"])
def encoder(request: pytest.FixtureRequest, dual: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if request.param == "dual encoder":
        return dual
    clip = load_clip(tiny_korean_clip_folder(tmp_path_factory.mktemp("ko-clip") / "ko-clip"))
    assert clip.kind == "clip" and clip.languages == ("en", "ko")
    return clip


@pytest.fixture
def works(tmp_path: Path, output_dir: Path) -> Path:
    """Four pictures with Korean names and Korean caption sidecars."""
    folder = tmp_path / "작품"
    folder.mkdir()
    for k in range(4):
        Image.fromarray(synthetic_picture(k, size=48)).save(folder / f"작품_{k}.png")
        (folder / f"작품_{k}.txt").write_text(NOTE if k % 2 else "파란 바다 그림", encoding="utf-8")
    return folder


def _images(count: int = 2) -> torch.Tensor:
    return torch.stack([torch.from_numpy(synthetic_picture(k, size=40)) for k in range(count)]).float() / 255.0


def _spy(clip: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    asked: list[str] = []
    embed = clip.embed_texts
    monkeypatch.setattr(clip, "embed_texts", lambda texts, *a: (asked.extend(texts), embed(texts, *a))[1])
    return asked


def test_labelling_uses_bilingual_prompts(encoder: Any, output_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _spy(encoder, monkeypatch)
    scenes = load_taxonomy("scenes")
    labels_json, tags, prompts = AtelierLabelImages().label(encoder, scenes, _images(), "ko", 2)
    assert prompts == "prompts: en+ko (the text tower reads English and Korean)"
    assert "거실의 사진." in asked and "a photo of a living room." in asked
    records = json.loads(labels_json)
    assert len(records) == 2 and all(len(r["labels"]["setting"]) == 1 for r in records)
    names = {label.display["ko"] for label in scenes.labels()}
    assert all(set(line.split(", ")) <= names for line in tags.split("\n"))


def test_curation_with_a_dual_encoder(dual: Any, works: Path, output_dir: Path) -> None:
    values = node_defaults(AtelierCurateFolder, folder=str(works), dedup_threshold=0.0, language="ko",
                           subfolders_by="space")
    folder, labels_json, report, kept = AtelierCurateFolder().curate(dual, load_taxonomy("spaces"), **values)
    assert kept == 4 and report.startswith("prompts: en+ko (the text tower reads English and Korean)\n")
    assert len(json.loads(labels_json)) == 4 and len(list(Path(folder).rglob("*.png"))) == 4


def test_the_embedding_cache_keys_on_the_model(dual: Any, works: Path, tmp_path: Path) -> None:
    english = load_clip(tiny_clip_folder(tmp_path / "clip"))
    first = index_folder(dual, works, tmp_path / "cache")
    other = index_folder(english, works, tmp_path / "cache")  # same pictures, same cache, another model
    again = index_folder(dual, works, tmp_path / "cache")
    assert (first.encoded, other.encoded, again.encoded, again.cached) == (4, 4, 0, 4)
    assert torch.equal(first.embeddings, again.embeddings)


def test_emotion_reads_a_korean_note(encoder: Any) -> None:
    assert emotion.unknown_token_share(encoder.tokenizer, NOTE) == 0.0
    result = emotion.analyse_emotion(encoder, _images(1)[0], NOTE)
    assert result.text is not None and sum(result.fused.probabilities) == pytest.approx(1.0)
    summary = AtelierEmotionAnalysis().analyse(encoder, _images(2), NOTE, 1.0, 1.0, emotion.DEFAULT_TEMPERATURE)[2]
    assert len(summary.split("\n")) == 2


def test_space_from_a_korean_text_with_bilingual_prompts(encoder: Any, output_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _spy(encoder, monkeypatch)
    spaces = load_taxonomy("spaces")
    result = space.space_from_text(encoder, spaces, NOTE, _images(1)[0], language="ko")
    assert {s for s, _ in result.from_text} == set(spaces.groups["space"].labels) and result.sentences == 2
    assert "카페에 어울리는 작품." in asked and "an artwork that suits a cafe." in asked
    space_json, name = AtelierSpaceFromText().place(encoder, spaces, NOTE, "space", "ko", _images(1))
    assert json.loads(space_json)["text_choice"] == result.text_choice and name == result.names[result.text_choice]


def test_intent_chunks_long_korean_sentences_at_the_text_towers_window(encoder: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _spy(encoder, monkeypatch)
    long = " ".join(["바닷가", "마을의", "오래된", "집에서"] * 20)  # past the tokenizer's 32 tokens
    vectors = intent.clip_vectors(encoder, [long, "고양이가 창밖을 바라본다"])
    chunks = asked[:-1]
    assert len(chunks) >= 2 and " ".join(chunks) == long and vectors.shape == (2, encoder.dim)
    window = encoder.max_tokens - 2  # its start and end tokens
    assert all(len(encoder.tokenizer(c, add_special_tokens=False)["input_ids"]) <= window for c in chunks)
    summary = intent.extractive_summary(NOTE + " 고양이는 하루 종일 잔다.", 1, encoder)
    assert summary.method == "extractive-clip" and len(summary.sentences) == 1


def test_the_folder_analyses_with_a_dual_encoder(dual: Any, works: Path) -> None:
    result = analyse_folder(works, dual, load_taxonomy("spaces"), language="ko")
    assert len(result.records) == 4 and not [n for n in result.notes if "cannot read" in n]
    assert all(r["emotion"] is not None and r["space"]["from_text"] for r in result.records)


def test_the_audio_encoders_image_space_and_trainer(dual: Any, tmp_path: Path) -> None:
    embedder = clip_embedder(dual)
    assert embedder.dim == dual.dim == 16
    pictures = _images(2)
    space_of_sound = embed_pictures(embedder, pictures)
    assert torch.allclose(space_of_sound.unit, dual.embed_images(pictures), atol=1e-5)  # the shared space itself
    pairs = synthetic_paired_folder(tmp_path / "pairs", per_class=2, classes=3)
    align = AlignConfig(epochs=2, batch_size=4, widths=(8, 16), blocks_per_stage=1, val_fraction=0.34)
    result = audio_job.run(audio_job.AudioJob(str(pairs), "소리", align), embedder, tmp_path / "encoders",
                           tmp_path / "runs")
    encoder = load_audio_encoder(result.path)
    assert encoder.dim == 16 and result.path.is_file()
