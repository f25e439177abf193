"""Tokenisation for the text generator: vocabularies, round trips, saved tokenizers, sentences and corpora."""
from __future__ import annotations

from pathlib import Path

import pytest

from atelier.core.story.text_tokens import (
    BOS,
    EOS,
    KINDS,
    PAD,
    UNK,
    Tokenizer,
    TokenizerError,
    build_tokenizer,
    read_corpus,
    split_sentences,
)

ENGLISH = [
    "The sea, at dusk.",
    "A well-known painter didn't sign the canvas!",
    "Is the sea quiet tonight?",
    "Gulls (three of them) circle the harbour; the tide turns.",
    "In 1990 the light was 3.5 times brighter: golden.",
]
KOREAN = [
    "오늘은 바다가 조용하다.",
    "바다가 노래한다!",
    "갈매기 세 마리가 항구 위를 돈다.",
    "오늘 밤 바다는 조용한가?",
]


@pytest.mark.parametrize("kind", KINDS)
def test_specials_take_ids_0_to_3_in_every_kind(kind: str) -> None:
    tokenizer = build_tokenizer(ENGLISH + KOREAN, kind=kind, max_vocab=200)
    assert tokenizer.vocab[:4] == [PAD, BOS, EOS, UNK]
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id) == (0, 1, 2, 3)


def test_word_round_trip_lowercases_and_spaces_punctuation_like_prose() -> None:
    tokenizer = build_tokenizer(ENGLISH)
    for text in ENGLISH:
        assert tokenizer.decode(tokenizer.encode(text)) == text.lower()
    assert "didn't" in tokenizer.vocab and "well-known" in tokenizer.vocab
    assert "3.5" in tokenizer.vocab and "," in tokenizer.vocab


def test_word_level_keeps_case_when_asked() -> None:
    tokenizer = build_tokenizer(ENGLISH, lowercase=False)
    assert tokenizer.decode(tokenizer.encode("The sea, at dusk.")) == "The sea, at dusk."
    assert tokenizer.encode("the")[0] != tokenizer.encode("The")[0]


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_char_and_sentencepiece_round_trip_english_and_korean(kind: str) -> None:
    tokenizer = build_tokenizer(ENGLISH + KOREAN, kind=kind, max_vocab=300)
    for text in ENGLISH + KOREAN:
        ids = tokenizer.encode(text)
        assert tokenizer.unk_id not in ids
        assert tokenizer.decode(ids) == text
    assert tokenizer.decode(tokenizer.encode("오늘은   바다가\t조용하다.")) == "오늘은 바다가 조용하다."


def test_char_vocabulary_holds_korean_syllables_and_one_space() -> None:
    tokenizer = build_tokenizer(KOREAN, kind="char")
    assert {"바", "다", " "} <= set(tokenizer.vocab)
    assert not any(token.isspace() and token != " " for token in tokenizer.vocab)


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_corpus_gives_the_same_vocabulary(kind: str) -> None:
    first = build_tokenizer(ENGLISH + KOREAN, kind=kind, max_vocab=120)
    second = build_tokenizer(ENGLISH + KOREAN, kind=kind, max_vocab=120)
    assert first.vocab == second.vocab


def test_max_vocab_keeps_the_most_frequent_ties_alphabetical() -> None:
    tokenizer = build_tokenizer(["b a c c", "b a c d"], max_vocab=6)
    assert tokenizer.vocab == [PAD, BOS, EOS, UNK, "c", "a"]  # c: 3; a and b: 2, a first; d: 1
    assert len(build_tokenizer(ENGLISH + KOREAN, kind="sentencepiece", max_vocab=80).vocab) <= 80


def test_min_count_drops_rare_words() -> None:
    tokenizer = build_tokenizer(["the sea", "the sky", "the sea"], min_count=2)
    assert tokenizer.vocab[4:] == ["the", "sea"]


def test_unknown_words_map_to_unk_and_are_reported_once_in_order() -> None:
    tokenizer = build_tokenizer(ENGLISH)
    ids, unknown = tokenizer.encode_reporting("The whale and the kraken, the whale again.")
    assert unknown == ["whale", "and", "kraken", "again"]
    assert ids.count(tokenizer.unk_id) == 5
    assert tokenizer.decode(ids) == "the <unk> <unk> the <unk>, the <unk> <unk>."


def test_sentencepiece_reports_unknown_characters() -> None:
    tokenizer = build_tokenizer(KOREAN, kind="sentencepiece", max_vocab=100)
    ids, unknown = tokenizer.encode_reporting("바다 🙂 바다 🙂")
    assert unknown == ["🙂"]
    assert tokenizer.decode(ids) == "바다 <unk> 바다 <unk>"


