"""Korean queries, captions, pairs and sentences through a Korean-English dual encoder: Retrieve Images, Evaluate
Retrieval, Score Sentences and their commands; an English-only CLIP answers Korean text with a warning."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.core.curator import retrieval
from atelier.core.curator.clip_model import load_clip
from atelier.core.curator.image_index import index_folder
from atelier.core.dataset.image_files import load_image
from atelier.nodes.curator import AtelierEvaluateRetrieval, AtelierRetrieveImages, AtelierScoreSentences

from helpers import synthetic_picture, tiny_clip_folder, tiny_dual_encoder_folder

QUERY = "바닷가 마을의 오래된 집"
CAPTIONS = ["바닷가 마을의 오래된 집", "고양이가 창밖을 바라본다", "빨간 집", "파란 바다", "초록 그림"]
SENTENCES = ["고양이가 창밖을 바라본다", "바닷가 마을의 오래된 집", "a red house by the sea", "파란 바다 그림"]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    return {"dual": tiny_dual_encoder_folder(root / "이중 인코더"), "english": tiny_clip_folder(root / "clip")}


@pytest.fixture(scope="module")
def dual(encoders: dict[str, Path]) -> Any:
    return load_clip(encoders["dual"])


@pytest.fixture(scope="module")
def english(encoders: dict[str, Path]) -> Any:
    return load_clip(encoders["english"])


@pytest.fixture
def pictures(tmp_path: Path, output_dir: Path) -> Path:
    """Five pictures with Korean names, each with a Korean caption sidecar."""
    folder = tmp_path / "웹툰 장면"
    folder.mkdir()
    for k, caption in enumerate(CAPTIONS):
        Image.fromarray(synthetic_picture(k, size=40)).save(folder / f"장면_{k}.png")
        (folder / f"장면_{k}.txt").write_text(caption, encoding="utf-8")
    return folder


def _unit_text(clip: Any, text: str) -> torch.Tensor:
    """The text embedding straight from transformers, through the tower's own tokenizer."""
    tokens = clip.tokenizer([text], padding=True, return_tensors="pt")
    with torch.inference_mode():
        features = clip.model.get_text_features(**tokens)
    features = getattr(features, "pooler_output", features)
    return torch.nn.functional.normalize(features.float(), dim=-1)[0]


def test_a_korean_query_retrieves_through_the_text_towers_tokenizer(dual: Any, pictures: Path) -> None:
    assert dual.tokenizer.unk_token_id not in dual.tokenizer(QUERY)["input_ids"]  # read, not unknown
    images, results = AtelierRetrieveImages().retrieve(dual, str(pictures), QUERY, 3, 64, 2, False)
    lines = [line.split("\t") for line in results.split("\n")]
    assert images.shape == (3, 64, 64, 3) and [rank for rank, _, _ in lines] == ["1", "2", "3"]
    index = index_folder(dual, pictures, None)
    expected = (index.embeddings @ _unit_text(dual, QUERY)).tolist()
    best = sorted(range(len(expected)), key=lambda i: -expected[i])[:3]
    assert [Path(path).name for _, _, path in lines] == [index.files[i].name for i in best]
    assert [float(score) for _, score, _ in lines] == pytest.approx([expected[i] for i in best], abs=1e-4)


def test_a_korean_query_to_an_english_only_clip_comes_with_a_warning(english: Any, pictures: Path) -> None:
    node = AtelierRetrieveImages()
    _, results = node.retrieve(english, str(pictures), QUERY, 2, 64, 32, False)
    warning, *ranked = results.split("\n")
    assert warning.startswith("warning: the query is in Korean, but 'clip' reads en only") and len(ranked) == 2
    assert "Korean-English dual encoder" in warning
    _, results = node.retrieve(english, str(pictures), "an old house by the sea", 2, 64, 32, False)
    assert not results.startswith("warning") and len(results.split("\n")) == 2


def test_evaluate_retrieval_with_korean_captions_and_a_korean_pairs_file(dual: Any, english: Any, pictures: Path,
                                                                        tmp_path: Path) -> None:
    node = AtelierEvaluateRetrieval()
    index = index_folder(dual, pictures, None)
    queries = torch.stack([_unit_text(dual, caption) for caption in CAPTIONS])
    ranks = retrieval.ranks(queries, index.embeddings, list(range(len(CAPTIONS))))
    mrrs = []
    for k in (1, 3, 5):
        mrr, recall, report = node.evaluate(dual, str(pictures), k, 32)
        expected = retrieval.evaluate(ranks, k)
        assert (mrr, recall) == pytest.approx((expected.mrr, expected.recall), abs=1e-6)
        assert report.splitlines()[0] == expected.report()  # no warning: the tower reads Korean
        assert report.splitlines()[1].startswith("exact search")
        mrrs.append(mrr)
    assert mrrs[0] <= mrrs[1] <= mrrs[2]
    pairs = tmp_path / "쌍.csv"
    pairs.write_text("text,image\n\"빨간 집, 바닷가\",장면_2.png\n파란 바다,장면_3.png\n", encoding="utf-8")
    mrr, _, report = node.evaluate(dual, str(pictures), 5, 32, str(pairs))
    targets = [index.files.index(pictures / name) for name in ("장면_2.png", "장면_3.png")]
    by_hand = retrieval.ranks(torch.stack([_unit_text(dual, "빨간 집, 바닷가"), _unit_text(dual, "파란 바다")]),
                              index.embeddings, targets)
    assert mrr == pytest.approx(retrieval.evaluate(by_hand, 5).mrr, abs=1e-6) and "over 2 queries" in report
    _, _, report = node.evaluate(english, str(pictures), 5, 32, str(pairs))
    assert report.startswith("warning: the pairs' text has 2 of 2 texts in Korean")


