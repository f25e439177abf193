"""Atelier Train LoRA as ComfyUI calls it, with the bridge's two ComfyUI calls (read the loaded
checkpoint's weights; apply a LoRA file) replaced; tests/test_comfyui_integration.py runs the real ones."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from atelier.core.sd15 import lora_file
from atelier.nodes import bridge
from atelier.nodes.lora import AtelierTrainLoRA

from helpers import SAMPLES, as_batch, node_defaults, photo, tiny_sd15_parts, to_ldm_checkpoint

MODEL, CLIP, VAE = object(), object(), object()


@pytest.fixture(scope="module")
def checkpoint() -> dict[str, torch.Tensor]:
    return to_ldm_checkpoint(tiny_sd15_parts())


@pytest.fixture
def comfy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output_dir: Path, checkpoint) -> dict[str, object]:
    """Stand-ins for what ComfyUI's Load Checkpoint holds, and a record of what the node applies."""
    seen: dict[str, object] = {"weights": dict(checkpoint)}

    def sd15_weights(model, clip, vae):
        assert (model, clip, vae) == (MODEL, CLIP, VAE)
        seen["weights_read"] = True
        return dict(seen["weights"])

    def apply_lora(model, clip, path, strength):
        seen["applied"] = (path, strength)
        return "patched model", "patched clip"

    monkeypatch.setattr(bridge, "sd15_weights", sd15_weights)
    monkeypatch.setattr(bridge, "apply_lora", apply_lora)
    monkeypatch.setattr(bridge, "compute_device", lambda choice="auto": torch.device("cpu"))  # tiny models
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("ATELIER_INPUT_DIR", str(tmp_path / "input"))
    shutil.copytree(SAMPLES, tmp_path / "input" / "originals", ignore=shutil.ignore_patterns("*.md"))
    seen["loras"] = tmp_path / "models" / "loras"
    seen["runs"] = output_dir / "atelier" / "lora_runs"
    return seen


def _train(**overrides):
    values = node_defaults(AtelierTrainLoRA, folder="originals", steps=2, rank=4, resolution=64, sample_steps=2,
                           mixed_precision="no", gradient_checkpointing=False, trigger="atl", checkpoint_every=1)
    values.update(overrides)
    return AtelierTrainLoRA().train(MODEL, CLIP, VAE, **values)


def _expected_counts(rank: int, unet_ends: tuple[str, ...], text_ends: tuple[str, ...] = ()) -> dict[str, str]:
    """The parameter counts of the file's metadata from the layer shapes of the tiny SD 1.5 parts: a rank-r LoRA
    on an out x in weight has r * (in + out) parameters (a 1x1 conv counts as such a matrix)."""
    parts = tiny_sd15_parts()
    layers = trainable = targeted = base = 0
    for net, ends in ((parts.unet, unet_ends), (parts.text_encoder, text_ends)):
        if not ends:
            continue
        base += sum(p.numel() for p in net.parameters())
        for name, module in net.named_modules():
            if name.endswith(ends):
                out_dim, in_dim = module.weight.shape[:2]
                layers += 1
                trainable += rank * (in_dim + out_dim)
                targeted += in_dim * out_dim
    return {"atelier_lora_layers": str(layers), "atelier_trainable_params": str(trainable),
            "atelier_targeted_params": str(targeted), "atelier_base_params": str(base)}


def _counts(metadata: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if k.endswith(("_params", "_layers"))}


def test_trains_saves_into_loras_and_applies_the_file(comfy) -> None:
    model, clip, path, loss, samples, report = _train(strength=0.8)
    assert (model, clip) == ("patched model", "patched clip")
    assert Path(path) == comfy["loras"] / "atelier_lora.safetensors" and comfy["applied"] == (Path(path), 0.8)
    tensors, metadata = lora_file.read_lora(Path(path))
    assert any(k.startswith("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q") for k in tensors)
    assert metadata["ss_steps"] == "2" and metadata["ss_num_train_images"] == "4"
    assert len(metadata["ss_base_model_hash"]) == 64
    assert loss.shape[0] == 1 and loss.shape[-1] == 3
    assert samples.shape == (1, 64, 64, 3) and 0.0 <= float(samples.min()) <= float(samples.max()) <= 1.0
    expected = _expected_counts(4, (".to_q", ".to_k", ".to_v", ".to_out.0"))
    assert _counts(metadata) == expected and expected["atelier_lora_layers"] == "32"  # 4 transformer blocks x 8
    trainable, targeted = int(expected["atelier_trainable_params"]), int(expected["atelier_targeted_params"])
    assert report.startswith(f"LoRA trains {trainable:,} parameters in 32 layers instead of their {targeted:,} weights")
    assert f"the base networks have {int(expected['atelier_base_params']):,} parameters" in report
    assert f"wrote {path}" in report and "over 2 steps" in report


