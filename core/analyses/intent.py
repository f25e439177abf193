"""Intent: summaries of the artist's note and of the expert review.

Abstractive where the user gives a transformers seq2seq model folder (BART, T5, ...; loaded offline), else
extractive: the text's most central sentences, kept whole and in their order, so an extractive summary never holds
a word the text does not. Centrality is a sentence's mean cosine similarity to the other sentences, over CLIP text
embeddings when a CLIP is given (long sentences embedded in chunks that fit its 77-token window, then averaged), else
over TF-IDF vectors of character n-grams (these match Korean words whatever particle is attached, with no
morphological analyser). Every summary is labelled as one wherever it is shown.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..shared.hf_folders import WEIGHT_FILES, check_files, loading_weights

DEFAULT_SUMMARIZER = "facebook/bart-large-cnn"
EXTRACTIVE = "(extractive)"
LABELS = {"artist_note": "Summary of the artist's note", "expert_review": "Summary of the expert review"}
# a sentence ends at . ! ? or their full-width forms (Korean 다. / 요. included) before a space, a quote or a
# Hangul syllable, or at a line break
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])[\"'\u201d\u2019)]*\s+|(?<=[.!?。！？])(?=[\uac00-\ud7a3])|\n+")


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` as written (whitespace inside each collapsed), in English or Korean."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        # closing quotes and brackets stay with the sentence they close
        end = match.start() + len(match.group(0).rstrip())
        pieces.append(text[start:end])
        start = match.end()
    pieces.append(text[start:])
    return [p for p in (" ".join(piece.split()) for piece in pieces) if p]


@dataclass(frozen=True)
class Summary:
    """One text's summary: ``method`` is ``extractive-tfidf``, ``extractive-clip`` or ``abstractive``;
    ``sentences`` the indices of the text's sentences kept (extractive) or empty (abstractive)."""
    summary: str
    method: str
    sentences: tuple[int, ...]
    source_sentences: int
    model: str = ""

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": self.summary, "method": self.method, "sentences": list(self.sentences),
                               "source_sentences": self.source_sentences}
        if self.model:
            out["model"] = self.model
        return out


@dataclass(frozen=True)
class IntentSummary:
    """The artist's note and the expert review summarised; ``None`` where that text was empty (said in
    ``messages``)."""
    artist_note: Summary | None
    expert_review: Summary | None
    messages: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        return {"artist_note": self.artist_note.record() if self.artist_note else None,
                "expert_review": self.expert_review.record() if self.expert_review else None,
                "messages": list(self.messages)}

    def text(self) -> str:
        """Each summary on its own line, labelled as a summary."""
        return "\n".join(f"{LABELS[name]}: {part.summary}" for name, part in
                         (("artist_note", self.artist_note), ("expert_review", self.expert_review)) if part)


def centrality(vectors: np.ndarray) -> np.ndarray:
    """Each row's mean cosine similarity to the other rows (0 for a lone row)."""
    n = len(vectors)
    if n < 2:
        return np.zeros(n)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    similarity = unit @ unit.T
    return (similarity.sum(axis=1) - np.diag(similarity)) / (n - 1)


def tfidf_vectors(sentences: list[str]) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=True).fit_transform(sentences).toarray()


def clip_vectors(clip: Any, sentences: list[str]) -> np.ndarray:
    """CLIP text embeddings of ``sentences``; one longer than the text tower's window (CLIP's 77 tokens, a dual
    encoder's BERT its tokenizer's limit, each with its start and end tokens) is cut at word boundaries into chunks
    that fit, and its chunks' embeddings averaged, rather than silently truncated."""
    limit = clip.max_tokens - 2
    chunks, owner = [], []
    for index, sentence in enumerate(sentences):
        current: list[str] = []
        for word in sentence.split():
            trial = " ".join([*current, word])
            if current and len(clip.tokenizer(trial, add_special_tokens=False)["input_ids"]) > limit:
                chunks.append(" ".join(current))
                owner.append(index)
                current = [word]
            else:
                current.append(word)
        chunks.append(" ".join(current))  # a single word past the window is truncated by embed_texts
        owner.append(index)
    embeds = clip.embed_texts(chunks).numpy()
    owners = np.array(owner)
    return np.stack([embeds[owners == i].mean(axis=0) for i in range(len(sentences))])


