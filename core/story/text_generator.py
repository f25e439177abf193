"""A trained SeqGAN generator with its tokeniser: save, load, write lines, continue a story.

A model is one file, ``<name>.safetensors``: the generator's weights (and the discriminator's when kept for
further training), with the model configuration and the vocabulary in its metadata. Models saved before
(``atelier-seqgan-v1``) were two files, the weights and ``<name>.json``; they still load. A model conditioned on a
work's features or trained with the LSTM discriminator is written as ``atelier-seqgan-v3`` (its configuration holds
``cond_dim`` and ``discriminator``); every other model is written as before, as ``atelier-seqgan-v2``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..shared.state_dicts import check_complete, load_exactly, read_weights, save_new_file
from .seqgan_model import Generator, SeqGANConfig
from .text_tokens import Tokenizer, split_sentences

FORMAT = "atelier-seqgan-v2"  # one file
FORMAT_EXTENDED = "atelier-seqgan-v3"  # one file, with the conditioning fields in its configuration
FORMAT_TWO_FILES = "atelier-seqgan-v1"  # weights + <name>.json, still read
ATTEMPTS = 4  # samples tried for a story's next sentence before it is left as "…"


def sequences_from_corpus(tokenizer: Tokenizer, lines: Sequence[str], max_len: int) -> torch.Tensor:
    """Token ids ``[N, max_len]``: each line encoded, cut to ``max_len - 1`` tokens, ended with EOS, padded."""
    return encode_corpus(tokenizer, lines, max_len)[0]


def encode_corpus(tokenizer: Tokenizer, lines: Sequence[str], max_len: int) -> tuple[torch.Tensor, list[int]]:
    """``sequences_from_corpus``, with the indices of the lines kept (a line with no token is left out), so
    what belongs to each line (a work's features) stays beside it."""
    rows, kept = [], []
    for index, line in enumerate(lines):
        ids = tokenizer.encode(line)[: max_len - 1]
        if ids:
            rows.append(ids + [tokenizer.eos_id] + [tokenizer.pad_id] * (max_len - 1 - len(ids)))
            kept.append(index)
    if not rows:
        raise ValueError("the corpus has no line with a known token")
    return torch.tensor(rows, dtype=torch.long), kept


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    max_len: int = 0  # 0: the model's length
    seed: int = 0

    def check(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be above 0, got {self.temperature}")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need top_k >= 0 and 0 < top_p <= 1, got {self.top_k} and {self.top_p}")
        if self.max_len < 0:
            raise ValueError(f"max_len must be 0 (the model's length) or more, got {self.max_len}")


@dataclass
class Generated:
    texts: list[str]
    notes: list[str] = field(default_factory=list)  # what the user should know (unknown words replaced, ...)


@dataclass
class TextGenerator:
    generator: Generator
    tokenizer: Tokenizer
    name: str = "seqgan"

    @property
    def config(self) -> SeqGANConfig:
        return self.generator.config

    def _sample(self, count: int, options: SamplingOptions, prefix: list[int] | None,
                 condition: Sequence[Sequence[float]] | None = None) -> torch.Tensor:
        options.check()
        length = options.max_len or self.config.max_len
        gen = torch.Generator(device=next(self.generator.parameters()).device).manual_seed(options.seed)
        prefix_ids = None if not prefix else torch.tensor(prefix, dtype=torch.long)
        rows = None if condition is None else torch.tensor(condition, dtype=torch.float32).reshape(-1,
                                                                                                  self.config.cond_dim)
        if rows is not None and rows.shape[0] == 1:
            rows = rows.expand(count, -1)
        self.generator.eval()
        return self.generator.sample(count, gen, options.temperature, options.top_k, options.top_p, prefix_ids,
                                     length, rows)

    def _prefix_ids(self, prefix: str, notes: list[str]) -> list[int]:
        if not prefix.strip():
            return []
        ids, unknown = self.tokenizer.encode_reporting(prefix)
        note = (f"not in the vocabulary, written as {self.tokenizer.vocab[self.tokenizer.unk_id]}: "
                + ", ".join(unknown))
        if unknown and note not in notes:
            notes.append(note)
        return ids

    def generate(self, count: int, options: SamplingOptions = SamplingOptions(), prefix: str = "",
                 stop_at_sentence_end: bool = False, condition: Sequence[Sequence[float]] | None = None) -> Generated:
        """``count`` texts, each starting with ``prefix`` (words outside the vocabulary become the unknown
        token, and a note says which); optionally cut after the first sentence the generator ends. A conditioned
        model needs ``condition``: one work's features for every text, or one row per text."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        notes: list[str] = []
        ids = self._prefix_ids(prefix, notes)
        length = options.max_len or self.config.max_len
        if len(ids) >= length:
            raise ValueError(f"the prefix has {len(ids)} tokens, as many as the length asked ({length}): raise max_len")
        texts = []
        for row in self._sample(count, options, ids, condition):
            new = self.tokenizer.decode(row[len(ids):].tolist())
            if stop_at_sentence_end:
                new = (split_sentences(new) or [new])[0]
            texts.append(" ".join(t for t in (prefix.strip(), new) if t))
        return Generated(texts, notes)

    def continue_story(self, first: str, sentences: int, options: SamplingOptions = SamplingOptions()) -> Generated:
        """The first sentence and ``sentences - 1`` more, one per line (one panel each). Each new sentence is
        sampled after the previous one (its last tokens prime the generator), so a corpus of multi-sentence
        stories gives connected lines; where the generator ends its text there, a fresh sentence is begun."""
        if sentences < 1:
            raise ValueError(f"sentences must be at least 1, got {sentences}")
        if not first.strip():
            raise ValueError("the first sentence is empty")
        notes: list[str] = []
        lines = [first.strip()]
        length = options.max_len or self.config.max_len
        context = self._prefix_ids(lines[0], notes)[-(length // 2):]
        for index in range(1, sentences):
            sentence = ""
            for attempt in range(ATTEMPTS):  # where the generator ends the text at once, begin a fresh one
                seeded = SamplingOptions(options.temperature, options.top_k, options.top_p, length,
                                         options.seed + index + attempt * sentences)
                primed = context if attempt == 0 else []
                new_ids = self._sample(1, seeded, primed)[0, len(primed):].tolist()
                sentence = (split_sentences(self.tokenizer.decode(new_ids)) or [""])[0]
                if sentence:
                    break
            if sentence:  # the sampled tokens themselves prime the next sentence (decoded text may not re-encode)
                eos = self.tokenizer.eos_id  # padding only ever follows it
                ended = new_ids[: new_ids.index(eos)] if eos in new_ids else new_ids
                context = ended[-(length // 2):]
            lines.append(sentence or "…")
        return Generated(lines, notes)

    def save(self, folder: Path, name: str, discriminator: torch.nn.Module | None = None) -> Path:
        """One file, ``folder/<name>.safetensors`` (``<name>_2``... when the name is taken, as every trainer
        does): the weights, with the configuration and vocabulary in its metadata, so the two can never be
        mismatched. Returns the file written."""
        tensors = {f"generator.{k}": v.detach().cpu().contiguous() for k, v in self.generator.state_dict().items()}
        if discriminator is not None:
            tensors.update({f"discriminator.{k}": v.detach().cpu().contiguous()
                            for k, v in discriminator.state_dict().items()})
        metadata = {"format": FORMAT_EXTENDED if self.config.extended else FORMAT, "config": self.config.to_dict(),
                    "tokenizer": self.tokenizer.to_dict()}
        path = save_new_file(folder, name, tensors, metadata, "model name")
        self.name = path.stem
        return path


def load_text_generator(weights: Path, device: torch.device | str = "cpu") -> TextGenerator:
    """A model saved by ``TextGenerator.save``: one ``.safetensors`` file, or (models saved before
    ``atelier-seqgan-v2``) the ``.safetensors`` file with the ``.json`` of its configuration beside it."""
    from safetensors import safe_open

    if not weights.is_file():
        raise FileNotFoundError(f"no text model {str(weights)!r}")
    check_complete(weights, "text model")
    try:
        with safe_open(str(weights), "pt") as handle:
            meta = handle.metadata() or {}
    except Exception as exc:  # a damaged or foreign file
        raise ValueError(f"cannot read text model {str(weights)!r}: {exc}") from exc
    if meta.get("format") in (FORMAT, FORMAT_EXTENDED):
        description = {key: _json_object(meta.get(key, ""), f"{str(weights)!r} ({key})") for key in ("config",
                                                                                                   "tokenizer")}
    elif meta.get("format") == FORMAT_TWO_FILES:
        description = _two_file_description(weights)
    else:
        raise ValueError(f"{str(weights)!r} is not an Atelier text model (train one with Atelier Train Text "
                         "Generator or text-train)")
    try:
        config = SeqGANConfig.from_dict(description["config"])
        tokenizer = Tokenizer.from_dict(description["tokenizer"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"text model {str(weights)!r} has a damaged configuration or vocabulary ({exc!r}): train "
                         "it again, or copy it again from where it was made") from exc
    generator = Generator(config)
    tensors = read_weights(weights, "text model")
    state = {k.removeprefix("generator."): v for k, v in tensors.items() if k.startswith("generator.")}
    load_exactly(generator, state, weights)
    return TextGenerator(generator.to(device).eval(), tokenizer, weights.stem)


def _json_object(text: str, what: str) -> dict:
    """``text`` parsed as a JSON object, else a ValueError naming ``what`` (a damaged or hand-edited file)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON ({exc}): train the model again, or copy it again") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} holds a JSON {type(value).__name__}, not an object: train the model again, or "
                         "copy it again")
    return value


def _two_file_description(weights: Path) -> dict[str, object]:
    """The configuration and vocabulary of an older model, kept in ``<name>.json`` beside its weights."""
    description_file = weights.with_suffix(".json")
    if not description_file.is_file():
        raise FileNotFoundError(f"{weights.name} is an older text model, saved with {description_file.name} beside "
                                f"it, which is missing in {str(weights.parent)!r}: put it back, or train again")
    description = _json_object(description_file.read_text(encoding="utf-8"), repr(str(description_file)))
    if description.get("format") != FORMAT_TWO_FILES or not all(isinstance(description.get(key), dict)
                                                               for key in ("config", "tokenizer")):
        raise ValueError(f"{str(description_file)!r} is not an Atelier SeqGAN model ({FORMAT_TWO_FILES})")
    return description
