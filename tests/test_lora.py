"""LoRA training on a tiny SD-shaped UNet, and the kohya file ComfyUI's LoraLoader reads."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from atelier.core.sd15 import lora_file
from atelier.core.shared import state_dicts
from atelier.core.shared.progress import Cancelled
from atelier.training.loop import TrainingDiverged
from atelier.training.sd15 import lora_trainer as lt
from atelier.training.sd15.latents import Bucket, TrainData

from helpers import CancelAfter, tiny_data, tiny_unet

DATA = Path(__file__).parent / "data"


def _forward(unet, data: TrainData, train_mode: bool = False) -> torch.Tensor:
    unet.train(train_mode)
    b = data.buckets[0]
    with torch.no_grad():
        return unet(b.latents, torch.tensor([10, 500, 900, 999]), encoder_hidden_states=b.conditioning).sample


def test_zero_initialised_lora_leaves_the_output_unchanged() -> None:
    data = tiny_data()
    unet = tiny_unet()
    before = _forward(unet, data)
    lt.add_lora(unet, lt.TrainConfig(rank=4, targets="all_linear_and_conv"))
    assert torch.equal(_forward(unet, data), before)


def test_loss_falls_when_overfitting_four_images(tmp_path: Path) -> None:
    config = lt.TrainConfig(rank=4, alpha=4, lr=1e-2, steps=100, batch_size=4, seed=3, checkpoint_every=1000,
                            targets="all_linear_and_conv")
    result = lt.train_lora(tiny_unet(), tiny_data(), config, tmp_path)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)


def test_saved_file_loads_into_a_fresh_model_and_reproduces_it(tmp_path: Path) -> None:
    config = lt.TrainConfig(rank=4, alpha=2.0, lr=1e-2, steps=5, seed=1, targets="all_linear_and_conv")
    unet = tiny_unet()
    lt.train_lora(unet, tiny_data(), config, tmp_path / "run")
    tensors = lora_file.kohya_state_dict(unet)
    path = tmp_path / "my.safetensors"
    state_dicts.write_safetensors(path, tensors, state_dicts.metadata_strings({"ss_network_alpha": 2.0, "rank": 4}))
    loaded, metadata = lora_file.read_lora(path)
    assert metadata == {"ss_network_alpha": "2.0", "rank": "4"}
    alphas = {v.item() for k, v in loaded.items() if k.endswith(".alpha")}
    assert alphas == {2.0}  # the true alpha, not the rank
    fresh = tiny_unet()
    patched = lora_file.merge_into(fresh, loaded)
    assert patched == len(list(lora_file.lora_modules(unet)))
    assert torch.allclose(_forward(fresh, tiny_data()), _forward(unet, tiny_data()), atol=1e-5)


def test_every_unet_key_is_one_comfyui_maps_for_sd15() -> None:
    """On the real SD 1.5 UNet layout (meta tensors: no memory), with every layer kind targeted."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)  # SD 1.5's config
    lt.add_lora(unet, lt.TrainConfig(rank=4, targets="all_linear_and_conv"))
    names = {lora_file.unet_key(path) for path, _ in lora_file.lora_modules(unet)}
    comfy = set(json.loads((DATA / "comfyui_sd15_unet_lora_names.json").read_text())["names"])
    assert len(names) > 200 and names <= comfy, sorted(names - comfy)[:5]
    attention = {lora_file.unet_key(p) for p, _ in lora_file.lora_modules(unet) if ".attn" in p}
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in attention


def test_text_encoder_names_follow_comfyui_whatever_the_transformers_layout() -> None:
    assert (lora_file.text_encoder_key("text_model.encoder.layers.11.self_attn.q_proj")
            == "lora_te_text_model_encoder_layers_11_self_attn_q_proj")
    assert lora_file.text_encoder_key("encoder.layers.0.mlp.fc2") == "lora_te_text_model_encoder_layers_0_mlp_fc2"
    with pytest.raises(ValueError, match="not a CLIP encoder layer"):
        lora_file.text_encoder_key("text_model.embeddings.token_embedding")


def _lora_weights(unet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unet.state_dict().items() if "lora_" in k}


