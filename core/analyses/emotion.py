"""Emotion of a work on the valence-arousal plane, from its picture and from its text, fused (claims 7-13).

The space. Eighteen emotion words, each with a known (valence, arousal) point on the unit circle: the six basic
emotions (happiness, sadness, anger, fear, surprise, disgust) and the seed's twelve-step circle, one step every
30 degrees counter-clockwise from pleasant (angle 0: valence 1, arousal 0), named after Russell's circumplex
(1980): happy 0, delighted 30, excited 60, tense 90, angry 120, frustrated 150, depressed 180, bored 210,
tired 240, calm 270, relaxed 300, content 330. The basic emotions sit where the circumplex puts them (happiness
20, surprise 80, fear 110, anger 130, disgust 165, sadness 205 degrees).

A reading is a probability distribution over the eighteen words. Its point is the probability-weighted mean of
the words' points (inside the unit disc: its distance from the centre says how one-sided the reading is), its
step the one of the twelve nearest that point (at the exact centre, the most probable step), and its basic
emotions the six basic words' probabilities renormalised among themselves.

- Picture: CLIP's image embedding against each word's prompt ensemble (unit text embeddings of the word's
  phrases in every template, averaged and renormalised); softmax over the cosines divided by ``temperature``
  (0.01 is CLIP's own logit scale of 100).
- Text (title, artist's note, expert review): the text tower's embedding of the text against the same prompt
  embeddings and the same softmax; or, with a text-classification model folder, its softmax over its own labels
  (at its own calibration), each label that names one of the words (or a known synonym, such as joy for
  happiness) adding its probability to that word; other labels are ignored and listed with their share, and the
  rest renormalised.
- A text the model's tokenizer (CLIP's or the classifier's) mostly does not know, more than ``UNKNOWN_TOKEN_LIMIT``
  of its word pieces being the unknown token or byte pieces of unknown characters (Korean for an English model),
  is refused rather than guessed at.
- Fusion: p = (w_picture * p_picture + w_text * p_text) / (w_picture + w_text), a convex combination of the two
  distributions, so an emotion found in both is averaged, never added twice: identical readings fuse to the same
  reading, and the fused point is the same convex combination of the two points. Without a text the picture
  alone is the fused reading (and the text alone where the picture's weight is 0).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..shared.hf_folders import WEIGHT_FILES, ModelFolderError, check_files, loading_weights
from ..shared.plots import valence_arousal_circle

DEFAULT_TEMPERATURE = 0.01
UNKNOWN_TOKEN_LIMIT = 0.3  # share of a text's word pieces that may be the unknown token before it is refused
EXAMPLE_CLASSIFIER = "j-hartmann/emotion-english-distilroberta-base"
TEMPLATES = ("a {} picture.", "an artwork that feels {}.", "a work of art with a {} mood.")


@dataclass(frozen=True)
class EmotionWord:
    name: str
    ko: str
    angle: float  # degrees counter-clockwise from pleasant (valence 1, arousal 0)
    phrases: tuple[str, ...]  # what fills the templates
    basic: bool

    @property
    def point(self) -> tuple[float, float]:
        rad = math.radians(self.angle)
        return math.cos(rad), math.sin(rad)


BASIC = (
    EmotionWord("happiness", "행복", 20, ("happy", "joyful"), True),
    EmotionWord("sadness", "슬픔", 205, ("sad", "sorrowful"), True),
    EmotionWord("anger", "분노", 130, ("angry", "furious"), True),
    EmotionWord("fear", "두려움", 110, ("fearful", "frightening"), True),
    EmotionWord("surprise", "놀람", 80, ("surprising", "astonishing"), True),
    EmotionWord("disgust", "혐오", 165, ("disgusting", "repulsive"), True),
)
STEPS = (
    EmotionWord("happy", "행복한", 0, ("happy", "pleased"), False),
    EmotionWord("delighted", "기쁜", 30, ("delighted", "cheerful"), False),
    EmotionWord("excited", "신나는", 60, ("excited", "thrilling"), False),
    EmotionWord("tense", "긴장된", 90, ("tense", "alarmed"), False),
    EmotionWord("angry", "화난", 120, ("angry", "hostile"), False),
    EmotionWord("frustrated", "답답한", 150, ("frustrated", "distressed"), False),
    EmotionWord("depressed", "우울한", 180, ("depressed", "miserable"), False),
    EmotionWord("bored", "지루한", 210, ("bored", "dull"), False),
    EmotionWord("tired", "지친", 240, ("tired", "weary"), False),
    EmotionWord("calm", "차분한", 270, ("calm", "still"), False),
    EmotionWord("relaxed", "편안한", 300, ("relaxed", "serene"), False),
    EmotionWord("content", "만족스러운", 330, ("content", "peaceful"), False),
)
WORDS = BASIC + STEPS
INDEX = {w.name: i for i, w in enumerate(WORDS)}
# classifier labels that name a word in other words (GoEmotions, the emotion dataset and the like)
SYNONYMS = {
    "joy": "happiness", "joyful": "happiness", "amusement": "delighted", "excitement": "excited",
    "sad": "sadness", "grief": "sadness", "sorrow": "sadness", "angry": "anger", "annoyance": "anger",
    "rage": "anger", "fearful": "fear", "afraid": "fear", "nervousness": "tense", "anxiety": "tense",
    "surprised": "surprise", "disgusted": "disgust", "calmness": "calm", "relief": "relaxed",
    "contentment": "content", "boredom": "bored", "depression": "depressed", "frustration": "frustrated",
    "tension": "tense", "tiredness": "tired", "fatigue": "tired",
}


def word_for_label(label: str) -> str | None:
    """The word a classifier label names (case and spaces ignored), or None."""
    key = label.strip().lower().replace(" ", "_")
    return key if key in INDEX else SYNONYMS.get(key)


@dataclass(frozen=True)
class EmotionReading:
    """One source's probabilities over ``WORDS`` and where they put the work on the circle."""

    probabilities: tuple[float, ...]
    source: str  # how it was read
    ignored_labels: tuple[str, ...] = ()  # classifier labels that name no emotion word
    ignored_share: float = 0.0  # their probability before renormalising

    def __post_init__(self) -> None:
        p = self.probabilities
        if len(p) != len(WORDS) or min(p) < 0 or not math.isclose(sum(p), 1.0, abs_tol=1e-6):
            raise ValueError(f"an emotion reading is a probability over the {len(WORDS)} emotion words, got {p}")

    @property
    def point(self) -> tuple[float, float]:
        """(valence, arousal): the probability-weighted mean of the words' points."""
        return (sum(p * w.point[0] for p, w in zip(self.probabilities, WORDS)),
                sum(p * w.point[1] for p, w in zip(self.probabilities, WORDS)))

    @property
    def step(self) -> EmotionWord:
        """The step of the twelve nearest the point; at the exact centre, the most probable step."""
        valence, arousal = self.point
        if math.hypot(valence, arousal) < 1e-9:
            return max(STEPS, key=lambda s: self.probabilities[INDEX[s.name]])
        return min(STEPS, key=lambda s: math.dist(s.point, (valence, arousal)))

    @property
    def basic(self) -> dict[str, float]:
        """The six basic emotions' probabilities renormalised among themselves (all 0 when none has any)."""
        share = sum(self.probabilities[:len(BASIC)])
        return {w.name: (p / share if share > 0 else 0.0) for w, p in zip(BASIC, self.probabilities)}

    def record(self) -> dict[str, Any]:
        valence, arousal = self.point
        out = {"source": self.source, "basic": {k: round(v, 4) for k, v in self.basic.items()},
               "valence": round(valence, 4), "arousal": round(arousal, 4), "step": self.step.name,
               "step_ko": self.step.ko,
               "steps": {w.name: round(self.probabilities[INDEX[w.name]], 4) for w in STEPS}}
        if self.ignored_labels:
            out["ignored_labels"] = list(self.ignored_labels)
            out["ignored_share"] = round(self.ignored_share, 4)
        return out


