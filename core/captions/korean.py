"""Korean grammar the curator's sentences need: particles chosen by the preceding word's final consonant
(batchim), and the connective form of the tone adjectives (따뜻한 -> 따뜻하고)."""
from __future__ import annotations

import re

_HANGUL_FIRST, _HANGUL_LAST = 0xAC00, 0xD7A3
_JONG_COUNT = 28
_JONG_NIEUN, _JONG_BIEUP = 4, 17
# how a final digit or Latin letter is read aloud decides the particle: 1 일, 3 삼, 6 육, 7 칠, 8 팔, 0 영 end in a
# consonant; of the letters, L (엘), M (엠), N (엔) and R (알) do
_CONSONANT_ENDINGS = set("013678lmnr")
# what is skipped to reach the word a particle attaches to: closing quotes, brackets and their contents, spaces
_TRAILING = re.compile(r"(\s*\([^()]*\)|[\s\"'\u201d\u2019\u300d\u300f.,!?%])+$")


def has_batchim(word: str) -> bool:
    """Whether ``word`` ends in a consonant as read aloud: a Hangul syllable's final consonant, or a digit or
    Latin letter read as above; a trailing parenthesis (a year, a share) and closing quotes are skipped."""
    word = _TRAILING.sub("", word)
    if not word:
        return False
    last = word[-1]
    if _HANGUL_FIRST <= ord(last) <= _HANGUL_LAST:
        return (ord(last) - _HANGUL_FIRST) % _JONG_COUNT != 0
    return last.lower() in _CONSONANT_ENDINGS


def josa(word: str, after_consonant: str, after_vowel: str) -> str:
    """``word`` with the particle its ending asks for: ``josa("고양이", "을", "를")`` is ``고양이를``."""
    return word + (after_consonant if has_batchim(word) else after_vowel)


def copula(word: str) -> str:
    """``word`` + 이다 after a consonant, + 다 after a vowel (사람이다, 고양이다)."""
    return josa(word, "이다", "다")


def join(words: list[str]) -> str:
    """``A, B와 C``: the last pair joined by 와/과 chosen by the word before it."""
    if len(words) <= 1:
        return "".join(words)
    return f"{josa(', '.join(words[:-1]), '과', '와')} {words[-1]}"


def connective(adjective: str) -> str:
    """The attributive adjective turned connective: 따뜻한 -> 따뜻하고, 밝은 -> 밝고, 차가운 -> 차갑고 (the ㅂ
    irregular), 대비가 강한 -> 대비가 강하고."""
    last = adjective[-1:]
    if last in ("은", "는"):
        return adjective[:-1] + "고"
    code = ord(last) - _HANGUL_FIRST if last else -1
    if last == "운" and len(adjective) > 1:
        before = ord(adjective[-2]) - _HANGUL_FIRST
        if 0 <= before < _JONG_COUNT * 588 and before % _JONG_COUNT == 0:
            return adjective[:-2] + chr(_HANGUL_FIRST + before + _JONG_BIEUP) + "고"
    if 0 <= code and code % _JONG_COUNT == _JONG_NIEUN:
        return adjective[:-1] + chr(_HANGUL_FIRST + code - _JONG_NIEUN) + "고"
    return adjective + "고"