def test_trains_under_comfyuis_inference_mode(comfy) -> None:
    # ComfyUI runs every node under torch.inference_mode(), and what it loaded are inference tensors
    with torch.inference_mode():
        comfy["weights"] = {k: v.clone() for k, v in comfy["weights"].items()}
        batch = as_batch(photo("chelsea.jpg", (96, 64)), photo("rocket.png", (96, 64)))
        _, _, path, loss, _, _ = _train(folder="", images=batch, captions="a cat\na rocket")
    assert Path(path).is_file() and loss.shape[0] == 1


def test_text_encoder_lora_reaches_the_file(comfy) -> None:
    _, _, path, _, _, _ = _train(train_text_encoder=True, name="with_te")
    tensors, _ = lora_file.read_lora(Path(path))
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in tensors
    assert any(k.startswith("lora_unet_") for k in tensors)
    assert not any("mlp_fc" in k for k in tensors)  # attention targets: the text encoder's attention only


def test_kohya_default_targets_reach_the_file_with_their_counts(comfy) -> None:
    _, _, path, _, _, report = _train(train_text_encoder=True, targets="kohya_default", name="kohya")
    tensors, metadata = lora_file.read_lora(Path(path))
    assert "lora_te_text_model_encoder_layers_0_mlp_fc2.lora_down.weight" in tensors
    assert "lora_unet_up_blocks_1_attentions_1_proj_out.alpha" in tensors
    assert "lora_unet_up_blocks_1_attentions_1_transformer_blocks_0_ff_net_0_proj.lora_up.weight" in tensors
    expected = _expected_counts(4, (".to_q", ".to_k", ".to_v", ".to_out.0", ".proj_in", ".proj_out", ".ff.net.0.proj",
                                    ".ff.net.2"), ("_proj", ".fc1", ".fc2"))
    assert _counts(metadata) == expected and expected["atelier_lora_layers"] == str(4 * 12 + 6)
    assert metadata["atelier_targets"] == "kohya_default" and " parameters in 54 layers " in report


def test_running_the_graph_again_resumes_the_same_run(comfy) -> None:
    _train()
    _train(steps=3)
    runs = list(comfy["runs"].iterdir())
    assert len(runs) == 1, runs  # same pictures, model and settings: the same run folder, continued
    from atelier.training import checkpoints

    assert checkpoints.load(runs[0] / "checkpoint")["step"] == 3
    _train(rank=2)
    assert len(list(comfy["runs"].iterdir())) == 2  # other settings: a new run


def test_image_batch_with_one_caption_per_line(comfy) -> None:
    batch = as_batch(photo("chelsea.jpg", (96, 64)), photo("chelsea.jpg", (96, 64)))
    _, _, path, _, _, _ = _train(folder="", images=batch, captions="a cat\na cat, close up", name="batch lora")
    assert Path(path) == comfy["loras"] / "batch_lora.safetensors"  # a safe file name
    with pytest.raises(ValueError, match="3 caption lines for 2 images"):
        _train(folder="", images=batch, captions="a\nb\nc")


def test_bad_input_fails_before_any_training(comfy) -> None:
    with pytest.raises(ValueError, match="no training images"):
        _train(folder="")
    with pytest.raises(ValueError, match="does not exist|no readable image"):
        _train(folder="missing")
    with pytest.raises(ValueError, match="QLoRA .* CUDA GPU only"):
        _train(qlora=True)
    assert "weights_read" not in comfy
    comfy["weights"]["conditioner.embedders.0.transformer.x"] = torch.zeros(1)
    with pytest.raises(ValueError, match="SDXL"):
        _train()
    assert not comfy["runs"].exists() and not list(comfy["loras"].glob("*"))


def test_a_rank_too_high_is_a_clear_error(comfy) -> None:
    with pytest.raises(ValueError, match="rank 64 is above"):
        _train(rank=64)
    assert not comfy["runs"].exists() and not list(comfy["loras"].glob("*"))