def softmax_reading(similarity: torch.Tensor, temperature: float, source: str) -> EmotionReading:
    """A reading from one cosine similarity per word: softmax of similarity / temperature (in float64)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be above 0, got {temperature}")
    p = torch.softmax(similarity.double().flatten() / temperature, dim=0)
    return EmotionReading(tuple(float(v) for v in p / p.sum()), source)


def fuse(picture: EmotionReading, text: EmotionReading | None, picture_weight: float,
         text_weight: float) -> tuple[EmotionReading, dict[str, float]]:
    """The convex combination of the readings (weights renormalised over those there are), and those weights."""
    weights = {"picture": picture_weight, "text": text_weight if text is not None else 0.0}
    if min(picture_weight, text_weight) < 0:
        raise ValueError(f"weights must not be negative, got picture {picture_weight}, text {text_weight}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("nothing to fuse: give the picture or the text a weight above 0 (and a text when only the "
                         "text has weight)")
    weights = {k: v / total for k, v in weights.items()}
    readings = [(weights["picture"], picture), (weights["text"], text)]
    p = [sum(w * r.probabilities[i] for w, r in readings if r is not None) for i in range(len(WORDS))]
    fused = EmotionReading(tuple(v / sum(p) for v in p), "fused")
    return fused, weights


def prompt_embeddings(clip: Any) -> torch.Tensor:
    """``[18, D]``: each word's prompt ensemble, unit text embeddings averaged and renormalised."""
    texts = [[t.format(phrase) for phrase in w.phrases for t in TEMPLATES] for w in WORDS]
    flat = clip.embed_texts([t for group in texts for t in group])
    per_word = flat.view(len(WORDS), -1, flat.shape[-1]).mean(1)
    return torch.nn.functional.normalize(per_word, dim=-1)