def test_resume_equals_a_run_that_never_stopped(tmp_path: Path) -> None:
    config = lt.TrainConfig(rank=4, lr=1e-2, steps=6, checkpoint_every=2, seed=5, dropout=0.1, grad_accum=2,
                            scheduler="cosine", warmup_steps=2)
    straight = tiny_unet()
    lt.train_lora(straight, tiny_data(caption_dropout=0.5), config, tmp_path / "a")
    with pytest.raises(Cancelled):
        lt.train_lora(tiny_unet(), tiny_data(caption_dropout=0.5), config, tmp_path / "b", CancelAfter(3))
    resumed = tiny_unet()
    result = lt.train_lora(resumed, tiny_data(caption_dropout=0.5), config, tmp_path / "b")
    assert result.resumed_from == 3  # the cancel kept step 3, between regular checkpoints
    a, b = _lora_weights(straight), _lora_weights(resumed)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)


def tiny_text_encoder(seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=5))


def tiny_token_data(n: int = 4, caption_dropout: float = 0.0) -> TrainData:
    g = torch.Generator().manual_seed(1)
    return TrainData([Bucket(torch.randn(n, 4, 8, 8, generator=g), torch.randint(0, 50, (n, 5), generator=g),
                             torch.arange(n))],
                     torch.zeros(5, dtype=torch.long), caption_dropout)


def test_text_encoder_lora_trains_saves_under_comfyui_names_and_reproduces(tmp_path: Path) -> None:
    config = lt.TrainConfig(rank=4, alpha=2.0, lr=1e-2, text_encoder_lr=1e-2, steps=4, seed=2,
                            train_text_encoder=True)
    unet, text = tiny_unet(), tiny_text_encoder()
    lt.train_lora(unet, tiny_token_data(), config, tmp_path / "run", text_encoder=text)
    trained_b = [m.lora_B["default"].weight for _, m in lora_file.lora_modules(text)]
    assert len(trained_b) == 8 and all(w.abs().sum() > 0 for w in trained_b)  # q, k, v, out of 2 layers
    tensors = lora_file.kohya_state_dict(unet, text)
    te_keys = {k.rsplit(".", 2)[0] for k in tensors if k.startswith("lora_te_")}
    assert "lora_te_text_model_encoder_layers_1_self_attn_out_proj" in te_keys and len(te_keys) == 8
    ids = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(3))
    text.eval()
    with torch.no_grad():
        expected = text(ids).last_hidden_state
        fresh = tiny_text_encoder()
        te_only = {k: v for k, v in tensors.items() if k.startswith("lora_te_")}
        assert lora_file.merge_into(fresh, te_only, to_key=lora_file.text_encoder_key) == 8
        torch.testing.assert_close(fresh(ids).last_hidden_state, expected, atol=1e-5, rtol=1e-5)


def test_resume_with_the_text_encoder_equals_a_run_that_never_stopped(tmp_path: Path) -> None:
    config = lt.TrainConfig(rank=2, lr=1e-2, steps=4, checkpoint_every=2, seed=4, train_text_encoder=True)
    straight_unet, straight_text = tiny_unet(), tiny_text_encoder()
    lt.train_lora(straight_unet, tiny_token_data(caption_dropout=0.5), config, tmp_path / "a",
                  text_encoder=straight_text)
    lt.train_lora(tiny_unet(), tiny_token_data(caption_dropout=0.5), replace(config, steps=2), tmp_path / "b",
                  text_encoder=tiny_text_encoder())
    unet, text = tiny_unet(), tiny_text_encoder()
    assert lt.train_lora(unet, tiny_token_data(caption_dropout=0.5), config, tmp_path / "b",
                         text_encoder=text).resumed_from == 2
    for a, b in ((straight_unet, unet), (straight_text, text)):
        wa, wb = _lora_weights(a), _lora_weights(b)
        assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-7) for k in wa)
    with pytest.raises(ValueError, match="needs the text encoder"):
        lt.train_lora(tiny_unet(), tiny_token_data(), config, tmp_path / "c")


