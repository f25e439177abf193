"""Virtual data with SD 1.5 as the first model, on tiny random SD parts: the version folder, sidecars and manifest,
seeds, the change prompt and the picture both steering, a LoRA applied while sampling, the disk check and cancel."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.core.dataset.multiply import Original
from atelier.core.sd15 import lora_file
from atelier.core.sd15 import virtual_data as vd
from atelier.core.sd15.embedding_adapter import AdapterConfig, EmbeddingAdapter, LoadedAdapter
from atelier.core.shared.progress import Cancelled

from helpers import CancelAfter, synthetic_picture, tiny_sd15_parts

SIZE = (72, 64)


def originals() -> list[Original]:
    return [Original(torch.from_numpy(synthetic_picture(k, k).astype(np.float32) / 255), f"work_{k}",
                     f"caption {k}", f"work_{k}.png") for k in (0, 3)]


def adapter() -> LoadedAdapter:
    torch.manual_seed(0)
    return LoadedAdapter(EmbeddingAdapter(AdapterConfig(16, tokens=2)).eval(), "tiny")


def embeds() -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(5)), dim=-1)


@pytest.fixture(scope="module")
def draw():
    return vd.diffusers_draw(tiny_sd15_parts(), adapter(), strength=1.0, steps=2, guidance=5.0)


SETTINGS = vd.VirtualDataSettings(changes=("in a forest", "", "at night", " in a forest"), samples=2, width=SIZE[0],
                                  height=SIZE[1], seed=3, trigger="sks")


def test_folder_sidecars_manifest_and_same_seed_same_pixels(tmp_path, draw):
    written = vd.write_virtual_data(originals(), embeds(), SETTINGS, draw, tmp_path, {"steps": 2})
    assert written.folder == tmp_path / "v001"
    names = sorted(p.name for p in written.folder.glob("*.png"))
    assert len(names) == 2 + 2 * 2 * 2 and "work_0__in_a_forest_02.png" in names and "work_3__at_night_01.png" in names
    assert (written.folder / "work_0__at_night_01.txt").read_text(encoding="utf-8") == "sks, at night\n"
    assert (written.folder / "work_3.txt").read_text(encoding="utf-8") == "caption 3\n"  # the original keeps its own
    records = [json.loads(line) for line in written.manifest.read_text(encoding="utf-8").splitlines()]
    virtual = [r for r in records if r["variant"] != "original"]
    assert len(virtual) == 8 and all(r["seed"] is not None for r in virtual)
    first = next(r for r in virtual if r["file"] == "work_0__in_a_forest_01.png")
    assert first["parameters"] == {"change": "in a forest", "prompt": "sks, in a forest", "sample": 1, "width": 72,
                                   "height": 64, "trigger": "sks", "steps": 2}
    assert Image.open(written.folder / first["file"]).size == SIZE
    again = vd.write_virtual_data(originals(), embeds(), SETTINGS, draw, tmp_path, {"steps": 2})
    assert again.folder == tmp_path / "v002"
    assert [r["sha256"] for r in again.records] == [r["sha256"] for r in written.records]
    two = [np.asarray(Image.open(written.folder / f"work_0__in_a_forest_0{k}.png")) for k in (1, 2)]
    assert np.abs(two[0].astype(int) - two[1]).mean() > 1  # the samples of one batch differ


def test_the_change_prompt_and_the_picture_both_change_the_pixels(draw):
    one, size = embeds()[:1], SIZE
    base = draw(one, "sks, in a forest", 11, 1, size)
    assert base.shape == (1, 64, 72, 3) and 0 <= base.min() and base.max() <= 1
    assert torch.equal(draw(one, "sks, in a forest", 11, 1, size), base)
    assert (draw(one, "sks, at night", 11, 1, size) - base).abs().mean() > 1e-3
    assert (draw(embeds()[1:], "sks, in a forest", 11, 1, size) - base).abs().mean() > 1e-3


def test_a_lora_merged_into_the_first_model_changes_what_it_draws(tmp_path):
    parts = tiny_sd15_parts()
    layer = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    g = torch.Generator().manual_seed(2)
    key = lora_file.unet_key(layer)
    tensors = {f"{key}.lora_down.weight": torch.randn(4, 768, generator=g),
               f"{key}.lora_up.weight": torch.randn(32, 4, generator=g), f"{key}.alpha": torch.tensor(4.0)}
    path = lora_file.save_lora(tmp_path, "first", tensors, {})
    before = vd.diffusers_draw(parts, adapter(), steps=2)(embeds()[:1], "a", 1, 1, SIZE)
    weight = parts.unet.get_submodule(layer).weight.clone()
    assert lora_file.apply_file(parts.unet, parts.text_encoder, path, 0.5) == 1
    expected = weight + 0.5 * tensors[f"{key}.lora_up.weight"] @ tensors[f"{key}.lora_down.weight"]
    assert torch.allclose(parts.unet.get_submodule(layer).weight, expected, atol=1e-5)
    after = vd.diffusers_draw(parts, adapter(), steps=2)(embeds()[:1], "a", 1, 1, SIZE)
    assert (after - before).abs().mean() > 1e-3
    bad = lora_file.save_lora(tmp_path, "other", {"lora_unet_no_such_layer.lora_down.weight": torch.ones(1, 1),
                                                   "lora_unet_no_such_layer.lora_up.weight": torch.ones(1, 1)}, {})
    with pytest.raises(ValueError, match="'other.safetensors' does not fit this SD 1.5 model"):
        lora_file.apply_file(parts.unet, parts.text_encoder, bad)


def test_more_pictures_than_the_disk_holds_are_refused_before_drawing(tmp_path, monkeypatch):
    calls = []

    def counting(*args):
        calls.append(args)
        return torch.zeros(2, SIZE[1], SIZE[0], 3)

    need = vd.bytes_needed(SETTINGS.pictures(2), *SIZE)
    assert SETTINGS.pictures(2) == 10 and need >= 10 * 72 * 64 * 3
    free = type("Usage", (), {"free": need - 1})
    monkeypatch.setattr(vd.shutil, "disk_usage", lambda path: free)
    with pytest.raises(OSError, match=r"not enough disk for 10 pictures of 72x64 in .*lower the samples"):
        vd.write_virtual_data(originals(), embeds(), SETTINGS, counting, tmp_path / "new" / "out")
    assert not calls and not (tmp_path / "new").exists()
    free.free = need
    vd.write_virtual_data(originals(), embeds(), SETTINGS, counting, tmp_path / "out")
    assert len(calls) == 4


def test_cancel_leaves_no_version_folder_and_bad_settings_are_refused(tmp_path, draw):
    with pytest.raises(Cancelled):
        vd.write_virtual_data(originals(), embeds(), SETTINGS, draw, tmp_path, progress=CancelAfter(1))
    assert not list(tmp_path.glob("v*")) and not list(tmp_path.glob(".partial*"))
    with pytest.raises(ValueError, match="at least one change prompt"):
        vd.VirtualDataSettings(changes=("", " "))
    with pytest.raises(ValueError, match="multiples of 8"):
        vd.VirtualDataSettings(changes=("a",), width=100)
    with pytest.raises(ValueError, match="2 originals but embeddings"):
        vd.write_virtual_data(originals(), embeds()[:1], SETTINGS, draw, tmp_path)
    assert vd.parse_changes("in a forest\n\n  at night \n숲 속에서") == ("in a forest", "at night", "숲 속에서")


def test_the_command_draws_from_a_checkpoint_file_with_a_first_lora_and_refuses_another_encoder(tmp_path, capsys):
    from safetensors.torch import save_file

    from atelier.cli import main
    from atelier.core.audio.image_embedding import clip_embedder, probe_embedding
    from atelier.core.curator.clip_model import load_clip
    from atelier.core.sd15.embedding_adapter import save_adapter

    from helpers import tiny_clip_folder, to_ldm_checkpoint

    checkpoint = tmp_path / "tiny_sd15.safetensors"
    save_file({k: v.contiguous() for k, v in to_ldm_checkpoint(tiny_sd15_parts()).items()}, str(checkpoint))
    clip_folder = tiny_clip_folder(tmp_path / "tiny-clip")
    clip = clip_embedder(load_clip(clip_folder))
    adapter_file = save_adapter(tmp_path, "style", adapter().adapter, clip.name, {}, probe_embedding(clip))
    folder = tmp_path / "originals"
    folder.mkdir()
    for original in originals():
        Image.fromarray((original.image.numpy() * 255).astype(np.uint8)).save(folder / f"{original.stem}.png")
    key = lora_file.unet_key("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v")
    g = torch.Generator().manual_seed(4)
    lora = lora_file.save_lora(tmp_path, "first", {f"{key}.lora_down.weight": torch.randn(2, 768, generator=g),
                                                    f"{key}.lora_up.weight": torch.randn(32, 2, generator=g)}, {})
    changes = tmp_path / "changes.txt"
    changes.write_text("at night\n\n", encoding="utf-8")
    args = ["virtual-data", str(folder), "--model", str(checkpoint), "--adapter", str(adapter_file), "--clip",
            str(clip_folder), "--change", "in a forest", "--changes-file", str(changes), "--samples", "1", "--steps",
            "2", "--width", "64", "--height", "64", "--trigger", "sks", "--output", str(tmp_path / "out"),
            "--device", "cpu", "--no-original"]
    assert main([*args, "--lora", str(lora)]) == 0
    assert "merged first.safetensors into 1 layers" in capsys.readouterr().out
    written = tmp_path / "out" / "atelier" / "virtual" / "v001"
    assert sorted(p.name for p in written.glob("*.txt")) == ["work_0__at_night_01.txt", "work_0__in_a_forest_01.txt",
                                                             "work_3__at_night_01.txt", "work_3__in_a_forest_01.txt"]
    record = json.loads((written / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert record["parameters"]["lora"] == "first.safetensors"
    assert record["parameters"]["adapter"] == "style.safetensors"
    assert main(args) == 0  # without the first LoRA: other pixels, same seeds
    plain = tmp_path / "out" / "atelier" / "virtual" / "v002"
    with_lora = np.asarray(Image.open(written / "work_0__in_a_forest_01.png"), dtype=float)
    assert np.abs(np.asarray(Image.open(plain / "work_0__in_a_forest_01.png"), dtype=float) - with_lora).mean() > 0.5
    capsys.readouterr()
    other = save_adapter(tmp_path, "for_wider", EmbeddingAdapter(AdapterConfig(32, tokens=2)), "a 32-d encoder", {})
    assert main([*args[:4], "--adapter", str(other), *args[6:]]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "the --adapter for_wider.safetensors was trained with the image encoder 'a 32-d encoder' (32-d)" in err
    assert f"{clip.name!r} (16-d)" in err
    assert not (tmp_path / "out" / "atelier" / "virtual" / "v003").exists()
