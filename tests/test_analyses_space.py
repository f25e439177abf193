"""Space from the text on a tiny random CLIP: the ranking against a hand computation, sentences averaged, the
picture's zero-shot scores beside it, the node, and an empty text or a missing group."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from atelier.core.analyses.space import sentences, space_from_text
from atelier.core.curator.clip_model import ClipModel, load_clip
from atelier.core.curator.taxonomy import TaxonomyError, load_taxonomy, parse_taxonomy
from atelier.core.curator.zero_shot import build_label_bank, label_embeddings
from atelier.nodes.analyses import AtelierSpaceFromText

from helpers import tiny_clip_folder

# one template holding the prompt alone, one prompt per label: each space's embedding is its prompt's
ROOMS = """\
name: rooms
templates: ["{}"]
groups:
  room:
    mode: exclusive
    labels:
      cafe: {display: {en: cafe, ko: 카페}, prompts: [a busy coffee shop]}
      office: {display: {en: office, ko: 사무실}, prompts: [a quiet office with desks]}
      bedroom: {display: {en: bedroom, ko: 침실}, prompts: [a dark bedroom at night]}
      library: {display: {en: library, ko: 도서관}, prompts: [shelves of old books]}
  mood:
    mode: multi
    labels:
      calm: {}
"""
TEXT = "A painting of shelves of old books in the evening light."


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> ClipModel:
    return load_clip(tiny_clip_folder(tmp_path_factory.mktemp("clip")))


def test_spaces_are_ranked_by_euclidean_distance_of_unit_embeddings(clip: ClipModel) -> None:
    rooms = parse_taxonomy(ROOMS)
    result = space_from_text(clip, rooms, TEXT, group="room")
    labels = rooms.groups["room"].labels
    text = clip.embed_texts([TEXT])[0]
    by_hand = {label_id: float((text - clip.embed_texts(label.prompts)[0]).norm())
               for label_id, label in labels.items()}
    expected = sorted(by_hand, key=by_hand.get)
    assert [space for space, _ in result.from_text] == expected
    assert len(set(by_hand.values())) == 4  # a real ranking, no ties
    for space, distance in result.from_text:
        assert distance == pytest.approx(by_hand[space], abs=1e-5)
        cosine = float(text @ F.normalize(clip.embed_texts(labels[space].prompts)[0], dim=-1))
        assert distance**2 == pytest.approx(2 - 2 * cosine, abs=1e-5)  # so it ranks as cosine does
    record = result.record()
    assert record["text_choice"] == expected[0] and record["from_picture"] == [] and record["picture_choice"] is None
    assert record["sentences"] == 1 and record["from_text"][0]["name"] == labels[expected[0]].name()


def test_a_longer_text_is_the_mean_of_its_sentences(clip: ClipModel) -> None:
    text = "Shelves of old books.  A quiet office!\nCoffee at night? 조용한 방입니다."
    parts = sentences(text)
    assert parts == ["Shelves of old books.", "A quiet office!", "Coffee at night?", "조용한 방입니다."]
    rooms = parse_taxonomy(ROOMS)
    mean = F.normalize(clip.embed_texts(parts).mean(0), dim=-1)
    bank = build_label_bank(clip, rooms)
    distances = (bank.embeddings["room"] - mean).norm(dim=-1).tolist()
    by_hand = sorted(zip(bank.rows["room"], distances), key=lambda pair: pair[1])
    result = space_from_text(clip, rooms, text, group="room")
    assert [s for s, _ in result.from_text] == [s for s, _ in by_hand] and result.sentences == 4
    assert [d for _, d in result.from_text] == pytest.approx([d for _, d in by_hand], abs=1e-6)


def test_the_picture_scores_are_zero_shot_labelling_of_the_same_group(clip: ClipModel) -> None:
    spaces = load_taxonomy("spaces")
    picture = torch.rand(24, 24, 3, generator=torch.Generator().manual_seed(3))
    result = space_from_text(clip, spaces, TEXT, picture, language="ko")
    bank = build_label_bank(clip, spaces)
    labelled = label_embeddings(bank, clip.embed_images([picture]), "ko")[0]
    assert dict(result.from_picture) == pytest.approx(labelled["scores"]["space"], abs=1e-6)
    scores = [score for _, score in result.from_picture]
    assert scores == sorted(scores, reverse=True) and len(scores) == len(spaces.groups["space"].labels)
    assert result.picture_choice == labelled["labels"]["space"][0]["label"]
    assert {space for space, _ in result.from_text} == set(spaces.groups["space"].labels)
    assert result.names["bedroom"] == "침실"


def test_an_empty_text_and_a_missing_group_are_clear_errors(clip: ClipModel) -> None:
    spaces = load_taxonomy("spaces")
    with pytest.raises(ValueError, match="the text is empty"):
        space_from_text(clip, spaces, " \n\t ")
    with pytest.raises(TaxonomyError, match="no group 'rooms'; its groups are space, mood"):
        space_from_text(clip, spaces, TEXT, group="rooms")


def test_node_gives_the_json_and_the_nearest_space_name(clip: ClipModel, output_dir: Path) -> None:
    node = AtelierSpaceFromText()
    spaces = load_taxonomy("spaces")
    text, name = node.place(clip, spaces, TEXT, "space", "ko")
    record = json.loads(text)
    assert name == record["from_text"][0]["name"] and record["text_choice"] == record["from_text"][0]["space"]
    assert record["from_picture"] == []
    pictures = torch.rand(2, 24, 24, 3, generator=torch.Generator().manual_seed(3))
    text, _ = node.place(clip, spaces, TEXT, " space ", "en", pictures)
    alone = space_from_text(clip, spaces, TEXT, pictures[0])
    assert json.loads(text)["from_picture"] == alone.record()["from_picture"] != []
    with pytest.raises(TypeError, match="Atelier Load CLIP"):
        node.place(object(), spaces, TEXT, "space", "en")
