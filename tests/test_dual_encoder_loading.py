"""Image-text encoders of both kinds load alike: OpenAI CLIP, a Korean CLIP and a vision-text dual encoder."""
from __future__ import annotations

import json

import pytest
import torch

from atelier.core.curator import clip_model
from atelier.core.curator.image_index import index_folder
from atelier.core.shared.hf_folders import ModelFolderError

from helpers import (
    synthetic_picture,
    tiny_clip_folder,
    tiny_dual_encoder_folder,
    tiny_korean_clip_folder,
    tiny_wordpiece_tokenizer,
)

KOREAN = ["바닷가 마을의 오래된 집", "고양이가 창밖을 바라본다", "a red house by the sea"]


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    return clip_model.load_clip(tiny_dual_encoder_folder(tmp_path_factory.mktemp("dual")))


def test_dual_encoder_embeds_korean_and_english_texts_and_pictures(dual):
    assert dual.kind == "vision-text-dual-encoder" and dual.dim == 16
    texts = dual.embed_texts(KOREAN)
    assert texts.shape == (3, 16) and torch.allclose(texts.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(texts[0], texts[1])  # Korean words are not all one unknown token
    pictures = dual.embed_images([torch.from_numpy(synthetic_picture(k)) for k in range(2)])
    assert pictures.shape == (2, 16)
    # the same features transformers' own get_text_features gives
    tokens = dual.tokenizer(KOREAN, padding=True, return_tensors="pt")
    with torch.inference_mode():
        reference = torch.nn.functional.normalize(dual.model.get_text_features(**tokens).pooler_output, dim=-1)
    assert torch.allclose(texts, reference, atol=1e-5)


def test_languages_follow_the_text_tower(tmp_path, dual):
    assert dual.languages == ("en", "ko")
    assert clip_model.load_clip(tiny_clip_folder(tmp_path / "openai")).languages == ("en",)
    korean_clip = clip_model.load_clip(tiny_korean_clip_folder(tmp_path / "ko-clip"))
    assert korean_clip.kind == "clip" and korean_clip.languages == ("en", "ko")
    assert korean_clip.embed_texts(KOREAN).shape == (3, 16)


def test_a_declared_language_list_wins_and_a_bad_one_is_refused(tmp_path):
    folder = tiny_dual_encoder_folder(tmp_path / "dual")
    (folder / clip_model.ENCODER_INFO).write_text(json.dumps({"languages": ["ko"]}))
    assert clip_model.load_clip(folder).languages == ("ko",)
    (folder / clip_model.ENCODER_INFO).write_text(json.dumps({"languages": ["xx"]}))
    with pytest.raises(ModelFolderError, match="names no language"):
        clip_model.load_clip(folder)


def test_an_english_only_word_piece_vocabulary_is_english(tmp_path):
    from transformers import BertTokenizer

    tokenizer = tiny_wordpiece_tokenizer(tmp_path / "tok")
    english = BertTokenizer(str(tmp_path / "tok" / "vocab.txt"), do_lower_case=True)  # NFD: syllables fall to jamo
    assert clip_model.text_languages(tmp_path, english, "vision-text-dual-encoder") == ("en",)
    assert clip_model.text_languages(tmp_path, tokenizer, "vision-text-dual-encoder") == ("en", "ko")


def test_a_folder_of_another_kind_is_refused_naming_it(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelFolderError, match=r"'bert' model \(BertModel\), which is neither a CLIP"):
        clip_model.load_clip(tmp_path / "bert")


def test_long_texts_are_truncated_at_the_text_towers_limit(dual):
    assert dual.max_tokens == 32  # the tokenizer's limit, below BERT's 64 positions
    long = " ".join(["고양이가"] * 200)
    assert dual.embed_texts([long]).shape == (1, 16)


def test_index_folder_caches_dual_encoder_embeddings(tmp_path, dual):
    from PIL import Image

    pictures = tmp_path / "그림"
    pictures.mkdir()
    for k in range(3):
        Image.fromarray(synthetic_picture(k)).save(pictures / f"사진_{k}.png")
    first = index_folder(dual, pictures, tmp_path / "cache")
    second = index_folder(dual, pictures, tmp_path / "cache")
    assert (first.encoded, second.encoded, second.cached) == (3, 0, 3)
    assert torch.allclose(first.embeddings, second.embeddings)


def test_a_saved_encoder_loads_back_with_the_same_embeddings(tmp_path, dual):
    saved = clip_model.save_clip(dual, tmp_path / "저장된 인코더")
    again = clip_model.load_clip(saved)
    assert (again.kind, again.languages, again.pixels) == (dual.kind, dual.languages, dual.pixels)
    assert torch.allclose(again.embed_texts(KOREAN), dual.embed_texts(KOREAN), atol=1e-6)
    assert not (tmp_path / ".저장된 인코더.saving").exists()
