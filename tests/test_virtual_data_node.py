"""Atelier Virtual Data (SD 1.5) inside a stand-in ComfyUI: the change prompts through the CLIP's own encoder, the
original's tokens on the positive and 'no picture' tokens on the negative, ComfyUI's common_ksampler and the VAE's
decode, the version folder, same seed same pictures, and the disk refused before any sampling."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from atelier.core.audio.image_embedding import clip_embedder, embed_pictures, probe_embedding
from atelier.core.curator.clip_model import load_clip
from atelier.core.sd15 import virtual_data as vd
from atelier.core.sd15.embedding_adapter import AdapterConfig, EmbeddingAdapter, LoadedAdapter
from atelier.nodes import bridge
from atelier.nodes.augmentation import DatasetInfo
from atelier.nodes.style_diffusion import AtelierVirtualData

from helpers import node_defaults, synthetic_picture, tiny_clip_folder


def text_encoding(text: str) -> torch.Tensor:
    return torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(sum(text.encode()) + len(text)))


class FakeClip:  # the part of comfy.sd.CLIP the bridge uses
    def tokenize(self, text: str) -> str:
        return text

    def encode_from_tokens_scheduled(self, tokens: str) -> list:
        return [[text_encoding(tokens), {"pooled_output": torch.zeros(1, 768)}]]


class FakeVae:  # comfy.sd.VAE.decode: latents [B, 4, h, w] -> pictures [B, 8h, 8w, 3]
    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.nn.functional.interpolate(samples[:, :3], scale_factor=8)).permute(0, 2, 3, 1)


@pytest.fixture
def comfy(monkeypatch, output_dir):
    calls = []

    def common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise=1.0):
        calls.append(dict(model=model, seed=seed, steps=steps, cfg=cfg, sampler=sampler_name, scheduler=scheduler,
                          positive=positive, negative=negative, shape=tuple(latent["samples"].shape)))
        noise = torch.randn(latent["samples"].shape, generator=torch.Generator().manual_seed(seed))
        return ({"samples": noise + 10 * positive[0][0][:, -1].mean()},)

    module = types.ModuleType("nodes")  # ComfyUI's nodes.py
    module.common_ksampler = common_ksampler
    monkeypatch.setitem(sys.modules, "nodes", module)
    return calls


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    clip = load_clip(tiny_clip_folder(tmp_path_factory.mktemp("clip")))
    torch.manual_seed(0)
    adapter = LoadedAdapter(EmbeddingAdapter(AdapterConfig(clip.dim, tokens=2)).eval(), clip.name,
                            probe_embedding(clip_embedder(clip)), "style.safetensors")
    images = torch.stack([torch.from_numpy(synthetic_picture(k, k).astype(np.float32) / 255) for k in (1, 4)])
    return {"clip": clip, "adapter": adapter, "images": images,
            "dataset": DatasetInfo(["work_a", "work_b"], ["a caption", None], ["a.png", "b.png"])}


def run(world, **overrides):
    args = node_defaults(AtelierVirtualData, model="MODEL", clip=FakeClip(), vae=FakeVae(), adapter=world["adapter"],
                         images=world["images"], changes="in a forest\n\nat night", samples=2, seed=5, steps=3,
                         width=72, height=64, trigger="sks", negative_prompt="blurry", clip_model=world["clip"],
                         dataset=world["dataset"])
    args.update(overrides)
    return AtelierVirtualData().run(**args)


def test_the_node_draws_through_comfyuis_sampler_with_each_originals_tokens(world, comfy, output_dir):
    preview, folder, files, report = run(world)
    assert folder.endswith("v001") and files == 2 + 2 * 2 * 2 and "2 originals x 2 change prompts x 2 samples" in report
    assert preview.shape == (4, 64, 72, 3)
    assert len(comfy) == 4 and all(c["shape"] == (2, 4, 8, 9) for c in comfy)
    assert [(c["sampler"], c["scheduler"], c["steps"], c["cfg"]) for c in comfy] == [("dpmpp_2m", "karras", 3, 7.0)] * 4
    assert len({c["seed"] for c in comfy}) == 4
    adapter = world["adapter"]
    unit = embed_pictures(clip_embedder(world["clip"]), world["images"]).unit
    first = comfy[0]["positive"][0][0]  # work_a, 'in a forest'
    assert first.shape == (1, 79, 768) and torch.equal(first[:, :77], text_encoding("sks, in a forest"))
    assert torch.allclose(first[:, 77:], adapter.tokens(unit[:1]), atol=1e-6)
    assert torch.allclose(comfy[2]["positive"][0][0][:, 77:], adapter.tokens(unit[1:]), atol=1e-6)  # work_b
    negative = comfy[0]["negative"][0][0]
    assert torch.equal(negative[:, :77], text_encoding("blurry"))
    assert torch.allclose(negative[:, 77:], adapter.tokens(adapter.no_picture()), atol=1e-6)
    written = sorted(p.name for p in (output_dir / "atelier" / "virtual" / "v001").glob("*.txt"))
    assert written == ["work_a.txt", "work_a__at_night_01.txt", "work_a__at_night_02.txt",
                       "work_a__in_a_forest_01.txt", "work_a__in_a_forest_02.txt", "work_b__at_night_01.txt",
                       "work_b__at_night_02.txt", "work_b__in_a_forest_01.txt", "work_b__in_a_forest_02.txt"]
    again = run(world)
    assert again[1].endswith("v002") and torch.equal(again[0], preview)
    assert [c["seed"] for c in comfy[4:]] == [c["seed"] for c in comfy[:4]]


def test_the_node_refuses_what_the_disk_cannot_hold_before_sampling(world, comfy, monkeypatch):
    monkeypatch.setattr(vd.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=10 << 20))
    with pytest.raises(OSError, match=r"not enough disk for 1002 pictures of 1024x1024 .* 10 MiB free"):
        run(world, samples=50, width=1024, height=1024, changes="\n".join(f"change {i}" for i in range(10)))
    assert not comfy
    with pytest.raises(ValueError, match="at least one change prompt"):
        run(world, changes=" \n")


def test_bridge_text_encoding_of_older_comfyui_and_sampler_lists_outside_it():
    class OlderClip:
        def tokenize(self, text):
            return text

        def encode_from_tokens(self, tokens, return_pooled=False):
            return text_encoding(tokens), torch.ones(1, 768)

    (cond, options), = bridge.encode_text(OlderClip(), "a")
    assert torch.equal(cond, text_encoding("a")) and torch.equal(options["pooled_output"], torch.ones(1, 768))
    samplers, schedulers = bridge.sampler_choices()
    assert "dpmpp_2m" in samplers and "karras" in schedulers