def test_a_checkpoint_from_other_settings_is_refused(tmp_path: Path) -> None:
    lt.train_lora(tiny_unet(), tiny_data(), lt.TrainConfig(rank=4, steps=1), tmp_path)
    with pytest.raises(ValueError, match="other settings"):
        lt.train_lora(tiny_unet(), tiny_data(), lt.TrainConfig(rank=8, steps=2), tmp_path)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    data = tiny_data()
    config = lt.TrainConfig(rank=4, steps=4, checkpoint_every=1, batch_size=4)
    lt.train_lora(tiny_unet(), data, lt.TrainConfig(rank=4, steps=2, checkpoint_every=1, batch_size=4), tmp_path)
    data.buckets[0].latents[0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"at step 3; .*last good checkpoint \(step 2\)"):
        lt.train_lora(tiny_unet(), data, config, tmp_path)
    from atelier.training import checkpoints

    assert checkpoints.load(tmp_path / "checkpoint")["step"] == 2


def test_bf16_autocast_and_min_snr_run_on_the_cpu(tmp_path: Path) -> None:
    config = lt.TrainConfig(rank=4, steps=2, mixed_precision="bf16", min_snr_gamma=5.0, noise_offset=0.05)
    result = lt.train_lora(tiny_unet(), tiny_data(), config, tmp_path)
    assert len(result.losses) == 2 and all(v == v for v in result.losses)


def test_bad_settings_fail_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rank 64 is above"):
        lt.train_lora(tiny_unet(), tiny_data(), lt.TrainConfig(rank=64), tmp_path)
    with pytest.raises(ValueError, match="scheduler"):
        lt.TrainConfig(scheduler="sometimes")
    with pytest.raises(ValueError, match="no training images"):
        TrainData([Bucket(torch.zeros(0, 4, 8, 8), torch.zeros(0, 5, 16), torch.zeros(0, dtype=torch.long))],
                  torch.zeros(5, 16))
    assert not (tmp_path / "checkpoint").exists()


# ---------------------------------------------------------------------------- kohya's default targets


def kohya_default_paths(model: torch.nn.Module, containers: tuple[str, ...]) -> set[str]:
    """The module paths of kohya sd-scripts' default LoRA layers, written from networks/lora.py
    (LoRANetwork.create_modules without conv_dim): inside every module whose class name is one of ``containers``
    (UNET_TARGET_REPLACE_MODULE = ["Transformer2DModel"]; TEXT_ENCODER_TARGET_REPLACE_MODULE = ["CLIPAttention",
    "CLIPSdpaAttention", "CLIPMLP"]), each child of class Linear, and each Conv2d with a 1x1 kernel (3x3 ones only
    with conv_dim)."""
    paths = set()
    for name, module in model.named_modules():
        if type(module).__name__ not in containers:
            continue
        for child_name, child in module.named_modules():
            kind = type(child).__name__
            if kind == "Linear" or kind == "Conv2d" and child.kernel_size == (1, 1):
                paths.add(f"{name}.{child_name}")
    return paths


def kohya_default_names(model: torch.nn.Module, containers: tuple[str, ...], prefix: str) -> set[str]:
    """kohya's names of those layers: ``prefix + "." + name + "." + child_name``, the dots as underscores. kohya
    runs transformers 4, whose CLIPTextModel holds its layers under ``text_model``; transformers 5 drops that level,
    so it is put back here for the text encoder."""
    paths = kohya_default_paths(model, containers)
    if prefix == "lora_te":
        paths = {p if p.startswith("text_model.") else "text_model." + p for p in paths}
    return {f"{prefix}.{path}".replace(".", "_") for path in paths}


KOHYA_UNET = ("Transformer2DModel",)
KOHYA_TEXT = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")


def _picked(unet, text, targets: str) -> tuple[set[str], set[str]]:
    config = lt.TrainConfig(rank=2, targets=targets)
    return ({lora_file.unet_key(n) for n, _ in lt.targeted_layers(unet, config)},
            {lora_file.text_encoder_key(n) for n, _ in lt.targeted_layers(text, config, text_encoder=True)})


