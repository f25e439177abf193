"""Intent: extractive summaries exact on crafted notes (English and Korean), CLIP's window respected, an abstractive
summary from a tiny random BART folder, the expert review metadata field, and bad input."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from atelier.core.analyses import intent
from atelier.core.captions.curation_text import Metadata, read_metadata
from atelier.core.curator.clip_model import load_clip
from atelier.core.shared.hf_folders import ModelFolderError
from atelier.nodes.analyses import AtelierIntentSummary

from helpers import node_defaults, tiny_clip_folder, tiny_seq2seq_folder

# three sentences about the harbour at dawn share most of their words; two stray far from them
NOTE = ("The silver harbour wakes at dawn. My cat sleeps all day. I painted the silver harbour at dawn. "
        "Taxes are due in April! At dawn the harbour turns silver.")


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def test_sentences_split_in_english_and_korean():
    assert intent.split_sentences(NOTE)[:2] == ["The silver harbour wakes at dawn.", "My cat sleeps all day."]
    assert intent.split_sentences("He said \u201cstop.\u201d Then 3.5 m of blue.\nNo end") == [
        "He said \u201cstop.\u201d", "Then 3.5 m of blue.", "No end"]
    korean = "바다를 그렸다. 새벽의 바다는 은빛이에요!왜 바다인가? 기억한다。끝"
    assert intent.split_sentences(korean) == ["바다를 그렸다.", "새벽의 바다는 은빛이에요!", "왜 바다인가?",
                                              "기억한다。", "끝"]


def test_centrality_is_the_mean_cosine_to_the_others():
    vectors = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    c = 1 / np.sqrt(2)
    assert intent.centrality(vectors) == pytest.approx([(c + 0) / 2, (c + c) / 2, (0 + c) / 2])
    assert intent.centrality(vectors[:1]).tolist() == [0.0]


def test_extractive_summary_keeps_the_central_sentences_whole_and_in_order():
    summary = intent.extractive_summary(NOTE, 3)
    assert summary.sentences == (0, 2, 4)
    assert summary.summary == ("The silver harbour wakes at dawn. I painted the silver harbour at dawn. "
                               "At dawn the harbour turns silver.")
    assert summary.method == "extractive-tfidf" and summary.source_sentences == 5
    for n in (1, 2, 3, 4):  # never a word the note does not hold
        assert words(intent.extractive_summary(NOTE, n).summary) <= words(NOTE)
    assert intent.extractive_summary("One line only.", 3).summary == "One line only."


def test_korean_note():
    note = ("새벽 바다의 은빛을 그렸다. 고양이는 하루 종일 잔다. 은빛 바다의 새벽을 기억한다. 세금은 사월에 낸다요. "
            "새벽 바다는 은빛이다.")
    summary = intent.extractive_summary(note, 3)
    assert summary.sentences == (0, 2, 4)
    assert summary.summary == "새벽 바다의 은빛을 그렸다. 은빛 바다의 새벽을 기억한다. 새벽 바다는 은빛이다."


def test_clip_embeds_long_sentences_in_chunks_that_fit_its_window(tmp_path, monkeypatch):
    clip = load_clip(tiny_clip_folder(tmp_path / "clip"))
    long = " ".join(["harbour", "silver", "dawn", "light"] * 30)  # 120 words, past CLIP's 77 tokens
    sentences = [long, "A cat.", "The harbour at dawn."]
    seen: list[str] = []
    embed = clip.embed_texts
    monkeypatch.setattr(clip, "embed_texts", lambda texts: (seen.extend(texts), embed(texts))[1])
    vectors = intent.clip_vectors(clip, sentences)
    chunks = seen[:-2]
    assert len(chunks) >= 2 and " ".join(chunks) == long and seen[-2:] == sentences[1:]
    assert all(len(clip.tokenizer(c, add_special_tokens=False)["input_ids"]) <= 75 for c in chunks)
    expected = embed(chunks).numpy().mean(axis=0)
    assert np.allclose(vectors[0], expected, atol=1e-6) and vectors.shape == (3, clip.dim)
    summary = intent.extractive_summary(NOTE, 2, clip)
    assert summary.method == "extractive-clip" and len(summary.sentences) == 2
    assert words(summary.summary) <= words(NOTE)


def test_abstractive_summary_from_a_seq2seq_folder(tmp_path, monkeypatch):
    models = tmp_path / "models"
    folder = models / "atelier" / "summarizers" / "tiny_bart"
    folder.mkdir(parents=True)
    tiny_seq2seq_folder(folder)
    summarizer = intent.load_summarizer(folder)
    first, again = summarizer.summarize(NOTE, max_new_tokens=8), summarizer.summarize(NOTE, max_new_tokens=8)
    assert first == again and first.method == "abstractive" and first.model == "tiny_bart"
    assert first.record() == {"summary": first.summary, "method": "abstractive", "sentences": [],
                              "source_sentences": 5, "model": "tiny_bart"}
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models))
    assert "tiny_bart" in AtelierIntentSummary.INPUT_TYPES()["optional"]["summarizer"][0]
    record_json, text = AtelierIntentSummary().summarize(NOTE, "", 2, summarizer="tiny_bart", device="cpu")
    record = json.loads(record_json)
    assert record["artist_note"]["method"] == "abstractive" and record["expert_review"] is None
    assert text.startswith("Summary of the artist's note: ")


def test_node_labels_each_summary_and_says_what_was_empty():
    values = node_defaults(AtelierIntentSummary, artist_note=NOTE, expert_review="A calm work. It rewards time.",
                           max_sentences=3)
    record_json, text = AtelierIntentSummary().summarize(**values)
    record = json.loads(record_json)
    assert record["artist_note"]["sentences"] == [0, 2, 4] and record["messages"] == []
    assert record["expert_review"]["summary"] == "A calm work. It rewards time."
    assert text.splitlines() == [f"Summary of the artist's note: {record['artist_note']['summary']}",
                                 "Summary of the expert review: A calm work. It rewards time."]
    only_review = intent.summarize_intent("  ", "A calm work.")
    assert only_review.artist_note is None and only_review.record()["messages"] == [
        "the artist note is empty: no summary of it"]
    assert only_review.text() == "Summary of the expert review: A calm work."


def test_bad_input():
    with pytest.raises(ValueError, match="both empty: there is nothing to summarise"):
        AtelierIntentSummary().summarize(" \n", "", 2)
    with pytest.raises(ModelFolderError, match="'no_such_summarizer' is not on disk"):
        AtelierIntentSummary().summarize(NOTE, "", 2, summarizer="no_such_summarizer")
    with pytest.raises(ValueError, match="max_sentences must be at least 1"):
        intent.extractive_summary(NOTE, 0)


def test_expert_review_is_a_metadata_field_and_old_files_still_read(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"a.png": {"title": "Tide", "artist_note": "Calm."}}), encoding="utf-8")
    assert read_metadata(old) == {"a.png": Metadata(title="Tide", artist_note="Calm.")}
    new = tmp_path / "new.csv"
    new.write_text("file,title,expert_review\na.png,Tide,\"A quiet, assured work.\"\n", encoding="utf-8")
    assert read_metadata(new)["a.png"].expert_review == "A quiet, assured work."
