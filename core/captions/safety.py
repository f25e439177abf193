"""The keyword safety filter for texts meant for people: no URLs, no e-mail addresses, no blocked words.

Blocked words default to sales talk (a curator's text describes a work; it does not sell it), in
English and Korean. A blocked word is removed with any number or currency figure right beside it;
a hashtag holding one is dropped whole.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

DEFAULT_BLOCKED = ("auction", "auctions", "price", "prices", "priced", "pricing", "for sale", "sale", "sales",
                   "buy", "buying", "sell", "selling", "discount", "bid", "bids", "bidding", "investment",
                   "경매", "가격", "판매", "할인", "구매")
_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+|\b[\w.-]+\.(?:com|net|org|io|kr|co|shop|store)(?:/\S*)?\b",
                  re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_MONEY = r"(?:[$€£¥₩]\s?\d[\d,.]*|\d[\d,.]*\s?(?:[$€£¥₩]|(?:usd|eur|euros?|krw|dollars?|won)\b|원))"


def parse_blocked(text: str) -> list[str]:
    """A comma- or line-separated word list, as a node's input gives it."""
    return [w.strip() for w in re.split(r"[,\n]", text) if w.strip()]


_HASHTAG_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+|[^\W\d_]+")
_SENTENCE = re.compile(r"(?<=[.!?。])\s+|\n+")


def _is_prose(text: str) -> bool:
    """A sentence (words ending in . ! ? or 。) rather than a name or a title."""
    text = text.strip()
    return " " in text and text[-1:] in ".!?。"


class SafetyFilter:
    """Cleans texts: a sentence with a URL, an e-mail address, a price or a blocked word is dropped; a text
    that is not a sentence (a title, a name) loses just the offending words."""

    def __init__(self, blocked: Iterable[str] = DEFAULT_BLOCKED) -> None:
        self.blocked = sorted({w.strip().casefold() for w in blocked if w.strip()}, key=len, reverse=True)
        # English words need word edges ("sale" is not in "salamander"); Korean nouns take particles ("경매는")
        # English words also match their plain inflections (price: prices, priced, pricing)
        parts = [rf"\b{re.escape(w)}(?:s|es|d|ed|ing)?\b" if w.isascii() else re.escape(w) for w in self.blocked]
        parts = [p.replace(r"\ ", r"\s+") for p in parts]
        self._words = re.compile("|".join(parts), re.IGNORECASE) if parts else None
        self._money = re.compile(_MONEY, re.IGNORECASE)

    def _offending(self, text: str) -> list[re.Pattern[str]]:
        patterns = [_EMAIL, _URL, self._money] + ([self._words] if self._words is not None else [])
        return [p for p in patterns if p.search(text)]

    def clean(self, text: str, prose: bool | None = None) -> str:
        """``prose`` True treats the text as sentences even without a full stop (a caption, a quote),
        so an offending one goes whole; None decides from the text."""
        sentences = [s for s in _SENTENCE.split(text.strip()) if s.strip()]
        if prose or (prose is None and (len(sentences) > 1 or _is_prose(text))):
            return " ".join(s.strip() for s in sentences if not self._offending(s))
        for pattern in self._offending(text):
            text = pattern.sub("", text)
        text = re.sub(r"\(\s*\)|\[\s*\]", "", text)
        text = re.sub(r"[ \t]+([,.;:!?])", r"\1", text)
        text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
        return re.sub(r"\s{2,}", " ", text).strip(" ,;:")

    def allows(self, text: str) -> bool:
        """False for a text that holds a URL, an e-mail address, a price or a blocked word."""
        return not self._offending(text)

    def clean_value(self, value: Any) -> Any:
        """Every string inside a JSON-like value cleaned; lists lose items that clean to nothing."""
        if isinstance(value, str):
            return self.clean(value)
        if isinstance(value, list):
            cleaned = [self.clean_value(v) for v in value]
            return [v for v in cleaned if v not in ("", None, [], {})]
        if isinstance(value, dict):
            return {k: self.clean_value(v) for k, v in value.items()}
        return value

    def hashtags(self, tags: Iterable[str]) -> list[str]:
        """Hashtags run words together, so each is split back into its words (#ForSale: 'For Sale',
        #sale2024: 'sale 2024') before the check; #Forbidden stays."""
        return [t for t in tags if self.allows(" ".join(_HASHTAG_WORDS.findall(t)))]
