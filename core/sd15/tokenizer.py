"""SD 1.x's CLIP tokenizer built from the BPE vocabulary shipped in ``configs/sd15``: no hub access.

The vocabulary is the one OpenAI's CLIP (and open_clip) ship; vocab and merges are laid out as
transformers' ``CLIPTokenizer`` (and ComfyUI's ``sd1_tokenizer``) expect them.
"""
from __future__ import annotations

import gzip
import json
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

BPE_FILE = Path(__file__).resolve().parents[2] / "configs" / "sd15" / "clip_bpe_simple_vocab_16e6.txt.gz"
_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges of the file
MAX_LENGTH = 77


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, which CLIP's BPE is written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


@lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    merges = gzip.decompress(BPE_FILE.read_bytes()).decode("utf-8").split("\n")[1:_MERGES + 1]
    tokens = list(_bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def sd15_tokenizer() -> Any:
    """A transformers ``CLIPTokenizer`` equal to SD 1.5's (77 tokens, padded with end-of-text)."""
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges()
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>", "model_max_length": MAX_LENGTH}
    try:  # transformers 5 builds from the tables themselves
        return CLIPTokenizer(vocab=vocab, merges=merges, **special)
    except TypeError:  # transformers 4 reads files
        with tempfile.TemporaryDirectory() as tmp:
            vocab_file, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
            vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
            merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
            return CLIPTokenizer(str(vocab_file), str(merges_file), **special)
