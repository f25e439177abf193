"""Tokenisation for the local text generator: word, character or sentencepiece vocabularies from the user's corpus.

Every vocabulary starts with the same four specials (PAD, BOS, EOS, UNK at ids 0..3), so the generator and its
discriminator can rely on them whatever the kind. A tokenizer is saved as one JSON file (a sentencepiece model inside
it, base64), so a trained generator needs nothing else to read and write text.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..shared.output_paths import write_text_atomic

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
KINDS = ("word", "char", "sentencepiece")

# Numbers with decimals or thousands ("3.5", "1,000"); words of letters and digits with inner apostrophes or hyphens
# kept whole ("don't", "well-known", "1990s"); any other visible character is a token of its own.
_WORD = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:['’-][^\W_]+)*|\S")
_NO_SPACE_BEFORE = frozenset(".,!?;:')")
_NO_SPACE_AFTER = frozenset("(")
_CLOSERS = r"""["'”’」』)\]]"""
# Latin marks end a sentence only before whitespace (so "3.5" stays whole); CJK marks end one wherever they stand.
_SENTENCE_END = re.compile(rf"[.!?…．]+{_CLOSERS}*(?=\s|$)|[。！？]+{_CLOSERS}*")


class TokenizerError(ValueError):
    """A corpus, a vocabulary or a tokenizer file that cannot be used, with a message saying why."""


def _sentencepiece() -> Any:
    try:
        import sentencepiece
    except ImportError as error:
        raise TokenizerError("the 'sentencepiece' kind needs the sentencepiece package: pip install sentencepiece") \
            from error
    return sentencepiece


def _split(kind: str, text: str, lowercase: bool) -> list[str]:
    """Word or character pieces of ``text``, as the vocabulary was counted."""
    if kind == "word":
        return _WORD.findall(text.lower() if lowercase else text)
    return list(re.sub(r"\s+", " ", text).strip())


def _join_words(words: list[str]) -> str:
    text, previous = "", ""
    for word in words:
        glued = not text or word in _NO_SPACE_BEFORE or previous in _NO_SPACE_AFTER
        text += word if glued else " " + word
        previous = word
    return text


@dataclass
class Tokenizer:
    kind: str
    vocab: list[str]  # index = id; the four specials first
    sp_model: bytes | None = None  # the trained sentencepiece model (kind "sentencepiece")
    lowercase: bool = False  # word level: the vocabulary was counted lowercased, so text is lowercased to encode
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)
    _sp: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TokenizerError(f"unknown tokenizer kind {self.kind!r}; known: {', '.join(KINDS)}")
        if tuple(self.vocab[:len(SPECIALS)]) != SPECIALS:
            raise TokenizerError(f"a vocabulary must start with {', '.join(SPECIALS)} (ids 0..3)")
        if (self.kind == "sentencepiece") != (self.sp_model is not None):
            raise TokenizerError("a 'sentencepiece' tokenizer needs its sp_model, and no other kind has one")
        self._ids = {token: i for i, token in enumerate(self.vocab)}
        self._sp = None
        if self.sp_model is not None:
            self._sp = _sentencepiece().SentencePieceProcessor(model_proto=self.sp_model)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, pieces missing from the vocabulary as UNK; no BOS or EOS added."""
        if self._sp is not None:
            return self._sp.encode(text)
        return [self._ids.get(piece, UNK_ID) for piece in _split(self.kind, text, self.lowercase)]

    def encode_reporting(self, text: str) -> tuple[list[int], list[str]]:
        """Ids of ``text`` and the pieces that were not in the vocabulary, in order of appearance, each once."""
        ids = self.encode(text)
        if self._sp is not None:
            # sentencepiece gives an unknown piece's own text here (with its word-start mark), not "<unk>"
            pieces = [piece.lstrip("▁") for piece in self._sp.encode(text, out_type=str)]
        else:
            pieces = _split(self.kind, text, self.lowercase)
        unknown = [piece for piece, i in zip(pieces, ids, strict=True) if i == UNK_ID]
        return ids, list(dict.fromkeys(unknown))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` up to the first EOS; PAD and BOS skipped, UNK shown as "<unk>"."""
        kept = []
        for raw in ids:
            i = int(raw)  # numpy and torch integers too
            if not 0 <= i < len(self.vocab):
                raise TokenizerError(f"id {i} is outside the vocabulary (0..{len(self.vocab) - 1})")
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                kept.append(i)
        if self._sp is not None:
            return self._sp.decode(kept)
        tokens = [self.vocab[i] for i in kept]
        return "".join(tokens) if self.kind == "char" else _join_words(tokens)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form; the sentencepiece model as base64."""
        model = base64.b64encode(self.sp_model).decode("ascii") if self.sp_model is not None else None
        return {"kind": self.kind, "vocab": list(self.vocab), "lowercase": self.lowercase, "sp_model": model}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        try:
            model = data.get("sp_model")
            return cls(kind=data["kind"], vocab=list(data["vocab"]), lowercase=bool(data.get("lowercase", False)),
                       sp_model=base64.b64decode(model, validate=True) if model is not None else None)
        except (KeyError, TypeError, AttributeError, binascii.Error) as error:
            raise TokenizerError(f"not a saved tokenizer (needs 'kind' and 'vocab'): {error!r}") from error

    def save(self, path: Path) -> None:
        """Write the tokenizer as JSON; a temporary file renamed into place, so a reader never sees half of it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise TokenizerError(f"tokenizer file {str(path)!r} does not exist") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise TokenizerError(f"tokenizer file {str(path)!r} is not JSON: {error}") from error
        if not isinstance(data, dict):
            raise TokenizerError(f"tokenizer file {str(path)!r} does not hold a tokenizer")
        return cls.from_dict(data)


