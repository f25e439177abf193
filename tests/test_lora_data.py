"""From a diffusers SD 1.5 folder and a set of pictures to cached training data, and a LoRA file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atelier.core.sd15 import lora_file
from atelier.core.sd15 import pipeline as sd15
from atelier.core.shared import state_dicts
from atelier.training.sd15 import latents as td
from atelier.training.sd15 import lora_trainer as lt

from helpers import as_batch, photo, tiny_sd15_folder


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> sd15.SD15Parts:
    return sd15.load_diffusers_folder(tiny_sd15_folder(tmp_path_factory.mktemp("sd15")))


def test_buckets_keep_area_and_aspect() -> None:
    sizes = td.bucket_sizes(512)
    assert sizes == [(384, 640), (448, 576), (512, 512), (576, 448), (640, 384)]
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in sizes)
    assert td.nearest_bucket(1920, 1080, sizes) == (640, 384)
    assert td.nearest_bucket(1000, 1000, sizes) == (512, 512)


def test_fit_to_bucket_covers_and_centre_crops() -> None:
    image = as_batch(photo("chelsea.jpg"))[0]  # 320x211
    out = td.fit_to_bucket(image, (64, 48))
    assert out.shape == (48, 64, 3)


def test_prompts_from_trigger_and_captions() -> None:
    assert td.caption_for("a cat", "sks", True) == "sks, a cat"
    assert td.caption_for("a cat", "", False) == "" and td.caption_for(None, "sks", True) == "sks"
    # virtual data already carries the trigger (Style Augmentation's and Virtual Data's captions): not twice
    assert td.caption_for("sks, a cat in a forest", "sks", True) == "sks, a cat in a forest"
    assert td.caption_for("sks_style, 숲 속의 고양이", " sks_style ", True) == "sks_style, 숲 속의 고양이"
    assert td.caption_for("sksx, a cat", "sks", True) == "sks, sksx, a cat"  # a longer word is not the trigger
    assert td.caption_for("sks, a cat", "sks", False) == "sks"


def test_build_caches_latents_per_bucket_and_warns_on_upscaling(parts: sd15.SD15Parts) -> None:
    images = [as_batch(photo("chelsea.jpg"))[0], as_batch(photo("coffee.webp"))[0], torch.rand(20, 20, 3)]
    prompts = ["a cat", "coffee", ""]

    def encode(texts: list[str]) -> torch.Tensor:
        return sd15.encode_prompts(parts.text_encoder, parts.tokenizer, texts)

    assert td.bucket_sizes(64, 16) == [(48, 80), (64, 64), (80, 48)]
    data = td.build(images, prompts, parts.vae, encode, resolution=64, step=16, caption_dropout=0.1)
    shapes = sorted(tuple(b.latents.shape) for b in data.buckets)
    assert shapes == [(1, 4, 32, 32), (2, 4, 24, 40)]  # the 80x48 landscape and 64x64 buckets; the VAE halves
    assert data.buckets[0].conditioning.shape[1:] == (77, 768) and data.unconditional.shape == (77, 768)
    assert data.warnings == ["image 3 (20x20) upscaled to its 64x64 bucket"]
    again = td.build(images, prompts, parts.vae, encode, resolution=64, step=16)
    assert all(torch.equal(a.latents, b.latents) for a, b in zip(data.buckets, again.buckets))  # seeded
    with pytest.raises(ValueError, match="smaller than its 64x64 bucket"):
        td.build(images, prompts, parts.vae, encode, resolution=64, step=16, upscale=False)


def test_folder_to_lora_file_end_to_end(parts: sd15.SD15Parts, tmp_path: Path) -> None:
    images = [as_batch(photo(n, (48, 32)))[0] for n in ("chelsea.jpg", "coffee.webp", "rocket.png")]

    def encode(texts: list[str]) -> torch.Tensor:
        return sd15.encode_prompts(parts.text_encoder, parts.tokenizer, texts)

    data = td.build(images, ["sks cat", "sks cup", "sks rocket"], parts.vae, encode, resolution=32, step=16)
    lt.train_lora(parts.unet, data, lt.TrainConfig(rank=4, alpha=2, steps=3, lr=1e-3), tmp_path / "run")
    tensors = lora_file.kohya_state_dict(parts.unet)
    # 4 transformer blocks (down, mid, two up) x 8 projections (attn1, attn2: q, k, v, out) x 3 keys
    assert all(k.startswith("lora_unet_") for k in tensors) and len(tensors) == 4 * 8 * 3
    state_dicts.write_safetensors(tmp_path / "sks.safetensors", tensors, {"rank": "4"})
    assert (tmp_path / "sks.safetensors").stat().st_size > 0


def test_other_model_families_are_named_and_refused(tmp_path: Path) -> None:
    base = {"in_channels": 4, "out_channels": 4, "cross_attention_dim": 768}
    assert sd15.identify(base) == "sd15"
    assert sd15.identify({**base, "cross_attention_dim": 1024}).startswith("SD 2.x")
    assert sd15.identify({**base, "cross_attention_dim": 2048, "addition_embed_type": "text_time"}).startswith("SDXL")
    assert "v-prediction" in sd15.identify(base, {"prediction_type": "v_prediction"})
    assert "inpainting" in sd15.identify({**base, "in_channels": 9})
    folder = tmp_path / "sdxl"
    for sub in ("unet", "vae", "text_encoder", "tokenizer"):
        (folder / sub).mkdir(parents=True)
    (folder / "unet" / "config.json").write_text(json.dumps({**base, "addition_embed_type": "text_time"}))
    for sub in ("vae", "text_encoder"):
        (folder / sub / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds SDXL"):
        sd15.load_diffusers_folder(folder)
    with pytest.raises(FileNotFoundError, match="lacks unet/config.json"):
        sd15.load_diffusers_folder(tmp_path / "nothing")


def test_a_whole_job_writes_a_lora_with_metadata_samples_and_a_loss_plot(tmp_path: Path) -> None:
    from atelier.training.sd15 import lora_job

    from helpers import SAMPLES

    parts = sd15.load_diffusers_folder(tiny_sd15_folder(tmp_path / "model"))
    loras = tmp_path / "loras"
    (loras).mkdir()
    (loras / "my_style.safetensors").write_bytes(b"someone else's file")
    job = lora_job.LoraJob(images=str(SAMPLES), name="my style", trigger="sks", resolution=64, bucket_step=16,
                           train=lt.TrainConfig(rank=4, alpha=1.0, steps=4, checkpoint_every=2),
                           sample_every=2, sample_prompts=("sks, a cat",), sample_steps=2)
    result = lora_job.run(parts, job, loras, tmp_path / "run")
    assert result.lora_path == loras / "my_style_2.safetensors"  # never replaces an existing file
    assert (loras / "my_style.safetensors").read_bytes() == b"someone else's file"
    tensors, meta = lora_file.read_lora(result.lora_path)
    assert meta["ss_network_alpha"] == "1.0" and meta["ss_steps"] == "4" and meta["ss_num_train_images"] == "4"
    assert all(isinstance(v, str) for v in meta.values()) and json.loads(meta["atelier_train_config"])["rank"] == 4
    assert {v.item() for k, v in tensors.items() if k.endswith(".alpha")} == {1.0}
    assert len(result.losses) == 4 and result.loss_plot.size == (640, 360)
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step_000002_01.png",
                                                                                 "step_000004_01.png"]
    assert len(result.samples) == 2 and result.samples[0].size == (64, 64)
    assert (tmp_path / "run" / "loss.png").exists()
