"""Panels that follow the story: each line's closest picture of a folder, through a tiny CLIP, checked against the
embeddings computed directly; distinct mode, the crop to the panel size, the node and the CLI, and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.core.curator.clip_model import load_clip
from atelier.core.dataset.image_files import ImageFolderError, list_images, load_image
from atelier.core.dataset.preprocess import center_crop, resize
from atelier.core.story import panel_guides as pg

from helpers import CancelAfter, synthetic_picture, tiny_clip_folder

LINES = ["a small boat leaves the harbour at dawn.", "작은 배가 새벽 바다로 나아간다.", "the sea is calm and grey.",
         "고양이가 창가에서 잠든다.", "a red kite over the hills."]
SIZES = [(40, 24), (24, 40), (32, 32), (48, 30), (30, 30), (36, 28)]  # (width, height)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_clip_folder(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="module")
def clip(clip_folder: Path):
    return load_clip(clip_folder, "cpu", "fp32")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pictures")
    for kind, (width, height) in enumerate(SIZES):
        image = synthetic_picture(kind, seed=kind, size=max(width, height))[:height, :width]
        Image.fromarray(image).save(folder / f"그림_{kind}.png")
    return folder


def _direct_scores(clip, folder: Path, lines: list[str]) -> tuple[list[Path], torch.Tensor]:
    """Cosine of every line with every picture, from the model's towers called one picture at a time."""
    files = list_images(folder)
    images = torch.cat([clip.embed_images([load_image(f)]) for f in files])
    return files, clip.embed_texts(lines) @ images.T


def test_each_line_gets_its_nearest_picture(clip, pictures: Path, tmp_path: Path) -> None:
    found = pg.panel_guides(clip, LINES, pictures, tmp_path / "cache", (64, 48))
    files, scores = _direct_scores(clip, pictures, LINES)
    best = scores.argmax(dim=1)
    assert [g.file for g in found.guides] == [files[row] for row in best.tolist()]
    torch.testing.assert_close(torch.tensor([g.score for g in found.guides]), scores.max(dim=1).values,
                               rtol=0, atol=1e-5)
    assert [g.line for g in found.guides] == LINES
    assert found.pictures.shape == (len(LINES), 48, 64, 3) and found.pictures.dtype == torch.float32
    for guide, picture in zip(found.guides, found.pictures):
        torch.testing.assert_close(picture, pg.fill_crop(load_image(guide.file), 64, 48))
    again = pg.panel_guides(clip, LINES, pictures, tmp_path / "cache", (64, 48))
    assert (again.index.encoded, again.index.cached) == (0, len(SIZES))  # the second story reads the cache
    assert [g.file for g in again.guides] == [g.file for g in found.guides]


def test_distinct_never_repeats_and_each_line_takes_the_best_left(clip, pictures: Path, tmp_path: Path) -> None:
    lines = LINES + ["one more line to fill the folder."]
    found = pg.panel_guides(clip, lines, pictures, None, (32, 32), distinct=True)
    files, scores = _direct_scores(clip, pictures, lines)
    chosen = [files.index(g.file) for g in found.guides]
    assert sorted(chosen) == list(range(len(files)))  # as many lines as pictures: every picture once
    for n, row in enumerate(chosen):
        left = [r for r in range(len(files)) if r not in chosen[:n]]
        assert row == max(left, key=lambda r: scores[n, r].item())


def test_choose_pictures_on_one_query_repeated() -> None:
    images = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]]), dim=1)
    query = torch.tensor([[1.0, 0.0]]).expand(4, 2)
    assert [row for row, _ in pg.choose_pictures(query, images, distinct=False)] == [0, 0, 0, 0]
    chosen = pg.choose_pictures(query, images, distinct=True)
    assert [row for row, _ in chosen] == [0, 1, 3, 2]  # by falling cosine 1, 0.8, 0.6, 0
    assert [round(score, 6) for _, score in chosen] == [1.0, 0.8, 0.6, 0.0]
    with pytest.raises(ValueError, match="5 story lines but only 4 readable"):
        pg.choose_pictures(torch.tensor([[1.0, 0.0]]).expand(5, 2), images, distinct=True)


def test_fill_crop_covers_the_panel_and_crops_the_middle() -> None:
    image = torch.rand(20, 40, 3, generator=torch.Generator().manual_seed(0))
    out = pg.fill_crop(image, 16, 16)  # scaled to 32 x 16, then its middle 16 columns
    torch.testing.assert_close(out, center_crop(resize(image[None], 32, 16), 16, 16)[0])
    assert torch.equal(pg.fill_crop(image, 40, 20), image)
    assert pg.fill_crop(image, 10, 30).shape == (30, 10, 3)