def _train_sentencepiece(texts: list[str], max_vocab: int) -> Tokenizer:
    spm = _sentencepiece()
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, model_type="unigram", vocab_size=max_vocab,
            hard_vocab_limit=False,  # a small corpus yields fewer pieces than asked for, which is fine
            character_coverage=1.0,  # every character gets a piece: Korean syllables are rare one by one
            pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
            pad_piece=PAD, bos_piece=BOS, eos_piece=EOS, unk_piece=UNK, unk_surface=UNK,
            # sentencepiece silently skips longer sentences; a corpus line may be a whole paragraph
            max_sentence_length=max(4192, *(len(text.encode("utf-8")) for text in texts)),
            num_threads=1, minloglevel=2,  # one thread: the same corpus gives the same model
        )
    except RuntimeError as error:
        needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(error))
        if needed:
            raise TokenizerError(f"max_vocab {max_vocab} is too small for this corpus: sentencepiece needs at least "
                                 f"{needed.group(1)} (a piece for every distinct character, and the 4 specials)") \
                from error
        raise TokenizerError(f"sentencepiece could not learn from this corpus: {error}") from error
    data = model.getvalue()
    processor = spm.SentencePieceProcessor(model_proto=data)
    return Tokenizer("sentencepiece", [processor.id_to_piece(i) for i in range(processor.get_piece_size())], data)


def build_tokenizer(texts: Sequence[str], kind: str = "word", max_vocab: int = 5000, min_count: int = 1,
                    lowercase: bool = True) -> Tokenizer:
    """A tokenizer learnt from ``texts``.

    word: words, numbers and punctuation marks (see ``_WORD``); char: every character of any script, runs of
    whitespace as one space; both keep the ``max_vocab`` most frequent pieces seen at least ``min_count`` times, ties
    broken alphabetically so the same corpus always gives the same vocabulary. sentencepiece: a unigram model of at
    most ``max_vocab`` pieces (``min_count`` does not apply). ``max_vocab`` counts the four specials. ``lowercase``
    applies to words only: characters and sentencepiece pieces keep case, which costs them little.
    """
    if kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; known: {', '.join(KINDS)}")
    if max_vocab <= len(SPECIALS):
        raise TokenizerError(f"max_vocab {max_vocab} is too small: it counts the {len(SPECIALS)} specials, so it "
                             f"must be at least {len(SPECIALS) + 1}")
    texts = [text for text in ([texts] if isinstance(texts, str) else texts) if text.strip()]
    if not texts:
        raise TokenizerError("the corpus is empty: no text to learn a vocabulary from")
    if kind == "sentencepiece":
        return _train_sentencepiece(texts, max_vocab)
    lowercase = lowercase and kind == "word"
    counts = Counter(piece for text in texts for piece in _split(kind, text, lowercase))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = [piece for piece, count in ranked if count >= min_count][:max_vocab - len(SPECIALS)]
    if not kept:
        raise TokenizerError(f"no {kind} occurs at least {min_count} times in the corpus; lower min_count")
    return Tokenizer(kind, [*SPECIALS, *kept], lowercase=lowercase)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, each keeping its closing mark (. ! ? … 。 ！ ？ ．) and any quote or bracket after it.

    A simple rule, not a parser: abbreviations such as "Mr." end a sentence too.
    """
    sentences, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        sentences.append(text[start:end.end()].strip())
        start = end.end()
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence]


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _read_lines(path: Path) -> list[str]:
    try:
        return _lines(path.read_text(encoding="utf-8-sig"))  # -sig: a byte-order mark is dropped, not read as text
    except UnicodeDecodeError as error:
        raise TokenizerError(f"corpus file {str(path)!r} is not UTF-8 text: {error}") from error


def read_corpus(source: str | Path | Sequence[str]) -> list[str]:
    """The corpus as texts, one per non-empty line, whitespace trimmed.

    ``source`` is a text file, a folder (its .txt files in natural order: 2.txt before 10.txt; not sub-folders) or a
    list of strings (each split into lines). A string is a path, never text.
    """
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.is_dir():
            files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".txt"), key=_natural_key)
            if not files:
                raise TokenizerError(f"corpus folder {str(path)!r} holds no .txt file")
            where = f"{len(files)} .txt file(s) in {str(path)!r}"
        elif path.is_file():
            files, where = [path], repr(str(path))
        else:
            raise TokenizerError(f"corpus path {str(path)!r} does not exist")
        texts = [line for file in files for line in _read_lines(file)]
    else:
        texts = [line for item in source for line in _lines(item)]
        where = f"the list of {len(source)} string(s)"
    if not texts:
        raise TokenizerError(f"the corpus is empty: no text in {where} (blank lines are skipped)")
    return texts
