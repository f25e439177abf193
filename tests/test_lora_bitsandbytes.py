"""QLoRA (NF4 base) and 8-bit AdamW through bitsandbytes, whose CPU backend runs them on tiny models;
the device checks and the attention choice the LoRA job makes before training."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_lora import _forward, _lora_weights

from atelier.core.sd15 import lora_file
from atelier.training.sd15 import lora_job
from atelier.training.sd15 import lora_trainer as lt
from atelier.training.sd15.quantize import quantize_linear_nf4

from helpers import tiny_data, tiny_unet

bnb = pytest.importorskip("bitsandbytes")


def _train_mode_output(unet, data) -> torch.Tensor:
    return _forward(unet, data, train_mode=True)  # bitsandbytes' CPU inference kernel needs 64+ inputs per layer


def test_qlora_holds_every_frozen_linear_layer_in_nf4_with_double_quantization() -> None:
    data = tiny_data()
    unet = tiny_unet()
    linear = sum(type(m) is torch.nn.Linear for m in unet.modules())
    before = _train_mode_output(unet, data)
    assert quantize_linear_nf4(unet, torch.float32) == linear
    quantized = [m for m in unet.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == linear and not any(type(m) is torch.nn.Linear for m in unet.modules())
    for layer in quantized:
        assert layer.weight.dtype == torch.uint8 and not layer.weight.requires_grad
        assert layer.weight.quant_state.quant_type == "nf4" and layer.weight.quant_state.nested  # double quant
    error = (_train_mode_output(unet, data) - before).abs().mean() / before.abs().mean()
    assert 0 < error < 0.1, error  # 4-bit, yet the same network


def test_qlora_trains_and_saves_the_same_keys_as_a_full_precision_run(tmp_path: Path) -> None:
    config = lt.TrainConfig(rank=4, alpha=4, lr=1e-2, steps=100, batch_size=4, seed=3, checkpoint_every=1000,
                            targets="all_linear_and_conv", qlora=True)
    unet = tiny_unet()
    result = lt.train_lora(unet, tiny_data(), config, tmp_path / "q")
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)
    plain = tiny_unet()
    lt.train_lora(plain, tiny_data(), replace(config, qlora=False, steps=1), tmp_path / "p")
    saved, reference = lora_file.kohya_state_dict(unet), lora_file.kohya_state_dict(plain)
    assert saved.keys() == reference.keys()
    assert all(v.dtype == torch.float32 and v.shape == reference[k].shape for k, v in saved.items())


def test_8bit_adamw_on_an_nf4_base_resumes_as_a_run_that_never_stopped(tmp_path: Path) -> None:
    config = lt.TrainConfig(rank=2, lr=1e-2, steps=4, checkpoint_every=2, seed=6, optimizer="adamw8bit", qlora=True)
    straight = tiny_unet()
    lt.train_lora(straight, tiny_data(), config, tmp_path / "a")
    lt.train_lora(tiny_unet(), tiny_data(), replace(config, steps=2), tmp_path / "b")
    resumed = tiny_unet()
    assert lt.train_lora(resumed, tiny_data(), config, tmp_path / "b").resumed_from == 2
    a, b = _lora_weights(straight), _lora_weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)


def test_qlora_is_refused_off_cuda_and_bitsandbytes_is_named_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="CUDA GPU only, not on cpu"):
        lora_job.check_device(lt.TrainConfig(qlora=True), torch.device("cpu"))
    lora_job.check_device(lt.TrainConfig(optimizer="adamw8bit"), torch.device("cpu"))
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(RuntimeError, match="8-bit AdamW needs bitsandbytes: pip install bitsandbytes"):
        lora_job.check_device(lt.TrainConfig(optimizer="adamw8bit"), torch.device("cpu"))
    with pytest.raises(RuntimeError, match="QLoRA needs bitsandbytes"):
        lora_job.check_device(lt.TrainConfig(qlora=True), torch.device("cuda"))


def test_attention_is_sdpa_unless_a_usable_xformers_runs_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    unet = tiny_unet()
    assert lora_job.attention_backend(unet, torch.device("cpu")) == ("sdpa", None)
    calls = []

    def enable() -> None:
        calls.append(1)
        raise RuntimeError("no kernel for this GPU")

    monkeypatch.setattr(lora_job.importlib.util, "find_spec", lambda name: object() if name == "xformers" else None)
    monkeypatch.setattr(unet, "enable_xformers_memory_efficient_attention", enable)
    backend, warning = lora_job.attention_backend(unet, torch.device("cuda"))
    assert calls and backend == "sdpa" and "no kernel for this GPU" in warning
    monkeypatch.setattr(unet, "enable_xformers_memory_efficient_attention", lambda: calls.append(2))
    assert lora_job.attention_backend(unet, torch.device("cuda")) == ("xformers", None)