def test_decode_stops_at_eos_and_skips_pad_and_bos() -> None:
    tokenizer = build_tokenizer(ENGLISH)
    ids = [tokenizer.bos_id, *tokenizer.encode("the sea, at dusk."), tokenizer.eos_id, *tokenizer.encode("gulls")]
    assert tokenizer.decode(ids + [tokenizer.pad_id] * 3) == "the sea, at dusk."
    assert tokenizer.decode(tokenizer.encode("gulls (three) circle; the tide turns!")) == \
        "gulls (three) circle; the tide turns!"


def test_decode_refuses_an_id_outside_the_vocabulary() -> None:
    tokenizer = build_tokenizer(ENGLISH)
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tokenizer.decode([len(tokenizer.vocab)])


@pytest.mark.parametrize("kind", KINDS)
def test_saved_and_loaded_tokenizers_encode_the_same(kind: str, tmp_path: Path) -> None:
    tokenizer = build_tokenizer(ENGLISH + KOREAN, kind=kind, max_vocab=150, lowercase=False)
    path = tmp_path / "models" / "tokenizer.json"
    tokenizer.save(path)
    for copy in (Tokenizer.load(path), Tokenizer.from_dict(tokenizer.to_dict())):
        assert copy == tokenizer
        for text in ENGLISH + KOREAN + ["An unseen whale!"]:
            assert copy.encode_reporting(text) == tokenizer.encode_reporting(text)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temporary file left behind


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"vocab": ["a"]}', encoding="utf-8")
    with pytest.raises(TokenizerError, match="not a saved tokenizer"):
        Tokenizer.load(tmp_path / "bad.json")


@pytest.mark.parametrize("texts", [[], ["", "  \n\t "]])
def test_empty_corpus_is_an_error(texts: list[str]) -> None:
    with pytest.raises(TokenizerError, match="corpus is empty"):
        build_tokenizer(texts)


def test_bad_settings_are_errors() -> None:
    with pytest.raises(TokenizerError, match="unknown tokenizer kind 'bogus'"):
        build_tokenizer(ENGLISH, kind="bogus")
    with pytest.raises(TokenizerError, match="max_vocab 4 is too small"):
        build_tokenizer(ENGLISH, max_vocab=4)
    with pytest.raises(TokenizerError, match="at least 30 times"):
        build_tokenizer(ENGLISH, min_count=30)
    with pytest.raises(TokenizerError, match="sentencepiece needs at least"):
        build_tokenizer(ENGLISH + KOREAN, kind="sentencepiece", max_vocab=10)


def test_split_sentences_english_keeps_marks_and_closing_quotes() -> None:
    text = 'The tide turns!  "Is it night?" she asked. It was 3.5 hours... Then Mr. Lee came'
    assert split_sentences(text) == [
        "The tide turns!", '"Is it night?"', "she asked.", "It was 3.5 hours...", "Then Mr.", "Lee came",
    ]


def test_split_sentences_korean() -> None:
    text = "오늘은 바다가 조용하다. 내일도 조용할까? 모른다"
    assert split_sentences(text) == ["오늘은 바다가 조용하다.", "내일도 조용할까?", "모른다"]
    assert split_sentences("바다。하늘！") == ["바다。", "하늘！"]
    assert split_sentences("   \n ") == []


def test_read_corpus_from_a_file_with_bom_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "captions.txt"
    path.write_bytes("\ufeffThe sea, at dusk.\n\n   \n  바다가 노래한다!  \r\nlast line".encode())
    assert read_corpus(path) == ["The sea, at dusk.", "바다가 노래한다!", "last line"]
    assert read_corpus(str(path)) == read_corpus(path)


def test_read_corpus_from_a_folder_in_natural_order(tmp_path: Path) -> None:
    for name, text in [("10.txt", "ten\n"), ("2.txt", "two a\ntwo b"), ("1.TXT", "one"), ("notes.md", "skip")]:
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "0.txt").write_text("nested", encoding="utf-8")
    assert read_corpus(tmp_path) == ["one", "two a", "two b", "ten"]


def test_read_corpus_from_a_list_splits_lines() -> None:
    assert read_corpus(["first\n\nsecond  ", "  ", "third"]) == ["first", "second", "third"]


def test_read_corpus_errors_say_what_and_where(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="does not exist"):
        read_corpus(tmp_path / "missing.txt")
    (tmp_path / "notes.md").write_text("text", encoding="utf-8")
    with pytest.raises(TokenizerError, match="holds no .txt file"):
        read_corpus(tmp_path)
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="corpus is empty.*blank.txt"):
        read_corpus(tmp_path / "blank.txt")
    with pytest.raises(TokenizerError, match="corpus is empty"):
        read_corpus(["", " \n "])
