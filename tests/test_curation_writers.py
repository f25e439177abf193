"""The curator's text from the analyses: English and Korean sentence patterns (exact), Korean particles, missing
analyses left out, the record and hashtags, the safety filter over every writer, the BLIP-2 and SeqGAN writers,
the analysis vector, Describe Folder with an analyses.jsonl, and the node's writer errors."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from atelier.core.analyses.features import FEATURES_LENGTH, analysis_features, space_order
from atelier.core.captions import korean
from atelier.core.captions.curation_text import Metadata, curate_text, describe_folder
from atelier.core.captions.safety import SafetyFilter
from atelier.core.captions.writers import QUESTION, blip2_prompt, write_with_blip2, write_with_seqgan

from helpers import SAMPLES, node_defaults, photo, tiny_blip2_folder

ANALYSES: dict[str, Any] = {
    "colour": {"palette": [{"hex": "#C8643C", "lab": [56.2, 38.5, 41.0], "share": 0.5512},
                           {"hex": "#F0DCB4", "lab": [88.9, 2.1, 21.3], "share": 0.3021},
                           {"hex": "#2C3E50", "lab": [25.6, -2.4, -14.3], "share": 0.1467}],
               "words": ["warm", "bright", "vivid"], "words_ko": ["따뜻한", "밝은", "선명한"],
               "measures": {"warmth": 31.0, "lightness": 66.4, "chroma": 40.2, "contrast": 20.5}},
    "emotion": {"picture": {"step": "delighted", "step_ko": "기쁜", "valence": 0.8, "arousal": 0.4},
                "text": {"step": "relaxed", "step_ko": "편안한", "valence": 0.5, "arousal": -0.6},
                "fused": {"step": "content", "step_ko": "만족스러운", "valence": 0.71, "arousal": -0.12,
                          "basic": {"happiness": 0.6, "sadness": 0.1, "anger": 0.05, "fear": 0.05, "surprise": 0.15,
                                    "disgust": 0.05}}},
    "style": {"matches": [{"template": "impressionist_garden.png", "distance": 0.25,
                           "description": "Loose, broken brushwork in the manner of Impressionist gardens"}],
              "sentence": "Loose, broken brushwork in the manner of Impressionist gardens"},
    "objects": {"objects": [{"label": "cat"}, {"label": "flowers"}, {"label": "trees"}], "main": ["cat"],
                "auxiliary": ["flowers", "trees"]},
    "intent": {"artist_note": {"summary": "A quiet afternoon with my cat.", "method": "extractive"},
               "expert_review": {"summary": "The warm light gives the scene a calm intimacy.", "method": "extractive"}},
    "space": {"group": "space", "from_text": [{"space": "living_room", "name": "living room", "distance": 1.1}],
              "from_picture": [{"space": "cafe", "name": "cafe", "score": 0.4}], "text_choice": "living_room",
              "picture_choice": "cafe"},
}
META = Metadata(title="Afternoon Light", artist="Kim Minji", year="2024", material="canvas", technique="oil",
                size="53 x 45 cm")
ENGLISH = (
    "\u201cAfternoon Light\u201d (2024) by Kim Minji is made in oil on canvas, 53 x 45 cm. Its colour tone is warm, "
    "bright and vivid. Its main colours are #C8643C (55%), #F0DCB4 (30%) and #2C3E50 (15%). Its emotional tone is "
    "content (valence 0.71, arousal -0.12). The picture reads as delighted, the text as relaxed. Loose, broken "
    "brushwork in the manner of Impressionist gardens. Its main object is the cat. Also present are the flowers and "
    "the trees. "
    "Summary of the artist\u2019s note: \u201cA quiet afternoon with my cat.\u201d Summary of the expert review: "
    "\u201cThe warm light gives the scene a calm intimacy.\u201d By its text it suits a living room; by its picture, "
    "a cafe.")
KOREAN = (
    "\u201cAfternoon Light\u201d(2024)는 Kim Minji의 작품이다. 작품은 canvas에 oil 기법으로 제작되었다. "
    "크기는 53 x 45 cm이다. 따뜻하고 밝고 선명한 색조가 두드러진다. "
    "주요 색은 비중 순으로 #C8643C(55%), #F0DCB4(30%), #2C3E50(15%)이다. "
    "작품은 만족스러운 정서를 자아낸다(정서가 0.71, 각성도 -0.12). "
    "그림에서는 기쁜 정서가, 글에서는 편안한 정서가 읽힌다. "
    "Loose, broken brushwork in the manner of Impressionist gardens. 주된 대상은 고양이다. "
    "보조 대상으로 꽃과 나무가 보인다. 작가 노트 요약: \u201cA quiet afternoon with my cat.\u201d "
    "전문가 평론 요약: \u201cThe warm light gives the scene a calm intimacy.\u201d "
    "글로는 거실, 그림으로는 카페가 전시 공간으로 어울린다.")


@pytest.fixture
def safety() -> SafetyFilter:
    return SafetyFilter(("sale",))


def test_korean_particles_follow_the_final_consonant() -> None:
    assert [korean.josa(w, "을", "를") for w in ("고양이", "사람", "산", "2024", "2022")] == \
        ["고양이를", "사람을", "산을", "2024를", "2022를"]
    assert korean.josa("“봄날”(2021)", "은", "는") == "“봄날”(2021)은"  # the quote and the year are skipped
    assert korean.josa("바다", "이", "가") == "바다가" and korean.josa("거실", "이", "가") == "거실이"
    assert korean.copula("고양이") == "고양이다" and korean.copula("사람") == "사람이다"
    assert korean.join(["고양이", "사람"]) == "고양이와 사람"
    assert korean.join(["사람", "꽃", "나무"]) == "사람, 꽃과 나무"
    assert korean.join(["달"]) == "달" and korean.join([]) == ""
    assert [korean.connective(w) for w in ("따뜻한", "밝은", "차가운", "어두운", "대비가 강한", "신나는")] == \
        ["따뜻하고", "밝고", "차갑고", "어둡고", "대비가 강하고", "신나고"]
    assert not korean.has_batchim("") and korean.has_batchim("ball") and not korean.has_batchim("cafe")


@pytest.mark.parametrize("language, expected", [("en", ENGLISH), ("ko", KOREAN)])
def test_paragraph_from_every_analysis(safety: SafetyFilter, language: str, expected: str) -> None:
    text = curate_text({}, "", META, safety, ANALYSES, language)
    assert text.paragraph == expected


def test_hashtags_and_record_carry_the_analyses(safety: SafetyFilter) -> None:
    text = curate_text({}, "", META, safety, ANALYSES)
    assert text.hashtags == ["#KimMinji", "#Oil", "#Canvas", "#Warm", "#Bright", "#Vivid", "#Content", "#Cat",
                             "#ImpressionistGarden", "#LivingRoom"]
    record = json.loads(text.record_json())
    assert record["analyses"] == ANALYSES and "language" not in record
    korean_text = curate_text({}, "", META, safety, ANALYSES, "ko")
    assert korean_text.hashtags[3:] == ["#따뜻한", "#밝은", "#선명한", "#만족스러운", "#고양이", "#ImpressionistGarden",
                                        "#거실"]
    assert korean_text.record["language"] == "ko"


def test_missing_analyses_are_left_out(safety: SafetyFilter) -> None:
    only = {"colour": ANALYSES["colour"], "emotion": None, "space": {**ANALYSES["space"], "picture_choice": None}}
    text = curate_text({}, "", Metadata(), safety, only)
    assert text.paragraph == ("Its colour tone is warm, bright and vivid. Its main colours are #C8643C (55%), "
                              "#F0DCB4 (30%) and #2C3E50 (15%). By its text, it suits a living room.")
    assert set(text.record["analyses"]) == {"colour", "space"}
    same = curate_text({}, "", Metadata(), safety, {"space": only["space"]}, "ko")
    assert same.paragraph == "글로 보면 거실이 전시 공간으로 어울린다."
    agreeing = {"space": {**ANALYSES["space"], "picture_choice": "living_room"},
                "emotion": {**ANALYSES["emotion"], "text": ANALYSES["emotion"]["picture"]}}
    assert curate_text({}, "", Metadata(), safety, agreeing, "ko").paragraph == (
        "작품은 만족스러운 정서를 자아낸다(정서가 0.71, 각성도 -0.12). 그림과 글에서 읽은 정서가 일치한다. "
        "글과 그림 모두 거실을 전시 공간으로 가리킨다.")


def test_without_analyses_the_text_is_unchanged(safety: SafetyFilter) -> None:
    labels = {"medium": [{"label": "oil_painting", "name": "oil painting", "score": 0.9}]}
    before = curate_text(labels, "a cat on a sofa", META, safety)
    for analyses in (None, {}, {"colour": None}):
        after = curate_text(labels, "a cat on a sofa", META, safety, analyses)
        assert after == before and after.record_json() == before.record_json()
    with pytest.raises(ValueError, match="unknown analysis/analyses mood"):
        curate_text({}, "", META, safety, {"mood": {}})
    with pytest.raises(ValueError, match="language must be one of en, ko"):
        curate_text({}, "", META, safety, None, "fr")


def test_the_safety_filter_removes_a_blocked_word_from_an_analysis(safety: SafetyFilter) -> None:
    selling = {"style": {"matches": [{"template": "sale.png", "distance": 0.1, "description": "x"}],
                         "sentence": "A bright poster made for the sale season"},
               "objects": {"main": ["cat"], "auxiliary": []}}
    for language in ("en", "ko"):
        text = curate_text({}, "", Metadata(), safety, selling, language)
        assert "sale" not in text.paragraph.lower() and "sale" not in " ".join(text.hashtags).lower()
        assert "sale" not in text.record["analyses"]["style"]["sentence"]
        assert text.paragraph in ("Its main object is the cat.", "주된 대상은 고양이다.")


def test_analysis_features_layout() -> None:
    vector = analysis_features(ANALYSES)
    assert vector.shape == (FEATURES_LENGTH,) == (47,) and vector.dtype == torch.float32
    assert vector[:6].tolist() == [1.0] * 6
    torch.testing.assert_close(vector[6:10], torch.tensor([31 / 50, 0.664, 0.402, 20.5 / 50]))
    torch.testing.assert_close(vector[10:14], torch.tensor([0.562, 38.5 / 128, 41 / 128, 0.5512]))
    torch.testing.assert_close(vector[22:24], torch.tensor([0.71, -0.12]))
    torch.testing.assert_close(vector[30], torch.tensor(0.2))  # 0.25 / 1.25
    torch.testing.assert_close(vector[31:33], torch.tensor([0.3, 0.1]))
    assert vector[33:].tolist() == [float(s == "living_room") for s in space_order()]
    empty = analysis_features({"colour": None})
    assert empty.shape == (47,) and not empty.any()


@pytest.fixture(scope="module")
def blip(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from atelier.core.captions.blip2 import load_blip2

    root = tmp_path_factory.mktemp("models") / "tiny-blip2"
    root.mkdir()
    return load_blip2(tiny_blip2_folder(root), "cpu")


def test_blip2_writer_prompts_with_the_facts_and_is_filtered(blip: Any) -> None:
    from atelier.core.captions.blip2 import CaptionSettings

    prompt = blip2_prompt(META, ANALYSES)
    for fact in ("title: Afternoon Light", "colours: warm, bright, vivid, #C8643C", "emotion: content",
                 "style: Loose, broken brushwork", "main objects: cat", "other objects: flowers, trees",
                 "artist note (summary): A quiet afternoon", "space: living room"):
        assert fact in prompt
    image = torch.from_numpy(photo("chelsea.jpg", (32, 32))).float() / 255
    settings = CaptionSettings(max_new_tokens=12, min_new_tokens=12, num_beams=1, sampling=True, seed=1)
    base = curate_text({}, "", META, SafetyFilter(()), ANALYSES)
    free = write_with_blip2(base, blip, image, META, ANALYSES, SafetyFilter(()), settings)
    assert free.paragraph and free.record["writer"] == "blip2"
    # the tiny model's window (128 tokens, one a character) holds the first facts and the question
    assert prompt.startswith(free.record["prompt"].rsplit("\n", 1)[0]) and free.record["prompt"].endswith(QUESTION)
    assert free.record["prompt"].startswith("title: Afternoon Light\nartist: Kim Minji")
    assert free.record["paragraph"] == free.paragraph and free.hashtags == base.hashtags
    word = max(re.findall(r"[^\W\d_]+", free.paragraph), key=len)  # the random model's bytes hold some letters
    blocked = write_with_blip2(base, blip, image, META, ANALYSES, SafetyFilter((word,)), settings)
    assert not re.search(rf"\b{re.escape(word)}\b", blocked.paragraph) and blocked.paragraph != free.paragraph


def _text_model(cond_dim: int) -> Any:
    from atelier.core.story import seqgan_model as sg
    from atelier.core.story.text_generator import TextGenerator
    from atelier.core.story.text_tokens import build_tokenizer

    tokenizer = build_tokenizer(["a calm sea for sale", "a warm cat in the light"])
    torch.manual_seed(0)
    config = sg.SeqGANConfig(vocab_size=len(tokenizer.vocab), max_len=8, emb_dim=8, hidden_dim=8, cond_dim=cond_dim,
                             bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
    return TextGenerator(sg.Generator(config), tokenizer)


def test_seqgan_writer_samples_on_the_analysis_vector_and_is_filtered() -> None:
    from atelier.core.story.text_generator import SamplingOptions

    model = _text_model(FEATURES_LENGTH)
    base = curate_text({}, "", META, SafetyFilter(()), ANALYSES)
    options = SamplingOptions(seed=3)
    expected = model.generate(1, options, condition=[analysis_features(ANALYSES).tolist()]).texts[0]
    text = write_with_seqgan(base, model, ANALYSES, SafetyFilter(()), options)
    assert text.paragraph == " ".join(expected.split()) and text.record["writer"] == "seqgan"

    def sample(analyses: dict[str, Any], seed: int) -> str:
        return write_with_seqgan(base, model, analyses, SafetyFilter(()), SamplingOptions(seed=seed)).paragraph

    # the same seed, a work without analyses (its vector all 0): the condition changes what is sampled
    assert any(sample(ANALYSES, s) != sample({}, s) for s in range(8))
    selling = [write_with_seqgan(base, model, ANALYSES, SafetyFilter(()), SamplingOptions(seed=s)).paragraph
               for s in range(4)]
    assert sum("sale" in p.split() for p in selling) >= 1  # the tiny corpus has the word
    for s, free in enumerate(selling):  # a sentence holding it goes whole, the others stay
        kept = write_with_seqgan(base, model, ANALYSES, SafetyFilter(("sale",)), SamplingOptions(seed=s)).paragraph
        assert kept == ("" if "sale" in free.split() else free)
    with pytest.raises(ValueError, match="conditioned on 3 features, not on the 47"):
        write_with_seqgan(base, _text_model(3), ANALYSES, SafetyFilter(()))
    with pytest.raises(ValueError, match="conditioned on no features, not on the 47 .* Train Text Generator"):
        write_with_seqgan(base, _text_model(0), ANALYSES, SafetyFilter(()))


def test_describe_folder_with_analyses(tmp_path: Path, safety: SafetyFilter) -> None:
    from atelier.cli import main
    from atelier.core.story.catalogue import read_catalogue

    folder = tmp_path / "작품"
    folder.mkdir()
    for source, name in (("chelsea.jpg", "고양이.jpg"), ("coffee.webp", "coffee.webp")):
        shutil.copy(SAMPLES / source, folder / name)
    lines = [{"file": "고양이.jpg", **ANALYSES}, {"file": "coffee.webp", **{k: None for k in ANALYSES},
                                                 "colour": ANALYSES["colour"]}]
    (folder / "analyses.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines),
                                           encoding="utf-8")
    records = describe_folder(folder, safety, {"고양이": META}, language="ko")
    by_file = {r["file"]: r for r in records}
    assert by_file["고양이.jpg"]["paragraph"] == KOREAN and by_file["고양이.jpg"]["analyses"] == ANALYSES
    assert by_file["coffee.webp"]["paragraph"].startswith("따뜻하고 밝고 선명한 색조가 두드러진다.")
    assert by_file["고양이.jpg"]["features"] == [round(v, 6) for v in analysis_features(ANALYSES).tolist()]
    assert len(by_file["coffee.webp"]["features"]) == FEATURES_LENGTH
    assert "주된 대상은 고양이다." in (folder / "curation.md").read_text(encoding="utf-8")
    catalogue = read_catalogue(tmp_path)  # what Train Text Generator's conditioning reads
    assert catalogue.features.shape == (2, FEATURES_LENGTH) and KOREAN in catalogue.texts
    assert main(["describe", str(folder), "--language", "en"]) == 0
    written = [json.loads(line) for line in (folder / "curation.jsonl").read_text(encoding="utf-8").splitlines()]
    assert written[0]["paragraph"].startswith("Its colour tone is warm")  # no metadata on the command line
    (folder / "analyses.jsonl").write_text('{"file": "고양이.jpg", "colour": [1]}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="analyses.jsonl', line 1: the colour analysis must be its JSON record"):
        describe_folder(folder, safety)
    (folder / "analyses.jsonl").unlink()
    plain = describe_folder(folder, safety)
    assert "analyses" not in plain[0] and "features" not in plain[0]


def test_node_takes_the_analysis_outputs_and_checks_its_writer() -> None:
    from atelier.nodes.captioner import AtelierCurationText

    values = node_defaults(AtelierCurationText, title="Afternoon Light", blocked_words="", language="ko")
    paragraph, record_json, hashtags = AtelierCurationText().write(
        **values, colour_json=json.dumps(ANALYSES["colour"]), objects_json=json.dumps([ANALYSES["objects"]]))
    assert paragraph == ("작품의 제목은 \u201cAfternoon Light\u201d다. 따뜻하고 밝고 선명한 색조가 두드러진다. "
                         "주요 색은 비중 순으로 #C8643C(55%), #F0DCB4(30%), #2C3E50(15%)이다. "
                         "주된 대상은 고양이다. 보조 대상으로 꽃과 나무가 보인다.")
    assert set(json.loads(record_json)["analyses"]) == {"colour", "objects"} and "#고양이" in hashtags
    with pytest.raises(ValueError, match="picture_index 1 is past the 1 record"):
        AtelierCurationText().write(**{**values, "picture_index": 1}, objects_json=json.dumps([ANALYSES["objects"]]))
    with pytest.raises(ValueError, match="writer 'blip2' needs blip2_model"):
        AtelierCurationText().write(**{**values, "writer": "blip2"})
    with pytest.raises(ValueError, match="writer 'seqgan' needs text_model"):
        AtelierCurationText().write(**{**values, "writer": "seqgan"})
    with pytest.raises(ValueError, match="emotion_json is not JSON"):
        AtelierCurationText().write(**values, emotion_json="{")


def test_describe_command_with_the_blip2_and_seqgan_writers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from atelier.cli import main

    folder = tmp_path / "works"
    folder.mkdir()
    shutil.copy(SAMPLES / "chelsea.jpg", folder / "고양이.jpg")
    (folder / "analyses.jsonl").write_text(json.dumps({"file": "고양이.jpg", **ANALYSES}, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    blip_folder = tmp_path / "tiny-blip2"
    blip_folder.mkdir()
    tiny_blip2_folder(blip_folder)
    assert main(["describe", str(folder), "--writer", "blip2", "--blip2", str(blip_folder), "--device", "cpu",
                 "--max-new-tokens", "12"]) == 0
    record = json.loads((folder / "curation.jsonl").read_text(encoding="utf-8"))
    assert record["writer"] == "blip2" and record["prompt"].endswith(QUESTION)  # the tiny window holds no facts
    assert record["analyses"] == ANALYSES  # the record stays the template writer's
    model_path = _text_model(FEATURES_LENGTH).save(tmp_path / "seqgan", "curator")
    assert main(["describe", str(folder), "--writer", "seqgan", "--text-model", str(model_path), "--device",
                 "cpu"]) == 0
    assert json.loads((folder / "curation.jsonl").read_text(encoding="utf-8"))["writer"] == "seqgan"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["describe", str(folder), "--writer", "seqgan"])  # refused before any work
    assert "--writer seqgan needs --text-model" in capsys.readouterr().err