def test_story_lines_from_a_list_or_a_text() -> None:
    assert pg.story_lines(["첫 문장.", "second line. "]) == ["첫 문장.", "second line."]
    assert pg.story_lines(["첫 문장.\n\n  second line.\n"]) == ["첫 문장.", "second line."]


def test_bad_input_fails_before_any_picture_is_embedded(clip, pictures: Path, tmp_path: Path) -> None:
    progress = CancelAfter(-1)  # counts what is embedded; never cancels
    with pytest.raises(ValueError, match="no story lines"):
        pg.panel_guides(clip, ["", "  "], pictures, None, (32, 32), progress=progress)
    with pytest.raises(ValueError, match="7 story lines but only 6 picture file"):
        pg.panel_guides(clip, LINES + ["six", "seven"], pictures, None, (32, 32), distinct=True, progress=progress)
    with pytest.raises(ValueError, match="at least 1 x 1"):
        pg.panel_guides(clip, LINES, pictures, None, (0, 32), progress=progress)
    assert progress.done == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageFolderError, match="holds no image"):
        pg.panel_guides(clip, LINES, empty, None, (32, 32))
    with pytest.raises(ImageFolderError, match="does not exist"):
        pg.panel_guides(clip, LINES, tmp_path / "nowhere", None, (32, 32))


def test_a_cancel_stops_the_indexing(clip, pictures: Path) -> None:
    from atelier.core.shared.progress import Cancelled

    with pytest.raises(Cancelled):
        pg.panel_guides(clip, LINES, pictures, None, (32, 32), batch_size=2, progress=CancelAfter(2))


def test_node_gives_one_guide_per_line_as_a_list_and_a_batch(clip, pictures: Path, output_dir: Path) -> None:
    from atelier.nodes.story import AtelierStoryPanelGuides

    node = AtelierStoryPanelGuides()
    lines = LINES[:3]  # as Continue Story sends its lines: a list
    guides, batch, report = node.guide([clip], lines, [str(pictures)], [64], [48], [True], [4])
    assert len(guides) == 3 and all(g.shape == (1, 48, 64, 3) for g in guides)
    assert batch.shape == (3, 48, 64, 3) and torch.equal(torch.cat(guides), batch)
    rows = report.splitlines()
    assert [row.split("\t")[3] for row in rows[:3]] == lines
    assert len({row.split("\t")[2] for row in rows[:3]}) == 3 and rows[3].startswith("6 picture(s)")
    direct = pg.panel_guides(clip, lines, pictures, None, (64, 48), distinct=True)
    assert torch.equal(batch, direct.pictures)
    typed, _, _ = node.guide([clip], ["\n".join(lines)], [str(pictures)], [64], [48], [True], [4])  # one text
    assert torch.equal(torch.cat(typed), batch)
    assert (output_dir / "atelier" / "clip_cache").is_dir()  # the curator's cache, shared with Retrieve Images
    assert AtelierStoryPanelGuides.INPUT_IS_LIST and AtelierStoryPanelGuides.OUTPUT_IS_LIST == (True, False, False)


def test_cli_writes_the_guides_and_a_json_report(clip, clip_folder: Path, pictures: Path, tmp_path: Path,
                                                capsys) -> None:
    from atelier.cli import main

    story = tmp_path / "story.txt"
    story.write_text("\n".join(LINES[:4]) + "\n", encoding="utf-8")
    out = tmp_path / "guides"
    args = ["--clip", str(clip_folder), "--device", "cpu", "--precision", "fp32", "--output", str(tmp_path / "o")]
    assert main(["story-panels", str(pictures), "--lines", str(story), "--out-dir", str(out), "--width", "40",
                 "--height", "24", "--distinct", *args]) == 0
    report = json.loads((out / "panels.json").read_text(encoding="utf-8"))
    direct = pg.panel_guides(clip, LINES[:4], pictures, None, (40, 24), distinct=True)
    assert [p["line"] for p in report["panels"]] == LINES[:4]
    assert [Path(p["file"]) for p in report["panels"]] == [g.file for g in direct.guides]
    assert [p["guide"] for p in report["panels"]] == ["01.png", "02.png", "03.png", "04.png"]
    for record, picture in zip(report["panels"], direct.pictures):
        saved = torch.from_numpy(np.array(Image.open(out / record["guide"]))).float() / 255
        assert saved.shape == (24, 40, 3)
        assert (saved - picture).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only
    assert "wrote 4 guide(s)" in capsys.readouterr().out
    assert main(["story-panels", str(pictures), "--line", "하나", "--line", "two", "--out-dir", str(out), *args]) == 0
    assert len(json.loads((out / "panels.json").read_text(encoding="utf-8"))["panels"]) == 2
    assert main(["story-panels", str(pictures), "--lines", str(tmp_path / "none.txt"), "--out-dir", str(out),
                 *args]) == 2
    assert "cannot read --lines" in capsys.readouterr().err