def test_kohya_default_picks_kohyas_layers_on_the_tiny_models() -> None:
    unet, text = tiny_unet(), tiny_text_encoder()
    unet_names, text_names = _picked(unet, text, "kohya_default")
    assert unet_names == kohya_default_names(unet, KOHYA_UNET, "lora_unet")
    assert text_names == kohya_default_names(text, KOHYA_TEXT, "lora_te")
    # 4 transformer blocks (down 1, mid 1, up 2) x (attn1 and attn2 q/k/v/out, ff in and out, proj_in, proj_out)
    assert len(unet_names) == 4 * 12 and len(text_names) == 2 * 6
    block = "lora_unet_down_blocks_0_attentions_0_"
    assert {block + s for s in ("proj_in", "proj_out", "transformer_blocks_0_ff_net_0_proj",
                                "transformer_blocks_0_ff_net_2", "transformer_blocks_0_attn2_to_out_0")} <= unet_names
    assert not any("time_emb_proj" in n or "conv" in n for n in unet_names)
    assert {"lora_te_text_model_encoder_layers_1_mlp_fc1", "lora_te_text_model_encoder_layers_1_mlp_fc2",
            "lora_te_text_model_encoder_layers_0_self_attn_k_proj"} <= text_names
    attention_unet, attention_text = _picked(unet, text, "attention")  # today's sets are unchanged
    assert len(attention_unet) == 4 * 8 and len(attention_text) == 2 * 4 and attention_text < text_names


