"""Emotion analysis: exact maths on fixed scores, the CLIP path on a tiny random CLIP, the classifier path on a
tiny random BERT classifier, the node, and bad input (empty note, unreadable language, missing folder)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from atelier.core.analyses import emotion
from atelier.core.analyses.emotion import INDEX, WORDS, EmotionReading, fuse, softmax_reading
from atelier.core.curator.clip_model import load_clip
from atelier.core.shared.hf_folders import ModelFolderError

from helpers import tiny_clip_folder

CLASSIFIER_LABELS = ["joy", "sadness", "anger", "love", "fear", "surprise"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "sea", "at", "dusk", "is", "quiet", "and", "calm",
         "a", "storm", "of", "red", "anger", "light", "joy"]


def reading(**probs: float) -> EmotionReading:
    p = [0.0] * len(WORDS)
    for name, value in probs.items():
        p[INDEX[name]] = value
    return EmotionReading(tuple(p), "fixed")


def unit(angle: float) -> tuple[float, float]:
    return math.cos(math.radians(angle)), math.sin(math.radians(angle))


# exact maths on fixed scores

def test_twelve_steps_every_30_degrees_with_names_in_both_languages() -> None:
    assert [s.angle for s in emotion.STEPS] == list(range(0, 360, 30))
    assert len({s.name for s in emotion.STEPS}) == len({s.ko for s in emotion.STEPS}) == 12
    assert [w.name for w in emotion.BASIC] == ["happiness", "sadness", "anger", "fear", "surprise", "disgust"]


def test_point_is_the_probability_weighted_mean_and_step_the_nearest() -> None:
    r = reading(calm=1.0)
    assert r.point == pytest.approx((0.0, -1.0), abs=1e-12) and r.step.name == "calm"
    r = reading(happy=0.75, content=0.25)  # 0 and 330 degrees
    expected = (0.75 + 0.25 * math.cos(math.radians(330)), 0.25 * math.sin(math.radians(330)))
    assert r.point == pytest.approx(expected, abs=1e-12)
    assert r.step.name == "happy"  # at about -4.8 degrees: nearer 0 than 330
    r = reading(happy=0.2, content=0.8)  # at about -24 degrees
    assert r.step.name == "content" and r.step.ko == "만족스러운"
    r = reading(anger=0.5, tense=0.5)  # 130 and 90 degrees: the mean lies at 110
    assert math.degrees(math.atan2(r.point[1], r.point[0])) == pytest.approx(110.0)
    assert r.step.name == "angry"  # 110 is 10 from angry (120) and 20 from tense (90)


def test_basic_emotions_are_renormalised_among_themselves() -> None:
    r = reading(happiness=0.3, fear=0.1, calm=0.6)
    assert r.basic == pytest.approx({"happiness": 0.75, "sadness": 0, "anger": 0, "fear": 0.25, "surprise": 0,
                                     "disgust": 0})
    assert set(reading(calm=1.0).basic.values()) == {0.0}
    with pytest.raises(ValueError, match="probability over the 18"):
        EmotionReading((0.5,) * len(WORDS), "fixed")


def test_softmax_reading_uses_the_stated_temperature() -> None:
    similarity = torch.linspace(-0.2, 0.3, len(WORDS))
    r = softmax_reading(similarity, 0.05, "fixed")
    raw = [math.exp(s / 0.05) for s in similarity.double().tolist()]
    assert r.probabilities == pytest.approx([v / sum(raw) for v in raw], rel=1e-9)
    with pytest.raises(ValueError, match="temperature"):
        softmax_reading(similarity, 0.0, "fixed")


def test_fusion_is_a_convex_combination_of_the_distributions() -> None:
    picture, text = reading(content=0.6, happiness=0.4), reading(calm=0.5, sadness=0.5)
    fused, weights = fuse(picture, text, 3.0, 1.0)
    assert weights == {"picture": 0.75, "text": 0.25}
    assert fused.probabilities == pytest.approx([0.75 * a + 0.25 * b for a, b in
                                                 zip(picture.probabilities, text.probabilities)], abs=1e-12)
    assert fused.point == pytest.approx([0.75 * a + 0.25 * b for a, b in zip(picture.point, text.point)], abs=1e-12)


def test_emotion_in_both_sources_is_not_counted_twice() -> None:
    same = reading(tense=0.7, fear=0.2, calm=0.1)
    for weights in ((1.0, 1.0), (5.0, 0.5)):
        fused, _ = fuse(same, same, *weights)
        assert fused.probabilities == pytest.approx(same.probabilities, abs=1e-12)
        assert fused.point == pytest.approx(same.point, abs=1e-12)


def test_one_sided_fusion() -> None:
    picture, text = reading(excited=1.0), reading(bored=1.0)
    fused, weights = fuse(picture, None, 1.0, 2.0)  # no text: the picture alone, whatever the text's weight
    assert weights == {"picture": 1.0, "text": 0.0} and fused.probabilities == picture.probabilities
    fused, weights = fuse(picture, text, 0.0, 2.0)
    assert weights == {"picture": 0.0, "text": 1.0} and fused.probabilities == text.probabilities
    with pytest.raises(ValueError, match="nothing to fuse"):
        fuse(picture, None, 0.0, 1.0)
    with pytest.raises(ValueError, match="negative"):
        fuse(picture, text, -1.0, 1.0)


def test_classifier_labels_name_words_or_are_ignored() -> None:
    assert [emotion.word_for_label(x) for x in ("Joy", "sadness", "love", "neutral", "calm", "nervousness")] == \
        ["happiness", "sadness", None, None, "calm", "tense"]


# the CLIP path

@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_clip(tiny_clip_folder(tmp_path_factory.mktemp("clip") / "tiny"), "cpu")


@pytest.fixture(scope="module")
def picture() -> torch.Tensor:
    return torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(3))


def test_clip_picture_and_text_readings(clip: Any, picture: torch.Tensor) -> None:
    prompts = emotion.prompt_embeddings(clip)
    assert prompts.shape == (len(WORDS), clip.dim)
    assert prompts.norm(dim=-1) == pytest.approx(torch.ones(len(WORDS)), abs=1e-5)
    result = emotion.analyse_emotion(clip, picture, "The sea at dusk is quiet and calm.", 1.0, 3.0, 0.02)
    by_hand = torch.softmax((prompts @ clip.embed_images(picture[None])[0]).double() / 0.02, 0)
    assert result.picture.probabilities == pytest.approx(by_hand.tolist(), abs=1e-6)
    by_hand = torch.softmax((prompts @ clip.embed_texts(["The sea at dusk is quiet and calm."])[0]).double() / 0.02, 0)
    assert result.text.probabilities == pytest.approx(by_hand.tolist(), abs=1e-6)
    assert result.fused.point == pytest.approx([0.25 * a + 0.75 * b for a, b in
                                                zip(result.picture.point, result.text.point)], abs=1e-9)
    record = json.loads(emotion.to_json([result]))
    assert set(record) == {"picture", "text", "fused", "weights", "method"}
    assert record["weights"] == {"picture": 0.25, "text": 0.75}
    assert set(record["fused"]) >= {"basic", "valence", "arousal", "step", "step_ko"}
    assert "temperature 0.02" in record["method"] and "CLIP text tower" in record["method"]
    assert result.summary().startswith(f"{result.fused.step.name} (valence ")


def test_empty_note_reads_the_picture_alone(clip: Any, picture: torch.Tensor) -> None:
    result = emotion.analyse_emotion(clip, picture, "  \n ", 1.0, 1.0)
    assert result.text is None and result.fused.probabilities == result.picture.probabilities
    assert json.loads(emotion.to_json([result]))["text"] is None
    assert "no text read: picture only" in result.summary()
    # weighted 0, a text is neither read nor refused
    ignored = emotion.analyse_emotion(clip, picture, "해질녘 바다는 고요하다", 1.0, 0.0)
    assert ignored.text is None and ignored.fused.probabilities == result.picture.probabilities


def test_clip_refuses_a_text_its_tokenizer_spells_in_bytes(clip: Any, picture: torch.Tensor) -> None:
    # OpenAI CLIP's byte-level BPE has no unknown token: Hangul it lacks is spelled in bytes that decode to U+FFFD
    korean = "해질녘 바다는 고요하고 차분하다"
    assert emotion.unknown_token_share(clip.tokenizer, korean) == pytest.approx(25 / 28)
    assert emotion.unknown_token_share(clip.tokenizer, "café naïve résumé") == 0.0  # accents are in its vocabulary
    with pytest.raises(ValueError, match=r"CLIP 'tiny' cannot read this text: 89% .*English translation"):
        emotion.analyse_emotion(clip, picture, korean)
    titled = "바다 (The Sea). The sea at dusk is quiet and calm, the light fading over the water."
    assert 0.1 < emotion.unknown_token_share(clip.tokenizer, titled) < emotion.UNKNOWN_TOKEN_LIMIT
    assert emotion.analyse_emotion(clip, picture, titled).text is not None  # a Korean title in an English note


def test_circle_plot(clip: Any, picture: torch.Tensor) -> None:
    result = emotion.analyse_emotion(clip, picture, "a storm of red anger")
    img = emotion.circle_image(result)
    assert img.size == (480, 480)
    pixels = np.asarray(img)
    valence, arousal = result.fused.point
    x, y = round(240 + valence * 480 * 0.33), round(240 - arousal * 480 * 0.33)
    assert pixels[y, x].tolist() == [0, 0, 0]  # the fused point, drawn last
    assert pixels[15, 15].tolist() == [40, 110, 220] and pixels[31, 15].tolist() == [240, 140, 30]  # the legend
    assert (pixels < 250).any(axis=-1).mean() > 0.01  # circle and step names


# the classifier path

def tiny_classifier_folder(root: Path, labels: list[str] = CLASSIFIER_LABELS) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    root.mkdir(parents=True)
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=64, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})
    BertForSequenceClassification(config).save_pretrained(root)
    BertTokenizer(str(root / "vocab.txt")).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    tiny_classifier_folder(root / "atelier" / "text_classifiers" / "tiny-emotion")
    return root


def test_classifier_reading_gathers_its_labels_onto_the_words(models_root: Path) -> None:
    folder = models_root / "atelier" / "text_classifiers" / "tiny-emotion"
    classifier = emotion.load_text_classifier(folder)
    text = "the sea at dusk is quiet and calm"
    r = emotion.read_text_classifier(classifier, text)
    tokens = classifier.tokenizer(text, return_tensors="pt")
    probs = torch.softmax(classifier.model(**tokens).logits[0].double(), 0).tolist()
    known = 1.0 - probs[3]  # "love" names no emotion word
    assert r.ignored_labels == ("love",) and r.ignored_share == pytest.approx(probs[3])
    for label, word in (("joy", "happiness"), ("sadness", "sadness"), ("anger", "anger"), ("fear", "fear"),
                        ("surprise", "surprise")):
        assert r.probabilities[INDEX[word]] == pytest.approx(probs[CLASSIFIER_LABELS.index(label)] / known)
    assert r.record()["ignored_labels"] == ["love"]
    long = emotion.read_text_classifier(classifier, " ".join([text] * 20))  # 160 words: cut at its 64 positions
    assert sum(long.probabilities) == pytest.approx(1.0)


def test_classifier_refuses_a_text_it_cannot_read(models_root: Path) -> None:
    classifier = emotion.load_text_classifier(models_root / "atelier" / "text_classifiers" / "tiny-emotion")
    korean = "해질녘 바다는 고요하고 차분하다"
    assert emotion.unknown_token_share(classifier.tokenizer, korean) == 1.0
    assert emotion.unknown_token_share(classifier.tokenizer, "the sea is calm") == 0.0
    with pytest.raises(ValueError, match=r"cannot read this text: 100% .*more than 30%"):
        emotion.read_text_classifier(classifier, korean)
    # a few unknown words in an English text are read
    assert emotion.unknown_token_share(classifier.tokenizer, "the sea is calm 바다") == pytest.approx(0.2)
    emotion.read_text_classifier(classifier, "the sea is calm 바다")


def test_classifier_folder_without_emotion_labels_or_missing(tmp_path: Path) -> None:
    folder = tiny_classifier_folder(tmp_path / "topics", ["sports", "politics"])
    with pytest.raises(ModelFolderError, match="no emotion labels .*sports, politics"):
        emotion.load_text_classifier(folder)
    with pytest.raises(ModelFolderError, match="nowhere"):
        emotion.load_text_classifier(tmp_path / "nowhere")


# the node

def test_node_with_and_without_a_classifier(models_root: Path, clip: Any, picture: torch.Tensor,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier.nodes.analyses import NODE_CLASS_MAPPINGS, AtelierEmotionAnalysis

    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_root))
    assert NODE_CLASS_MAPPINGS["AtelierEmotionAnalysis"] is AtelierEmotionAnalysis
    choices = AtelierEmotionAnalysis.INPUT_TYPES()["optional"]["classifier"][0]
    assert choices == ["(none)", "tiny-emotion"]
    node = AtelierEmotionAnalysis()
    images = torch.stack([picture, picture.flip(0)])
    text_json, circles, summary = node.analyse(clip, images, "the sea at dusk is quiet and calm", 1.0, 1.0, 0.01,
                                               "tiny-emotion")
    records = json.loads(text_json)
    assert len(records) == 2 and records[0]["text"]["source"] == "text (classifier tiny-emotion)"
    assert circles.shape == (2, 480, 480, 3) and len(summary.splitlines()) == 2
    one, _, summary = node.analyse(clip, images[:1], "", 1.0, 1.0, 0.01)
    assert json.loads(one)["text"] is None and summary.endswith("no text read: picture only")
    with pytest.raises(ValueError, match="cannot read this text"):
        node.analyse(clip, images[:1], "해질녘 바다는 고요하다", 1.0, 1.0, 0.01, "tiny-emotion")
    with pytest.raises(ValueError, match="CLIP 'tiny' cannot read this text"):
        node.analyse(clip, images[:1], "해질녘 바다는 고요하다", 1.0, 1.0, 0.01, "(none)")
    english, _, _ = node.analyse(clip, images[:1], "The sea at dusk is quiet.", 1.0, 1.0, 0.01, "tiny-emotion")
    assert json.loads(english)["text"]["step"] in {s.name for s in emotion.STEPS}  # as the error says: translated
    with pytest.raises(ModelFolderError, match=r"'gone'.*text_classifiers"):
        node.analyse(clip, images[:1], "calm", 1.0, 1.0, 0.01, "gone")
