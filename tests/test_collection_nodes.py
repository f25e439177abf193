"""The curator and captioner nodes as ComfyUI calls them, and their headless commands, with a tiny CLIP and a
tiny BLIP-2 placed in models/atelier/clip/tiny and models/atelier/blip2/tiny."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from atelier.cli import main
from atelier.core.captions.blip2 import load_blip2
from atelier.core.captions.curation_text import hashtag
from atelier.core.captions.safety import SafetyFilter
from atelier.core.curator import image_index
from atelier.core.curator.clip_model import load_clip
from atelier.core.curator.taxonomy import TaxonomyError
from atelier.core.shared.hf_folders import ModelFolderError
from atelier.nodes import captioner, curator
from atelier.nodes.captioner import (
    AtelierCaptionDataset,
    AtelierCaptionImages,
    AtelierCurationText,
    AtelierDescribeFolder,
    AtelierLoadBLIP2,
)
from atelier.nodes.curator import (
    AtelierCurateFolder,
    AtelierEvaluateRetrieval,
    AtelierLabelImages,
    AtelierLoadCLIP,
    AtelierLoadTaxonomy,
    AtelierRetrieveImages,
)

from helpers import SAMPLES, as_batch, node_defaults, photo, tiny_blip2_folder, tiny_clip_folder

PICTURES = ["astronaut.tif", "chelsea.jpg", "coffee.webp", "rocket.png"]
NODES = {**curator.NODE_CLASS_MAPPINGS, **captioner.NODE_CLASS_MAPPINGS}
DISPLAY = {**curator.NODE_DISPLAY_NAME_MAPPINGS, **captioner.NODE_DISPLAY_NAME_MAPPINGS}
DEDUP = 0.99  # the tiny random CLIP puts different photographs close together: only true copies are this close
SHORT = {"max_new_tokens": 4, "min_new_tokens": 4, "num_beams": 1}


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    tiny_clip_folder(root / "atelier" / "clip" / "tiny")
    blip = root / "atelier" / "blip2" / "tiny"
    blip.mkdir(parents=True)
    tiny_blip2_folder(blip)
    return root


@pytest.fixture
def models(models_root: Path, monkeypatch: pytest.MonkeyPatch, output_dir: Path) -> Path:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_root))
    return models_root


@pytest.fixture(scope="module")
def clip(models_root: Path) -> Any:
    """The tiny CLIP loaded once (loading through the node is tested on its own)."""
    return load_clip(models_root / "atelier" / "clip" / "tiny", "cpu")


@pytest.fixture(scope="module")
def blip(models_root: Path) -> Any:
    return load_blip2(models_root / "atelier" / "blip2" / "tiny", "cpu")


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """Copies of the samples with their caption sidecars."""
    return Path(shutil.copytree(SAMPLES, tmp_path / "collection"))


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """Copies of the sample pictures without caption sidecars."""
    folder = Path(shutil.copytree(SAMPLES, tmp_path / "bare"))
    for sidecar in folder.glob("*.txt"):
        sidecar.unlink()
    return folder


def _clip() -> Any:
    return AtelierLoadCLIP().load("tiny", "auto", "cpu")[0]


def _blip2() -> Any:
    return AtelierLoadBLIP2().load("tiny", "auto", "cpu")[0]


def _taxonomy(name: str = "spaces") -> Any:
    return AtelierLoadTaxonomy().load(name, "")[0]


def _images(*names: str, size: tuple[int, int] = (48, 40)) -> torch.Tensor:
    return as_batch(*(photo(name, size) for name in names))


def _curate(clip: Any, folder: Path, **overrides: Any) -> tuple[str, str, str, int]:
    values = node_defaults(AtelierCurateFolder, folder=str(folder), dedup_threshold=DEDUP, **overrides)
    return AtelierCurateFolder().curate(clip, _taxonomy(), **values)


# --------------------------------------------------------------------------------------------
# What ComfyUI shows
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(NODES))
def test_every_node_is_described_for_the_ui(key: str) -> None:
    cls = NODES[key]
    assert DISPLAY[key].startswith("Atelier ")
    assert cls.CATEGORY.startswith("Atelier/")
    assert cls.DESCRIPTION and callable(getattr(cls, cls.FUNCTION))
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    inputs = cls.INPUT_TYPES()
    assert set(inputs) <= {"required", "optional"}
    for section in inputs.values():
        for name, spec in section.items():
            assert len(spec) == 2 and spec[1].get("tooltip"), f"{key}.{name} has no tooltip"


def test_the_pack_registers_every_collection_node() -> None:
    from atelier.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    for key, cls in NODES.items():
        assert NODE_CLASS_MAPPINGS[key] is cls and NODE_DISPLAY_NAME_MAPPINGS[key] == DISPLAY[key]


# --------------------------------------------------------------------------------------------
# Loading models and taxonomies
# --------------------------------------------------------------------------------------------


def test_load_clip_lists_and_loads_the_tiny_model(models: Path) -> None:
    choices = AtelierLoadCLIP.INPUT_TYPES()["required"]["model"][0]
    assert "tiny" in choices and "openai/clip-vit-large-patch14" in choices
    clip = _clip()
    assert clip.name == "tiny" and clip.dim == 16 and clip.device.type == "cpu" and clip.dtype == torch.float32
    assert "tiny" in AtelierLoadBLIP2.INPUT_TYPES()["required"]["model"][0]


@pytest.mark.parametrize(("node", "kind"), [(AtelierLoadCLIP, "clip"), (AtelierLoadBLIP2, "blip2")])
def test_a_missing_model_names_the_folder_searched_and_how_to_get_it(models: Path, node: type, kind: str) -> None:
    with pytest.raises(ModelFolderError) as caught:
        node().load("no-such-model", "auto", "cpu")
    message = str(caught.value)
    assert str(models / "atelier" / kind) in message
    assert "hf download " in message and "never downloads" in message


def test_load_taxonomy_shipped_and_custom(models: Path, tmp_path: Path) -> None:
    taxonomy, summary = AtelierLoadTaxonomy().load("spaces", "")
    assert taxonomy.name == "spaces" and set(taxonomy.groups) == {"space", "mood"}
    assert summary.startswith("spaces: 2 group(s)") and "space (exclusive): home, living_room" in summary
    custom = tmp_path / "colours.yaml"
    custom.write_text("name: colours\ngroups:\n  colour:\n    mode: exclusive\n    labels:\n"
                      "      red: {prompts: [red]}\n      blue: {prompts: [blue], display: {ko: \ud30c\ub791}}\n",
                      encoding="utf-8")
    mine, summary = AtelierLoadTaxonomy().load("spaces", str(custom))  # the custom file wins
    assert mine.name == "colours" and list(mine.groups["colour"].labels) == ["red", "blue"]
    assert summary == ("colours: 1 group(s)\ncolour (exclusive): red, blue\n"
                       "prompts in: en, ko (the CLIP's text tower picks which)")  # blue's Korean name is a prompt


def test_a_broken_custom_taxonomy_gives_the_line(models: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\ngroups:\n  colour:\n    mode: sometimes\n    labels:\n      red: {}\n",
                      encoding="utf-8")
    with pytest.raises(TaxonomyError, match=r"broken\.yaml, line 4.*mode must be one of exclusive, multi"):
        AtelierLoadTaxonomy().load("spaces", str(broken))
    unbalanced = tmp_path / "unbalanced.yaml"
    unbalanced.write_text("name: x\ngroups:\n  colour: {mode: exclusive, labels: [red\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match=r"unbalanced\.yaml, line \d+.*not valid YAML"):
        AtelierLoadTaxonomy().load("spaces", str(unbalanced))


# --------------------------------------------------------------------------------------------
# Labelling, curating, retrieving
# --------------------------------------------------------------------------------------------


def test_label_images_gives_one_record_and_one_tags_line_per_picture(models: Path, clip: Any) -> None:
    taxonomy = _taxonomy()
    images = _images("chelsea.jpg", "coffee.webp", "rocket.png")
    labels_json, tags, prompts = AtelierLabelImages().label(clip, taxonomy, images, "en", 2)
    assert prompts == "prompts: en (the text tower reads English)"
    records = json.loads(labels_json)
    assert len(records) == 3
    lines = tags.split("\n")
    assert len(lines) == 3
    for record, line in zip(records, lines):
        assert set(record["labels"]) == set(record["scores"]) == {"space", "mood"}
        assert set(record["scores"]["space"]) == set(taxonomy.groups["space"].labels)
        (space,) = record["labels"]["space"]  # exclusive: exactly one
        assert space["name"] in line.split(", ")
        assert all(choice["name"] in line.split(", ") for choice in record["labels"]["mood"])
    korean = json.loads(AtelierLabelImages().label(clip, taxonomy, images[:1], "ko", 32)[0])
    assert korean[0]["labels"]["space"][0]["label"] == records[0]["labels"]["space"][0]["label"]
    assert korean[0]["labels"]["space"][0]["name"] == \
        taxonomy.groups["space"].labels[records[0]["labels"]["space"][0]["label"]].display["ko"]


def test_label_images_refuses_comfyui_clip_vision(models: Path, clip: Any) -> None:
    class ClipVision:  # what ComfyUI's CLIP_VISION looks like: an image tower only
        def encode_image(self, image: torch.Tensor) -> None:
            raise AssertionError("must not be called")

    with pytest.raises(TypeError, match="text tower"):
        AtelierLabelImages().label(ClipVision(), _taxonomy(), _images("chelsea.jpg"), "en", 32)
    with pytest.raises(ValueError, match=r"expected an IMAGE batch"):
        AtelierLabelImages().label(clip, _taxonomy(), torch.zeros(2, 8, 8), "en", 32)


def test_curate_folder_writes_a_version_without_duplicates_and_lists_the_broken_file(
        models: Path, clip: Any, collection: Path, output_dir: Path) -> None:
    shutil.copy(collection / "chelsea.jpg", collection / "chelsea_copy.jpg")  # the same bytes under another name
    (collection / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    folder, labels_json, report, kept = _curate(clip, collection)
    version = output_dir / "atelier" / "curated" / "v001"
    assert Path(folder) == version and kept == 4
    assert sorted(p.name for p in version.glob("*.*") if p.suffix not in (".txt", ".json", ".jsonl")) == PICTURES
    for name in PICTURES:
        assert (version / name).read_bytes() == (SAMPLES / name).read_bytes()
        stem = Path(name).stem
        assert (version / f"{stem}.txt").read_text(encoding="utf-8") == \
            (SAMPLES / f"{stem}.txt").read_text(encoding="utf-8").strip() + "\n"
    manifest = [json.loads(line) for line in (version / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["file"] for r in manifest) == PICTURES
    assert next(r for r in manifest if r["file"] == "chelsea.jpg")["near_duplicates"] == ["chelsea_copy.jpg"]
    assert all(len(r["labels"]["space"]) == 1 for r in manifest)
    records = json.loads(labels_json)
    assert len(records) == 5 and {Path(r["file"]).name for r in records} == {*PICTURES, "chelsea_copy.jpg"}
    assert "dropped chelsea_copy.jpg: near-duplicate of chelsea.jpg" in report
    assert "skipped broken.png" in report and "kept 4 of 5" in report
    curation = json.loads((version / "curation_report.json").read_text(encoding="utf-8"))
    assert [(Path(d["file"]).name, d["reason"]) for d in curation["dropped"]] == \
        [("chelsea_copy.jpg", "near-duplicate of chelsea.jpg")]
    assert [Path(s["file"]).name for s in curation["skipped"]] == ["broken.png"]
    assert curation["kept"] == 4 and curation["taxonomy"] == "spaces"


def test_a_second_curation_encodes_nothing(models: Path, clip: Any, collection: Path, output_dir: Path) -> None:
    first = _curate(clip, collection)
    assert "4 picture(s): 4 encoded, 0 from cache" in first[2]
    second = _curate(clip, collection)
    assert "4 picture(s): 0 encoded, 4 from cache" in second[2]
    assert Path(second[0]) == output_dir / "atelier" / "curated" / "v002"
    assert json.loads(second[1]) == json.loads(first[1])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"keep": "no_such_label"}, "no label 'no_such_label'"),
    ({"drop": "space:bathroom"}, "no label 'bathroom'"),
    ({"subfolders_by": "colour"}, "does not have"),
    ({"keep_best": "score"}, "give sort_by"),
    ({"subfolder": "../outside"}, "must be a relative path"),
])
def test_bad_options_fail_before_any_embedding(models: Path, clip: Any, collection: Path, output_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str],
                                               message: str) -> None:
    def index_folder(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the folder was embedded before the options were checked")

    monkeypatch.setattr(image_index, "index_folder", index_folder)
    monkeypatch.setattr(clip, "embed_texts", index_folder)
    monkeypatch.setattr(clip, "embed_images", index_folder)
    with pytest.raises(ValueError, match=message):
        _curate(clip, collection, **overrides)
    assert not (output_dir / "atelier" / "curated").exists() or \
        not any((output_dir / "atelier" / "curated").iterdir())


def test_retrieve_images_returns_the_top_k_pictures_with_their_scores(models: Path, clip: Any,
                                                                      collection: Path) -> None:
    node = AtelierRetrieveImages()
    images, results = node.retrieve(clip, str(collection), "a cat", 3, 64, 2, False)
    assert images.shape == (3, 64, 64, 3) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0 and float(images.max()) > 0.1
    lines = [line.split("\t") for line in results.split("\n")]
    assert [rank for rank, _, _ in lines] == ["1", "2", "3"]
    scores = [float(score) for _, score, _ in lines]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    assert all(Path(path).parent == collection and Path(path).name in PICTURES for _, _, path in lines)
    assert len({path for _, _, path in lines}) == 3
    everything, results = node.retrieve(clip, str(collection), "a cat", 50, 64, 32, False)
    assert everything.shape[0] == 4 and {Path(line.split("\t")[2]).name for line in results.split("\n")} == \
        set(PICTURES)
    for query in ("", "  \n "):
        with pytest.raises(ValueError, match="the query is empty"):
            node.retrieve(clip, str(collection), query, 3, 64, 32, False)


def test_evaluate_retrieval_scores_caption_queries(models: Path, clip: Any, collection: Path) -> None:
    node = AtelierEvaluateRetrieval()
    mrr, recall, report = node.evaluate(clip, str(collection), 2, 32)
    assert 0.0 <= mrr <= recall <= 1.0
    assert report.startswith("MRR@2 ") and "over 4 queries" in report
    mrr, recall, report = node.evaluate(clip, str(collection), 4, 32)  # K is every picture: all found
    assert recall == 1.0 and 0.25 <= mrr <= 1.0
    mrr, recall, _ = node.evaluate(clip, str(collection), 1, 32)
    assert mrr == recall  # at K = 1 a hit is worth exactly 1
    for sidecar in collection.glob("*.txt"):
        sidecar.unlink()
    with pytest.raises(ValueError, match="has a <stem>.txt caption"):
        node.evaluate(clip, str(collection), 4, 32)


def test_evaluate_retrieval_from_a_pairs_file(models: Path, clip: Any, collection: Path, tmp_path: Path) -> None:
    from atelier.core.curator import retrieval

    node = AtelierEvaluateRetrieval()
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text('text,image\n"a cat, resting",chelsea.jpg\nan astronaut,astronaut.tif\n', encoding="utf-8")
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"text": "a cat, resting", "image": "chelsea.jpg"}\n\n{"text": "an astronaut", '
                     '"image": "astronaut.tif"}\n', encoding="utf-8")
    assert retrieval.read_pairs(csv_file) == retrieval.read_pairs(jsonl) == [
        ("a cat, resting", "chelsea.jpg"), ("an astronaut", "astronaut.tif")]
    mrr, recall, report = node.evaluate(clip, str(collection), 4, 32, str(csv_file))
    assert recall == 1.0 and "over 2 queries" in report
    # the same queries scored by hand: rank of each target among the 4 pictures
    index = _index_of(clip, collection)
    queries = clip.embed_texts(["a cat, resting", "an astronaut"])
    targets = [index["chelsea.jpg"], index["astronaut.tif"]]
    expected = retrieval.evaluate(retrieval.ranks(queries, _embeddings(clip, collection), targets), 4)
    assert mrr == pytest.approx(expected.mrr)
    (tmp_path / "bad.csv").write_text("text,image\na dog,dog.png\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not readable in"):
        node.evaluate(clip, str(collection), 4, 32, str(tmp_path / "bad.csv"))
    (tmp_path / "bad.jsonl").write_text('{"text": "x", "image": "chelsea.jpg"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        node.evaluate(clip, str(collection), 4, 32, str(tmp_path / "bad.jsonl"))


def _index_of(clip: Any, collection: Path) -> dict[str, int]:
    from atelier.core.curator.image_index import index_folder

    return {p.name: row for row, p in enumerate(index_folder(clip, collection, None).files)}


def _embeddings(clip: Any, collection: Path) -> torch.Tensor:
    from atelier.core.curator.image_index import index_folder

    return index_folder(clip, collection, None).embeddings


# --------------------------------------------------------------------------------------------
# Captions and curator texts
# --------------------------------------------------------------------------------------------


def test_caption_images_gives_one_line_per_picture(models: Path) -> None:
    blip = _blip2()  # its own: this test unloads it
    images = _images("chelsea.jpg", "coffee.webp", "rocket.png")
    values = node_defaults(AtelierCaptionImages, **SHORT, batch_size=2)
    (captions,) = AtelierCaptionImages().caption(blip, images, **values)
    lines = captions.split("\n")
    assert len(lines) == 3 and all(line.strip() for line in lines)
    assert AtelierCaptionImages().caption(blip, images, **values) == (captions,)
    with pytest.raises(ValueError, match="num_beams"):
        AtelierCaptionImages().caption(blip, images, **{**values, "num_beams": 0})
    with pytest.raises(ValueError, match="expected an IMAGE batch"):
        AtelierCaptionImages().caption(blip, images[0], **values)
    AtelierCaptionImages().caption(blip, images[:1], **{**values, "unload_after": True})
    assert blip.model is None
    assert AtelierCaptionImages().caption(blip, images, **values) == (captions,)  # loaded again


def test_caption_dataset_writes_sidecars(models: Path, blip: Any, bare: Path) -> None:
    (bare / "chelsea.txt").write_text("kept as it is\n", encoding="utf-8")
    values = node_defaults(AtelierCaptionDataset, folder=str(bare), trigger="sks", **SHORT)
    folder, report = AtelierCaptionDataset().caption(blip, **values)
    assert Path(folder) == bare
    assert report == "wrote 3 caption(s), kept 1 existing"
    assert (bare / "chelsea.txt").read_text(encoding="utf-8") == "kept as it is\n"
    for stem in ("astronaut", "coffee", "rocket"):
        text = (bare / f"{stem}.txt").read_text(encoding="utf-8")
        assert text.startswith("sks, ") and text.endswith("\n") and len(text) > len("sks, \n")
    _, report = AtelierCaptionDataset().caption(blip, **{**values, "overwrite": True})
    assert report == "wrote 4 caption(s), kept 0 existing"
    assert (bare / "chelsea.txt").read_text(encoding="utf-8").startswith("sks, ")


def test_curation_text_from_labels_and_captions(models: Path, clip: Any, blip: Any) -> None:
    images = _images("chelsea.jpg", "coffee.webp")
    labels_json, _, _ = AtelierLabelImages().label(clip, _taxonomy(), images, "en", 32)
    (captions,) = AtelierCaptionImages().caption(blip, images, **node_defaults(AtelierCaptionImages, **SHORT))
    node = AtelierCurationText()
    values = node_defaults(AtelierCurationText, title="Morning Cup", artist="Kim Minji", year="2023",
                           technique="watercolour", picture_index=1)
    paragraph, record_json, hashtags = node.write(**values, labels_json=labels_json, descriptions=captions)
    record = json.loads(record_json)
    labels = json.loads(labels_json)[1]["labels"]
    space = labels["space"][0]["name"]
    assert paragraph.startswith("\u201cMorning Cup\u201d (2023) by Kim Minji is made in watercolour.")
    assert f"It would sit well in {'an' if space[0] in 'aeiou' else 'a'} {space}." in paragraph
    assert record["title"] == "Morning Cup" and record["paragraph"] == paragraph
    assert record["description"] == " ".join(captions.split("\n")[1].split())
    assert record["labels"]["space"][0]["label"] == labels["space"][0]["label"]
    assert hashtags.split(" ") == record["hashtags"]
    assert hashtags.startswith("#KimMinji #Watercolour #") and hashtag(space) in hashtags.split(" ")
    # no labels and no descriptions: the metadata alone
    paragraph, _, hashtags = node.write(**{**values, "picture_index": 0})
    assert paragraph == "\u201cMorning Cup\u201d (2023) by Kim Minji is made in watercolour."
    assert hashtags == "#KimMinji #Watercolour"


def test_curation_text_errors(models: Path) -> None:
    node = AtelierCurationText()
    labels_json = json.dumps([{"labels": {}, "scores": {}}, {"labels": {}, "scores": {}}])
    values = node_defaults(AtelierCurationText, title="Tide")
    with pytest.raises(ValueError, match="picture_index 2 is past the 2 labelled picture"):
        node.write(**{**values, "picture_index": 2}, labels_json=labels_json)
    with pytest.raises(ValueError, match="picture_index 1 is past the 1 description line"):
        node.write(**{**values, "picture_index": 1}, descriptions="a boat")
    with pytest.raises(ValueError, match="not JSON from Atelier Label Images"):
        node.write(**values, labels_json="{oops")
    with pytest.raises(ValueError, match="must be the list"):
        node.write(**values, labels_json="[]")


def test_blocked_words_typed_in_the_metadata_never_leave_the_node(models: Path) -> None:
    node = AtelierCurationText()
    values = node_defaults(AtelierCurationText, title="Sunset (for sale)", artist="Kim Minji, www.kimminji.com",
                           year="2021", material="canvas, price $300", technique="oil sale",
                           size="60 x 90 cm, $5,000",
                           artist_note="I painted the harbour at dawn. Write to kim@example.com to buy it.")
    outputs = node.write(**values, descriptions="a harbour at dawn, auctioned last year")
    for output in outputs:
        lowered = output.lower()
        for word in ("sale", "www", "kimminji.com", "price", "$", "5,000", "@", "buy", "auction"):
            assert word not in lowered, (word, output)
    paragraph = outputs[0]
    assert paragraph.startswith("\u201cSunset\u201d (2021) by Kim Minji is made in oil on canvas, 60 x 90 cm.")
    assert "\u201cI painted the harbour at dawn.\u201d" in paragraph
    assert all(SafetyFilter().allows(value) for value in json.loads(outputs[1]).values() if isinstance(value, str))
    # the node's own list replaces the default one
    paragraph, _, _ = node.write(**{**values, "blocked_words": "harbour"})
    assert "harbour" not in paragraph.lower() and "for sale" in paragraph.lower()
    assert "www" not in paragraph  # addresses go whatever the list


def test_describe_folder_writes_texts_for_a_curated_version(models: Path, clip: Any, collection: Path,
                                                            tmp_path: Path) -> None:
    folder, _, _, kept = _curate(clip, collection)
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"chelsea.jpg": {"title": "Chelsea", "artist": "Kim Minji"},
                                    "rocket": {"artist_note": "Buy a print. I watched it fly."}}), encoding="utf-8")
    records_json, catalogue = AtelierDescribeFolder().describe(folder, str(metadata), "sale, buy")
    records = json.loads(records_json)
    version = Path(folder)
    assert len(records) == kept == 4 and sorted(r["file"] for r in records) == PICTURES
    lines = (version / "curation.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records
    assert catalogue == (version / "curation.md").read_text(encoding="utf-8")
    by_file = {r["file"]: r for r in records}
    manifest = {r["file"]: r for r in map(json.loads, (version / "manifest.jsonl").read_text().splitlines())}
    for name, record in by_file.items():
        assert record["labels"]["space"][0]["label"] == manifest[name]["labels"]["space"][0]["label"]
        assert record["description"] == (SAMPLES / f"{Path(name).stem}.txt").read_text(encoding="utf-8").strip()
    assert by_file["chelsea.jpg"]["title"] == "Chelsea" and "## Chelsea\n" in catalogue
    assert by_file["rocket.png"]["artist_note"] == "I watched it fly." and "buy" not in catalogue.lower()
    assert "## astronaut\n" in catalogue
    metadata.write_text(json.dumps({"chelsea.jpg": {"price": "5"}}), encoding="utf-8")
    with pytest.raises(ValueError, match="unknown metadata field"):
        AtelierDescribeFolder().describe(folder, str(metadata), "sale")


def test_describe_folder_matches_metadata_of_a_sorted_version_by_the_original_name(
        models: Path, clip: Any, collection: Path, tmp_path: Path) -> None:
    folder, _, _, _ = _curate(clip, collection, sort_by="cafe")
    assert not (Path(folder) / "chelsea.jpg").exists()  # the copies are numbered
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"chelsea.jpg": {"title": "Chelsea"}}), encoding="utf-8")
    records = json.loads(AtelierDescribeFolder().describe(folder, str(metadata), "sale")[0])
    assert [r["title"] for r in records if r["file"].endswith("_chelsea.jpg")] == ["Chelsea"]


# --------------------------------------------------------------------------------------------
# The headless commands
# --------------------------------------------------------------------------------------------


def test_cli_label_writes_json(models: Path, collection: Path, output_dir: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "labels.json"
    assert main(["label", str(collection), "--clip", "tiny", "--taxonomy", "spaces", "--output", str(output_dir),
                 "--json", str(target), "--device", "cpu"]) == 0
    records = json.loads(target.read_text(encoding="utf-8"))
    assert [Path(r["file"]).name for r in records] == PICTURES
    assert all(set(r["labels"]) == {"space", "mood"} and len(r["labels"]["space"]) == 1 for r in records)
    assert f"labelled 4 picture(s) into {target}" in capsys.readouterr().out
    assert main(["label", str(collection), "--clip", "tiny", "--taxonomy", "spaces", "--output", str(output_dir),
                 "--device", "cpu", "--language", "ko"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert [line.split("\t")[0] for line in lines] == PICTURES
    korean = {label.display["ko"] for label in _taxonomy().groups["space"].labels.values()}
    assert all(set(line.split("\t")[1].split(", ")) & korean for line in lines)


def test_cli_curate_caption_describe(models: Path, collection: Path, output_dir: Path, capsys) -> None:
    shutil.copy(collection / "coffee.webp", collection / "coffee_again.webp")
    args = ["curate", str(collection), "--clip", "tiny", "--taxonomy", "spaces", "--output", str(output_dir),
            "--dedup", str(DEDUP), "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    version = output_dir / "atelier" / "curated" / "v001"
    assert f"kept 4 of 5 picture(s) (4 encoded) in {version}" in out
    assert "dropped coffee_again.webp: near-duplicate of coffee.webp" in out
    assert sorted(p.name for p in version.iterdir() if p.suffix not in (".txt", ".json", ".jsonl")) == PICTURES
    assert main(args) == 0
    assert "(0 encoded)" in capsys.readouterr().out and (version.parent / "v002").is_dir()

    assert main(["caption", str(version), "--blip2", "tiny", "--device", "cpu", "--trigger", "sks", "--overwrite",
                 "--max-new-tokens", "4", "--num-beams", "1"]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 caption(s), kept 0 existing" in out
    for name in PICTURES:
        caption = (version / name).with_suffix(".txt").read_text(encoding="utf-8")
        assert caption.startswith("sks, ") and f"{name}\t{caption.strip()}" in out

    assert main(["describe", str(version)]) == 0
    out = capsys.readouterr().out
    records = [json.loads(line) for line in (version / "curation.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["file"] for r in records) == PICTURES
    assert all(r["description"].startswith("sks, ") and r["labels"]["space"] for r in records)
    assert (version / "curation.md").is_file() and "(4 picture(s))" in out


def test_cli_errors_exit_2_with_a_message(models: Path, collection: Path, output_dir: Path, capsys) -> None:
    assert main(["curate", str(collection), "--clip", "tiny", "--taxonomy", "spaces", "--output", str(output_dir),
                 "--keep", "no_such_label", "--device", "cpu"]) == 2
    assert "no label 'no_such_label'" in capsys.readouterr().err
    assert not (output_dir / "atelier").exists()  # nothing embedded, nothing written
    for sidecar in collection.glob("*.txt"):
        sidecar.unlink()
    assert main(["caption", str(collection), "--blip2", "tiny", "--precision", "8bit", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("atelier: ") and "8bit" in err and "CUDA" in err
    assert not list(collection.glob("*.txt"))
    with pytest.raises(SystemExit) as stop:  # refused as the options are parsed
        main(["caption", str(collection), "--blip2", "tiny", "--device", "cpu", "--num-beams", "0"])
    assert stop.value.code == 2 and "--num-beams: must be at least 1" in capsys.readouterr().err
    assert main(["label", str(collection), "--clip", "no-such-clip", "--output", str(output_dir)]) == 2
    assert "hf download " in capsys.readouterr().err
    assert main(["describe", str(collection), "--metadata", str(collection / "missing.csv")]) == 2
    assert "cannot read metadata file" in capsys.readouterr().err