def test_kohya_default_on_sd15_shapes_is_kohyas_192_plus_72_layers() -> None:
    """SD 1.5's UNet and text encoder configurations on the meta device (no memory, no weights)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                            num_attention_heads=12, max_position_embeddings=77))
    unet_names, text_names = _picked(unet, text, "kohya_default")
    assert unet_names == kohya_default_names(unet, KOHYA_UNET, "lora_unet")
    assert text_names == kohya_default_names(text, KOHYA_TEXT, "lora_te")
    assert (len(unet_names), len(text_names)) == (192, 72)  # kohya's log: "U-Net: 192 modules", "Text Encoder: 72"
    comfy = set(json.loads((DATA / "comfyui_sd15_unet_lora_names.json").read_text())["names"])
    assert unet_names <= comfy, sorted(unet_names - comfy)[:5]
    assert len(_picked(unet, text, "attention")[0]) == 128
    # the README's figures at rank 16
    kohya = lt.TrainConfig(rank=16, targets="kohya_default")
    both = lt.base_count(unet, kohya) + lt.base_count(text, kohya, text_encoder=True)
    assert (both.layers, both.targeted, both.base) == (264, 351_911_936, 982_581_444)
    trained = sum(p.numel() for p in lt.add_lora(unet, kohya) + lt.add_lora(text, kohya, text_encoder=True))
    assert trained == 9_437_184
    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)
    attention = lt.base_count(unet, lt.TrainConfig(rank=16))
    assert (attention.targeted, attention.base) == (93_511_680, 859_520_964)
    assert sum(p.numel() for p in lt.add_lora(unet, lt.TrainConfig(rank=16))) == 3_188_736


def test_kohya_default_file_keeps_kohya_keys_and_loads_back(tmp_path: Path) -> None:
    config = lt.TrainConfig(rank=2, alpha=1.0, lr=1e-2, text_encoder_lr=1e-2, steps=3, seed=6,
                            train_text_encoder=True, targets="kohya_default")
    unet, text = tiny_unet(), tiny_text_encoder()
    lt.train_lora(unet, tiny_token_data(), config, tmp_path / "run", text_encoder=text)
    path = lora_file.save_lora(tmp_path / "loras", "kohya", lora_file.kohya_state_dict(unet, text), {"rank": 2})
    tensors, _ = lora_file.read_lora(path)
    stems = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors}
    fresh_unet, fresh_text = tiny_unet(), tiny_text_encoder()  # kohya's rule reads the layers before peft wraps them
    assert stems == (kohya_default_names(fresh_unet, KOHYA_UNET, "lora_unet")
                     | kohya_default_names(fresh_text, KOHYA_TEXT, "lora_te"))
    for stem in stems:  # kohya's three tensors per layer
        assert {f"{stem}.lora_down.weight", f"{stem}.lora_up.weight", f"{stem}.alpha"} <= tensors.keys()
    proj_in = tensors["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"]
    assert proj_in.shape == (2, 8, 1, 1)  # SD 1.5's proj_in is a 1x1 conv: a conv LoRA, as kohya writes it
    te = {k: v for k, v in tensors.items() if k.startswith("lora_te_")}
    assert lora_file.merge_into(fresh_unet, {k: v for k, v in tensors.items() if k.startswith("lora_unet_")}) == 48
    assert lora_file.merge_into(fresh_text, te, to_key=lora_file.text_encoder_key) == 12
    ids = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(3))
    text.eval()
    fresh_text.eval()
    with torch.no_grad():
        hidden = text(ids).last_hidden_state
        torch.testing.assert_close(fresh_text(ids).last_hidden_state, hidden, atol=1e-5, rtol=1e-5)
        latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
        t = torch.tensor([10, 700])
        unet.eval()
        torch.testing.assert_close(fresh_unet(latents, t, encoder_hidden_states=hidden).sample,
                                   unet(latents, t, encoder_hidden_states=hidden).sample, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- parameters trained against the base


def _expected_lora_size(model: torch.nn.Module, names: set[str], rank: int) -> tuple[int, int, int]:
    """(layers, LoRA parameters, weights of those layers) from the layer shapes: a LoRA of rank r on an
    out x in (x k x k) weight is a down matrix r x in (x k x k) and an up matrix out x r."""
    trainable = targeted = layers = 0
    for name, module in model.named_modules():
        if name not in names:
            continue
        layers += 1
        if isinstance(module, torch.nn.Linear):
            n_in, n_out, k = module.in_features, module.out_features, 1
        else:
            n_in, n_out, k = module.in_channels, module.out_channels, module.kernel_size[0] * module.kernel_size[1]
        trainable += rank * n_in * k + n_out * rank
        targeted += n_out * n_in * k
    return layers, trainable, targeted


def test_parameter_count_of_the_seeds_example() -> None:
    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.to_q = torch.nn.Linear(2560, 2560, bias=False)

    block, config = Block(), lt.TrainConfig(rank=16)
    count = lt.base_count(block, config)
    assert (count.layers, count.targeted, count.base) == (1, 6_553_600, 6_553_600)
    assert sum(p.numel() for p in lt.add_lora(block, config)) == 81_920
    text = lt.ParameterCount(1, 81_920, 6_553_600, 6_553_600).summary()
    assert text.startswith("LoRA trains 81,920 parameters in 1 layer instead of their 6,553,600 weights (1.25 %)")


def test_trainer_counts_what_it_trains_against_the_base(tmp_path: Path) -> None:
    unet, text = tiny_unet(), tiny_text_encoder()
    base = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in text.parameters())
    unet_size = _expected_lora_size(unet, kohya_default_paths(unet, KOHYA_UNET), 3)
    text_size = _expected_lora_size(text, kohya_default_paths(text, KOHYA_TEXT), 3)
    config = lt.TrainConfig(rank=3, steps=2, seed=1, checkpoint_every=1, train_text_encoder=True,
                            targets="kohya_default")
    result = lt.train_lora(unet, tiny_token_data(), config, tmp_path, text_encoder=text)
    expected = lt.ParameterCount(unet_size[0] + text_size[0], unet_size[1] + text_size[1],
                                 unet_size[2] + text_size[2], base)
    assert result.params == expected and expected.layers == 48 + 12
    assert result.params.trainable == sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n) \
        + sum(p.numel() for n, p in text.named_parameters() if "lora_" in n)
    resumed = lt.train_lora(tiny_unet(), tiny_token_data(), replace(config, steps=3), tmp_path,
                            text_encoder=tiny_text_encoder())
    assert resumed.resumed_from == 2 and resumed.params == expected  # a resumed run reports the same
    unet_only = lt.train_lora(tiny_unet(), tiny_data(), lt.TrainConfig(rank=2, steps=1), tmp_path / "attention")
    attention = {n for n, _ in tiny_unet().named_modules() if n.endswith((".to_q", ".to_k", ".to_v", ".to_out.0"))}
    layers, trainable, targeted = _expected_lora_size(tiny_unet(), attention, 2)
    assert unet_only.params == lt.ParameterCount(layers, trainable, targeted,
                                                 sum(p.numel() for p in tiny_unet().parameters()))