def read_picture(clip: Any, prompts: torch.Tensor, image: torch.Tensor, temperature: float,
                 embedding: torch.Tensor | None = None) -> EmotionReading:
    """The picture's reading: its CLIP image embedding (``image`` is ``[H, W, 3]`` in 0..1, or its unit
    ``embedding`` already computed, as a folder's are in one batched pass) against ``prompts``."""
    embedding = clip.embed_images(image[None])[0] if embedding is None else embedding
    return softmax_reading(prompts @ embedding, temperature, "picture (CLIP image tower)")


def read_text_clip(clip: Any, prompts: torch.Tensor, text: str, temperature: float) -> EmotionReading:
    """The text's reading from CLIP's text tower (the text cut at the tower's 77 tokens) against ``prompts``."""
    check_readable(clip.tokenizer, text, f"CLIP {clip.name!r}")
    embedding = clip.embed_texts([text])[0]
    return softmax_reading(prompts @ embedding, temperature, "text (CLIP text tower)")


@dataclass
class TextClassifier:
    """A transformers sequence classifier with emotion labels, loaded offline from a folder."""

    model: Any
    tokenizer: Any
    name: str
    words: list[str | None]  # per class index: the emotion word it adds to, or None (ignored)

    @property
    def ignored(self) -> list[str]:
        labels = self.model.config.id2label
        return [labels[i] for i, w in enumerate(self.words) if w is None]


def load_text_classifier(folder: Path, device: torch.device | str = "cpu") -> TextClassifier:
    """Load a text-classification folder (config with ``id2label``, weights, tokenizer) offline; refuse one none
    of whose labels names an emotion word."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not folder.is_dir():
        raise ModelFolderError(f"text classifier folder {str(folder)!r} does not exist: put a transformers "
                               f"text-classification folder there (such as {EXAMPLE_CLASSIFIER})")
    check_files(folder, "text classifier", {"config": ("config.json",), "weights": WEIGHT_FILES,
                                            "tokenizer": ("tokenizer.json", "vocab.txt", "vocab.json",
                                                          "tokenizer_config.json")})
    with loading_weights(folder, "text classifier", EXAMPLE_CLASSIFIER):
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    words = [word_for_label(label) for label in labels]
    if not any(words):
        raise ModelFolderError(f"text classifier {str(folder)!r} has no emotion labels (its labels: "
                               f"{', '.join(labels)}); its id2label must name emotions such as "
                               f"{', '.join(w.name for w in BASIC)}")
    model.to(device).eval().requires_grad_(False)
    return TextClassifier(model, tokenizer, folder.name, words)


def unknown_token_share(tokenizer: Any, text: str) -> float:
    """Share of the text's word pieces (special tokens left out) that the tokenizer does not know: its unknown
    token (WordPiece, SentencePiece), or a byte piece of a character its vocabulary lacks (byte-level BPE, as in
    CLIP and RoBERTa, spells such a character in bytes, each of which decodes to U+FFFD alone)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        return 0.0
    unknown = sum(i == tokenizer.unk_token_id or "\ufffd" in tokenizer.decode([i]) for i in ids)
    return unknown / len(ids)


def check_readable(tokenizer: Any, text: str, model: str, limit: float = UNKNOWN_TOKEN_LIMIT) -> None:
    """Refuse a text that the model's tokenizer mostly does not know, rather than guess its emotion."""
    share = unknown_token_share(tokenizer, text)
    if share > limit:
        raise ValueError(f"{model} cannot read this text: {share:.0%} of its word pieces are unknown to its "
                         f"tokenizer (more than {limit:.0%}), so it is probably in a language the model was not "
                         "trained on. Give the text in a language the model reads (such as an English translation), "
                         "or a model that reads this language")