def test_score_sentences_ranks_agree_with_a_direct_cosine(dual: Any) -> None:
    picture = torch.from_numpy(synthetic_picture(3, size=40)).float()[None] / 255.0
    table, scores_json, chart = AtelierScoreSentences().score(dual, picture, "\n".join(SENTENCES) + "\n\n", "softmax",
                                                              "first")
    cosine = dual.embed_texts(SENTENCES) @ dual.embed_images(picture)[0]
    probability = torch.softmax(cosine.double() * dual.logit_scale, dim=0)
    order = sorted(range(len(SENTENCES)), key=lambda i: -float(cosine[i]))
    (record,) = json.loads(scores_json)
    assert [row["sentence"] for row in record["sentences"]] == [SENTENCES[i] for i in order]
    assert [row["rank"] for row in record["sentences"]] == [1, 2, 3, 4]
    assert [row["cosine"] for row in record["sentences"]] == pytest.approx([float(cosine[i]) for i in order], abs=1e-5)
    assert [row["probability"] for row in record["sentences"]] == pytest.approx(
        [float(probability[i]) for i in order], abs=1e-5)
    header, *rows = table.split("\n")
    assert header == "rank\tcosine\tprobability\tsentence" and [r.split("\t")[3] for r in rows] == \
        [SENTENCES[i] for i in order]
    assert chart.shape[0] == 1 and chart.shape[-1] == 3 and chart.shape[2] == 720
    assert float(chart.min()) < 0.5 < float(chart.max())  # bars drawn on white


def test_score_sentences_for_each_picture_and_bad_input(dual: Any, english: Any) -> None:
    batch = torch.from_numpy(synthetic_picture(1, size=32)[None].repeat(2, 0)).float() / 255.0
    batch[1] = 1.0 - batch[1]
    node = AtelierScoreSentences()
    table, scores_json, chart = node.score(dual, batch, "\n".join(SENTENCES), "cosine", "each")
    records = json.loads(scores_json)
    assert [r["picture"] for r in records] == [0, 1] and chart.shape[0] == 2
    assert table.startswith("picture 1\nrank\t") and "\n\npicture 2\nrank\t" in table
    first, _, _ = node.score(dual, batch, "\n".join(SENTENCES), "cosine", "first")
    assert first == table.split("\n\n")[0].removeprefix("picture 1\n")
    with pytest.raises(ValueError, match="no sentences: write one sentence per line"):
        node.score(dual, batch, " \n\n", "softmax", "first")
    table, _, _ = node.score(english, batch, "\n".join(SENTENCES), "softmax", "first")
    assert table.startswith("warning: the sentence list has 3 of 4 texts in Korean")


def test_the_commands_take_korean_text(encoders: dict[str, Path], dual: Any, pictures: Path, output_dir: Path,
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = tmp_path / "문장.txt"
    lines.write_text("\n".join(SENTENCES[:2]) + "\n", encoding="utf-8")
    picture = pictures / "장면_0.png"
    scores, chart = tmp_path / "점수.json", tmp_path / "차트.png"
    assert main(["score-sentences", str(picture), "--sentences", str(lines), "--sentence", SENTENCES[2], "--clip",
                 str(encoders["dual"]), "--device", "cpu", "--json", str(scores), "--chart", str(chart)]) == 0
    (record,) = json.loads(scores.read_text(encoding="utf-8"))
    image = load_image(picture)[None]
    _, expected, _ = AtelierScoreSentences().score(dual, image, "\n".join(SENTENCES[:3]), "softmax", "first")
    assert record["file"] == str(picture) and record["sentences"] == json.loads(expected)[0]["sentences"]
    assert Image.open(chart).size[0] == 720 and SENTENCES[0] in capsys.readouterr().out
    # no sentence, or an unreadable file: said before any model loads (this model folder does not exist)
    assert main(["score-sentences", str(picture), "--sentences", str(tmp_path / "없음.txt"), "--clip",
                 str(tmp_path / "no-model")]) == 2
    assert "cannot read --sentences" in capsys.readouterr().err
    (tmp_path / "빈.txt").write_text("\n \n", encoding="utf-8")
    assert main(["score-sentences", str(picture), "--sentences", str(tmp_path / "빈.txt"), "--clip",
                 str(tmp_path / "no-model")]) == 2
    assert "no sentences: write one sentence per line" in capsys.readouterr().err
    assert main(["retrieve", str(pictures), QUERY, "--clip", str(encoders["dual"]), "--device", "cpu", "--top-k", "2",
                 "--output", str(output_dir)]) == 0
    assert len(capsys.readouterr().out.strip().split("\n")) == 2
    assert main(["label", str(pictures), "--clip", str(encoders["dual"]), "--device", "cpu", "--taxonomy", "scenes",
                 "--output", str(output_dir), "--language", "ko"]) == 0
    assert "prompts: en+ko (the text tower reads English and Korean)" in capsys.readouterr().err
