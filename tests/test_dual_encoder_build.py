"""Building a bilingual dual encoder from a text model folder and a CLIP (vision) folder."""
from __future__ import annotations

import pytest
import torch

from atelier.core.curator import clip_model
from atelier.core.curator.dual_encoder import build_dual_encoder
from atelier.core.shared.hf_folders import ModelFolderError

from helpers import tiny_clip_folder, tiny_text_tower_folder

SENTENCES = ["바닷가 마을의 오래된 집", "a red house by the sea"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    return tiny_text_tower_folder(root / "다국어-bert"), tiny_clip_folder(root / "clip")


def test_towers_keep_their_weights_and_meet_in_new_projections(parts):
    from transformers import BertModel

    text_folder, clip_folder = parts
    built, report = build_dual_encoder(text_folder, clip_folder, projection_dim=512, seed=3)
    assert built.dim == 512 and built.kind == "vision-text-dual-encoder" and built.languages == ("en", "ko")
    tokens = built.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.inference_mode():
        own = BertModel.from_pretrained(text_folder).eval()(**tokens).pooler_output
        inside = built.model.text_model(**tokens).pooler_output
    assert torch.allclose(own, inside, atol=1e-6)  # the pretrained text tower, not a fresh one
    original = clip_model.load_clip(clip_folder).model.vision_model.embeddings.patch_embedding.weight
    assert torch.equal(built.model.vision_model.embeddings.patch_embedding.weight, original)
    assert "text tower BertModel 24-d, vision tower CLIPVisionModel 32-d, joined at 512-d" in report
    assert built.embed_texts(SENTENCES).shape == (2, 512)


def test_projections_are_seeded(parts):
    first = build_dual_encoder(*parts, projection_dim=8, seed=5)[0].model.text_projection.weight
    again = build_dual_encoder(*parts, projection_dim=8, seed=5)[0].model.text_projection.weight
    other = build_dual_encoder(*parts, projection_dim=8, seed=6)[0].model.text_projection.weight
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_the_global_generator_is_left_as_it_was(parts):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_dual_encoder(*parts, projection_dim=8)
    assert torch.equal(torch.rand(3), expected)


def test_a_built_encoder_saves_as_a_folder_the_loaders_read(tmp_path, parts):
    built, _ = build_dual_encoder(*parts, projection_dim=8, seed=1)
    loaded = clip_model.load_clip(clip_model.save_clip(built, tmp_path / "ko-en"))
    assert loaded.kind == "vision-text-dual-encoder" and loaded.languages == ("en", "ko")
    assert torch.allclose(loaded.embed_texts(SENTENCES), built.embed_texts(SENTENCES), atol=1e-6)


def test_wrong_parts_are_refused_naming_the_folder(tmp_path, parts):
    text_folder, clip_folder = parts
    with pytest.raises(ModelFolderError, match="not a text tower"):
        build_dual_encoder(clip_folder, clip_folder)
    with pytest.raises(ModelFolderError, match="'bert' model, not a vision tower"):
        build_dual_encoder(text_folder, text_folder)
    bare = tiny_text_tower_folder(tmp_path / "bare")
    (bare / "vocab.txt").unlink()
    for name in ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        (bare / name).unlink(missing_ok=True)
    with pytest.raises(ModelFolderError, match="has no tokenizer"):
        build_dual_encoder(bare, clip_folder)


def test_the_node_builds_saves_and_load_clip_lists_it(tmp_path, monkeypatch, parts):
    import shutil

    from atelier.nodes.curator import AtelierBuildDualEncoder, AtelierLoadCLIP

    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path))
    shutil.copytree(parts[0], tmp_path / "atelier" / "text_towers" / "mbert")
    shutil.copytree(parts[1], tmp_path / "atelier" / "clip" / "tiny")
    built, report = AtelierBuildDualEncoder().build("mbert", "tiny", 16, 0, "한영 인코더", "fp32", "cpu")
    saved = tmp_path / "atelier" / "clip" / "한영_인코더"
    assert report.endswith(f"saved as {saved}") and "joined at 16-d" in report
    assert "한영_인코더" in AtelierLoadCLIP.INPUT_TYPES()["required"]["model"][0]
    loaded = AtelierLoadCLIP().load("한영_인코더", "fp32", "cpu")[0]
    assert torch.allclose(loaded.embed_texts(SENTENCES), built.embed_texts(SENTENCES), atol=1e-6)
    # a taken name gets _2, and the first encoder stays as it was
    again, report = AtelierBuildDualEncoder().build("mbert", "tiny", 8, 1, "한영 인코더", "fp32", "cpu")
    assert report.endswith(f"saved as {saved}_2") and again.dim == 8
    assert AtelierLoadCLIP().load("한영_인코더", "fp32", "cpu")[0].dim == 16

def test_encoder_build_command(tmp_path, monkeypatch, capsys, parts):
    from atelier.cli import main

    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "models"))
    args = ["encoder-build", "--text", str(parts[0]), "--vision", str(parts[1]), "--name", "ko-en",
            "--projection-dim", "8", "--device", "cpu"]
    assert main(args) == 0
    assert "joined at 8-d" in capsys.readouterr().out
    assert clip_model.load_clip(tmp_path / "models" / "atelier" / "clip" / "ko-en").dim == 8
    assert main(args) == 0  # taken: written beside it as ko-en_2, the first one untouched
    assert capsys.readouterr().out.strip().endswith("ko-en_2")
    assert clip_model.load_clip(tmp_path / "models" / "atelier" / "clip" / "ko-en").dim == 8