def read_text_classifier(classifier: TextClassifier, text: str,
                         unknown_limit: float = UNKNOWN_TOKEN_LIMIT) -> EmotionReading:
    """The text's reading from the classifier: its label probabilities gathered onto the words they name."""
    check_readable(classifier.tokenizer, text, f"text classifier {classifier.name!r}", unknown_limit)
    model = classifier.model
    # cut at what the model reads: a tokenizer saved without model_max_length allows any length
    limit = min(classifier.tokenizer.model_max_length, model.config.max_position_embeddings)
    tokens = classifier.tokenizer(text, truncation=True, max_length=limit, return_tensors="pt")
    tokens = tokens.to(next(model.parameters()).device)
    with torch.inference_mode():
        probs = torch.softmax(model(**tokens).logits[0].double(), dim=0).cpu()
    p = [0.0] * len(WORDS)
    for prob, word in zip(probs.tolist(), classifier.words):
        if word is not None:
            p[INDEX[word]] += prob
    known = sum(p)
    if known <= 0:
        raise ValueError(f"text classifier {classifier.name!r} gave its emotion labels no probability for this text")
    return EmotionReading(tuple(v / known for v in p), f"text (classifier {classifier.name})",
                          tuple(classifier.ignored), 1.0 - known)


@dataclass(frozen=True)
class EmotionResult:
    picture: EmotionReading
    text: EmotionReading | None
    fused: EmotionReading
    weights: dict[str, float]  # renormalised over the readings there are
    temperature: float

    @property
    def method(self) -> str:
        sources = [self.picture.source] + ([self.text.source] if self.text else [])
        return (f"{' and '.join(sources)}; CLIP softmax temperature {self.temperature:g}; fused as the weighted "
                "mean of the two probability distributions (a convex combination: an emotion found in both is not "
                "counted twice); (valence, arousal) is the probability-weighted mean of the words' points")

    def record(self) -> dict[str, Any]:
        return {"picture": self.picture.record(),
                "text": self.text.record() if self.text else None, "fused": self.fused.record(),
                "weights": {k: round(v, 4) for k, v in self.weights.items()}, "method": self.method}

    def summary(self) -> str:
        valence, arousal = self.fused.point
        parts = [f"{self.fused.step.name} (valence {valence:.2f}, arousal {arousal:.2f})"]
        parts += [f"{name}: {r.step.name}" for name, r in (("picture", self.picture), ("text", self.text))
                  if r is not None]
        if self.text is None:
            parts.append("no text read: picture only")
        return "; ".join(parts)


def analyse_emotion(clip: Any, image: torch.Tensor, text: str = "", picture_weight: float = 1.0,
                    text_weight: float = 1.0, temperature: float = DEFAULT_TEMPERATURE,
                    classifier: TextClassifier | None = None, prompts: torch.Tensor | None = None,
                    embedding: torch.Tensor | None = None) -> EmotionResult:
    """The emotion of one work: ``image`` ``[H, W, 3]`` in 0..1 and its text (empty, or weighted 0: the picture
    alone, and the text is not read).
    ``prompts`` (from ``prompt_embeddings``) and the picture's unit ``embedding`` may be given to reuse work
    over many works."""
    prompts = prompt_embeddings(clip) if prompts is None else prompts
    text = text.strip() if text_weight > 0 else ""
    if classifier is not None and text:  # the text before the picture: a refusal comes first
        text_reading = read_text_classifier(classifier, text)
    else:
        text_reading = read_text_clip(clip, prompts, text, temperature) if text else None
    picture = read_picture(clip, prompts, image, temperature, embedding)
    fused, weights = fuse(picture, text_reading, picture_weight, text_weight)
    return EmotionResult(picture, text_reading, fused, weights, temperature)


def circle_image(result: EmotionResult) -> Image.Image:
    """The twelve-step circle with the picture's (blue), the text's (orange) and the fused (black) points."""
    points = [("picture", *result.picture.point, (40, 110, 220))]
    if result.text is not None:
        points.append(("text", *result.text.point, (240, 140, 30)))
    points.append(("fused", *result.fused.point, (0, 0, 0)))
    return valence_arousal_circle([(s.name, s.angle) for s in STEPS], points)


def to_json(results: Sequence[EmotionResult]) -> str:
    """One record for one work, a list for several."""
    records = [r.record() for r in results]
    return json.dumps(records[0] if len(records) == 1 else records, ensure_ascii=False, indent=2)
