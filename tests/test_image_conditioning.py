"""Image-only conditioning through the embedding adapter, the one token path the sound nodes share, and an adapter
refused (naming both encoders) when handed another image encoder than the one it was trained with."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from atelier.core.audio.encoder import AudioEmbedding
from atelier.core.audio.image_embedding import ImageEmbedder, clip_embedder, embed_pictures, probe_embedding
from atelier.core.curator.clip_model import load_clip
from atelier.core.sd15.embedding_adapter import AdapterConfig, EmbeddingAdapter, load_adapter, save_adapter
from atelier.core.shared.state_dicts import read_tagged
from atelier.nodes import audio as audio_nodes
from atelier.nodes import bridge
from atelier.nodes.style_diffusion import AtelierImageConditioning

from helpers import synthetic_picture, tiny_clip_folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return load_clip(tiny_clip_folder(tmp_path_factory.mktemp("clip")))


def pictures(*kinds: int) -> torch.Tensor:
    return torch.stack([torch.from_numpy(synthetic_picture(k, k).astype(np.float32) / 255) for k in kinds])


def projection_embedder(name: str, seed: int, dim: int = 16, dtype: torch.dtype = torch.float32) -> ImageEmbedder:
    """A stand-in image encoder: a fixed random projection of 8x8 average-pooled pixels."""
    weight = torch.randn(8 * 8 * 3, dim, generator=torch.Generator().manual_seed(seed))

    def raw(images: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.permute(0, 3, 1, 2), 8).flatten(1)
        return (pooled.to(dtype) @ weight.to(dtype)).float()

    return ImageEmbedder(name, dim, raw)


def saved_adapter(folder, encoder: ImageEmbedder, probe: bool = True):
    torch.manual_seed(0)
    adapter = EmbeddingAdapter(AdapterConfig(encoder.dim, tokens=3))
    return save_adapter(folder, "style", adapter, encoder.name, {}, probe_embedding(encoder) if probe else None)


def test_image_conditioning_appends_each_pictures_tokens_as_the_sound_nodes_do(tmp_path, clip):
    adapter = load_adapter(saved_adapter(tmp_path, clip_embedder(clip)))
    text = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1))
    conditioning = [[text, {"pooled_output": torch.ones(1, 768)}]]
    images = pictures(0, 3)
    node = AtelierImageConditioning()
    (out,) = node.apply(conditioning, adapter, images, 0.5, "per_image", clip_model=clip)
    cond, options = out[0]
    unit = embed_pictures(clip_embedder(clip), images).unit
    assert cond.shape == (2, 80, 768) and torch.equal(cond[:, :77], text.expand(2, -1, -1))
    assert torch.allclose(cond[:, 77:], 0.5 * adapter.tokens(unit), atol=1e-6)
    assert not torch.allclose(cond[0, 77:], cond[1, 77:], atol=1e-3)  # one conditioning per picture
    assert torch.equal(options["pooled_output"], torch.ones(1, 768))
    # the sound node, handed the same unit embeddings as a sound's, appends exactly the same tokens
    (sound,) = audio_nodes.AtelierAudioConditioning().apply(conditioning, adapter,
                                                            AudioEmbedding(unit, clip.name, 1.0), 0.5)
    assert torch.equal(sound[0][0], cond)
    (average,) = node.apply(conditioning, adapter, images, 1.0, "average", clip_model=clip)
    mean = torch.nn.functional.normalize(unit.mean(0, keepdim=True), dim=-1)
    assert average[0][0].shape == (1, 80, 768)
    assert torch.allclose(average[0][0][:, 77:], adapter.tokens(mean), atol=1e-6)
    (nothing,) = node.apply(conditioning, adapter, images, 0.0, "per_image", clip_model=clip)
    assert torch.equal(nothing[0][0], text)
    with pytest.raises(ValueError, match="exactly one image encoder"):
        node.apply(conditioning, adapter, images, 1.0, "per_image")


def test_the_same_model_under_comfyuis_clip_vision_is_accepted(tmp_path, clip):
    """Load CLIP Vision's wrapper names the model differently; the probe picture still recognises it."""
    class ClipVisionOfTheSameModel:  # the part of comfy.clip_vision.ClipVisionModel the pack uses
        def encode_image(self, images):
            out = bridge.ClipVisionOutput()
            out["image_embeds"] = clip.embed_images(images, normalize=False)
            return out

    adapter = load_adapter(saved_adapter(tmp_path, clip_embedder(clip)))
    wrapped = bridge.clip_vision_embedder(ClipVisionOfTheSameModel())
    assert wrapped.name != clip.name
    (out,) = AtelierImageConditioning().apply([[torch.zeros(1, 77, 768), {}]], adapter, pictures(1), 1.0,
                                              "per_image", clip_vision=ClipVisionOfTheSameModel())
    assert out[0][0].shape == (1, 80, 768)


def test_an_adapter_for_another_image_encoder_is_refused_naming_both(tmp_path, clip):
    trained_with = projection_embedder("encoder-a", seed=1)
    path = saved_adapter(tmp_path, trained_with)
    meta, _ = read_tagged(path, "atelier_embedding_adapter", "adapter", "")
    assert "atelier_image_encoder_probe" in meta
    adapter = load_adapter(path)
    adapter.check_encoder(trained_with)
    adapter.check_encoder(projection_embedder("encoder-a in fp16", seed=1, dtype=torch.bfloat16))  # one model
    images = pictures(2)
    with pytest.raises(ValueError, match=r"'style.safetensors' was trained with the image encoder 'encoder-a' "
                                         r"\(16-d\), but the image encoder given, 'encoder-b' \(16-d\), is another"):
        adapter.embed_images(projection_embedder("encoder-b", seed=2), images)
    with pytest.raises(ValueError, match=r"'encoder-a' \(16-d\), but the image encoder given is '.*' \(32-d\)"):
        adapter.embed_images(projection_embedder("encoder-c", seed=1, dim=32), images)
    with pytest.raises(ValueError, match=r"trained with the image encoder 'encoder-a'.*but the sound's embedding "
                                         r"\(in the space of 'wide'\) is 8-d"):
        audio_nodes.AtelierAudioConditioning().apply([[torch.zeros(1, 77, 768), {}]], adapter,
                                                     AudioEmbedding(torch.randn(1, 8), "wide", 1.0), 1.0)
    with pytest.raises(ValueError, match="'encoder-a'"):  # the picture + sound edit checks before embedding
        audio_nodes.AtelierImageSoundConditioning().apply(
            [[torch.zeros(1, 77, 768), {}]], adapter, pictures(1), AudioEmbedding(torch.randn(1, 16), "x", 1.0),
            0.5, 1.0, clip_model=clip)


def test_adapter_files_without_a_fingerprint_still_load_and_are_checked_by_width(tmp_path):
    trained_with = projection_embedder("encoder-a", seed=1)
    adapter = load_adapter(saved_adapter(tmp_path, trained_with, probe=False))
    assert adapter.probe is None and adapter.image_encoder == "encoder-a"
    assert adapter.embed_images(projection_embedder("encoder-b", seed=2), pictures(0)).shape == (1, 16)
    with pytest.raises(ValueError, match=r"'encoder-a' \(16-d\).*'encoder-c' \(32-d\)"):
        adapter.check_encoder(projection_embedder("encoder-c", seed=1, dim=32))