def extractive_summary(text: str, max_sentences: int, clip: Any | None = None) -> Summary:
    """The ``max_sentences`` most central sentences of ``text``, whole and in their order (ties go to the
    earlier sentence)."""
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be at least 1, got {max_sentences}")
    sentences = split_sentences(text)
    method = "extractive-clip" if clip is not None else "extractive-tfidf"
    if len(sentences) <= max_sentences:
        keep = list(range(len(sentences)))
    else:
        scores = centrality(clip_vectors(clip, sentences) if clip is not None else tfidf_vectors(sentences))
        order = sorted(range(len(sentences)), key=lambda i: (-round(float(scores[i]), 9), i))
        keep = sorted(order[:max_sentences])
    return Summary(" ".join(sentences[i] for i in keep), method, tuple(keep), len(sentences))


@dataclass
class Summarizer:
    """A transformers seq2seq model (``AutoModelForSeq2SeqLM``) with its tokenizer."""
    model: Any
    tokenizer: Any
    name: str
    prefix: str = ""  # T5 reads "summarize: " before the text

    def summarize(self, text: str, max_new_tokens: int = 96) -> Summary:
        import torch

        limit = min(int(getattr(self.tokenizer, "model_max_length", 1024) or 1024), 1024)
        tokens = self.tokenizer(self.prefix + " ".join(text.split()), truncation=True, max_length=limit,
                                return_tensors="pt")
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model.generate(**{k: v.to(device) for k, v in tokens.items()}, max_new_tokens=max_new_tokens,
                                      num_beams=1, do_sample=False)
        summary = " ".join(self.tokenizer.decode(out[0], skip_special_tokens=True).split())
        return Summary(summary, "abstractive", (), len(split_sentences(text)), self.name)


def load_summarizer(folder: Path, device: str = "cpu") -> Summarizer:
    """A seq2seq summariser folder (``config.json``, weights, tokenizer files), loaded offline."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    check_files(folder, "summarizer", {"config": ("config.json",), "weights": WEIGHT_FILES,
                                       "tokenizer": ("tokenizer.json", "tokenizer_config.json", "spiece.model",
                                                     "vocab.json")})
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if not getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"summarizer folder {str(folder)!r} holds a {config.model_type!r} model, which is not a "
                         "sequence-to-sequence model (such as BART or T5); choose a summarisation model folder")
    with loading_weights(folder, "summarizer", DEFAULT_SUMMARIZER):
        model = AutoModelForSeq2SeqLM.from_pretrained(str(folder), local_files_only=True)
    model.to(device).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    prefix = ((getattr(config, "task_specific_params", None) or {}).get("summarization", {}) or {}).get("prefix", "")
    return Summarizer(model, tokenizer, folder.name, prefix)


def summarize_intent(artist_note: str, expert_review: str = "", max_sentences: int = 2,
                     summarizer: Summarizer | None = None, clip: Any | None = None) -> IntentSummary:
    """Summaries of the artist's note and the expert review: with ``summarizer`` abstractive, else extractive
    (``clip`` embeds the sentences where given). An empty text gets no summary and a message saying so; both
    empty is an error."""
    texts = {"artist_note": artist_note.strip(), "expert_review": expert_review.strip()}
    if not any(texts.values()):
        raise ValueError("the artist's note and the expert review are both empty: there is nothing to summarise. "
                         "Write the artist's note (or the expert review) into the node, or the metadata file's "
                         "artist_note / expert_review fields")
    out: dict[str, Summary | None] = {}
    messages = []
    for name, text in texts.items():
        if not text:
            out[name] = None
            messages.append(f"the {name.replace('_', ' ')} is empty: no summary of it")
        elif summarizer is not None:
            out[name] = summarizer.summarize(text)
        else:
            out[name] = extractive_summary(text, max_sentences, clip)
    return IntentSummary(out["artist_note"], out["expert_review"], tuple(messages))
