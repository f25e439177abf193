"""SD 1.5 from single-file checkpoints (the original layout ComfyUI also holds), offline."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.core.sd15 import checkpoint as sc
from atelier.core.sd15.tokenizer import sd15_tokenizer

from helpers import tiny_sd15_parts, to_ldm_checkpoint


@pytest.fixture(scope="module")
def parts_and_checkpoint():
    parts = tiny_sd15_parts()
    return parts, to_ldm_checkpoint(parts)


def _same_outputs(a, b) -> None:
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 768, generator=g)
    image = torch.rand(1, 3, 32, 32, generator=g)
    ids = sd15_tokenizer()(["a photo of a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        t = torch.tensor([10, 900])
        torch.testing.assert_close(a.unet(x, t, cond).sample, b.unet(x, t, cond).sample)
        torch.testing.assert_close(a.vae.encode(image).latent_dist.mean, b.vae.encode(image).latent_dist.mean)
        torch.testing.assert_close(a.vae.decode(x[:1]).sample, b.vae.decode(x[:1]).sample)
        torch.testing.assert_close(a.text_encoder(ids).last_hidden_state, b.text_encoder(ids).last_hidden_state)


def test_safetensors_checkpoint_loads_to_the_same_model(parts_and_checkpoint, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    parts, checkpoint = parts_and_checkpoint
    path = tmp_path / "tiny_sd15.safetensors"
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(path))
    _same_outputs(parts, sc.load_single_file(path))


def test_ckpt_pickle_loads_weights_only(parts_and_checkpoint, tmp_path: Path) -> None:
    parts, checkpoint = parts_and_checkpoint
    path = tmp_path / "tiny_sd15.ckpt"
    torch.save({"state_dict": checkpoint, "global_step": 1}, path)
    _same_outputs(parts, sc.load_single_file(path))


def test_shapes_are_read_from_the_weights(parts_and_checkpoint) -> None:
    _, checkpoint = parts_and_checkpoint
    unet = sc.unet_params(checkpoint)
    assert (unet["model_channels"], unet["channel_mult"], unet["num_res_blocks"]) == (32, [1, 2], 1)
    assert unet["attention_resolutions"] == [1] and unet["num_heads"] == 8
    vae = sc.vae_ddconfig(checkpoint)
    assert (vae["ch"], vae["ch_mult"], vae["num_res_blocks"], vae["z_channels"]) == (32, [1, 2], 1, 4)


def test_tokenizer_is_sd15s() -> None:
    ids = sd15_tokenizer()("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # CLIP's well-known ids for this prompt
    assert len(sd15_tokenizer()("", padding="max_length", max_length=77).input_ids) == 77


@pytest.mark.parametrize(("change", "named"), [
    (lambda sd: sd.update({"conditioner.embedders.0.transformer.x": torch.zeros(1)}), "SDXL"),
    (lambda sd: sd.update({"cond_stage_model.model.ln_final.weight": torch.zeros(1)}), "SD 2.x"),
    (lambda sd: sd.update({"v_pred": torch.zeros(0)}), "v-prediction"),
    (lambda sd: sd.update({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 9, 3, 3)}),
     "9 input channels"),
    (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("first_stage_model.")], "without its VAE"),
    (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("model.diffusion_model.")], "no Stable Diffusion UNet"),
])
def test_other_models_are_refused_by_name(parts_and_checkpoint, tmp_path: Path, change, named: str) -> None:
    from safetensors.torch import save_file

    checkpoint = dict(parts_and_checkpoint[1])
    change(checkpoint)
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(path))
    with pytest.raises(ValueError, match=named) as err:
        sc.load_single_file(path)
    assert "other.safetensors" in str(err.value)


def test_missing_or_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        sc.load_single_file(tmp_path / "nope.safetensors")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="a checkpoint is one of"):
        sc.load_single_file(tmp_path / "model.bin")
