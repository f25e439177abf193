"""A whole CLIP from a model folder, folder indexing with its content-keyed cache, and retrieval scores."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.core.curator.clip_model import ClipModel, load_clip, refuse_comfy_clip
from atelier.core.curator.image_index import FolderIndex, index_folder
from atelier.core.curator.retrieval import evaluate, ranks, top_k
from atelier.core.dataset.image_files import ImageFolderError, load_image
from atelier.core.shared.hf_folders import ModelFolderError, find_model_folder
from atelier.core.shared.progress import Cancelled, SilentProgress

from helpers import SAMPLES, CancelAfter, photo, tiny_clip_folder

SAMPLE_NAMES = ["astronaut.tif", "chelsea.jpg", "coffee.webp", "rocket.png"]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_clip_folder(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="module")
def clip(clip_folder: Path) -> ClipModel:
    return load_clip(clip_folder)


def _image(name: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    return torch.from_numpy(photo(name, size)).float() / 255.0


def _unit_rows(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all()) and torch.allclose(x.norm(dim=-1), torch.ones(x.shape[0]), atol=1e-5)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_load_clip_reads_the_folder(clip: ClipModel, clip_folder: Path) -> None:
    assert clip.dim == 16 and clip.name == "tiny-clip"
    assert clip.pixels.size == 32 and clip.pixels.crop == 32
    assert clip.dtype == torch.float32 and clip.device.type == "cpu"
    assert 1.0 < clip.logit_scale <= 100.0
    assert clip.fingerprint.endswith(":torch.float32")


def test_load_clip_without_tokenizer_files_uses_the_openai_vocabulary(clip: ClipModel, tmp_path: Path) -> None:
    bare = tiny_clip_folder(tmp_path / "bare", tokenizer_files=False)
    assert not (bare / "tokenizer.json").exists() and not (bare / "vocab.json").exists()
    fallback = load_clip(bare)
    texts = ["a photo of a cat.", "an oil painting of a harbour at dusk", "Ünïcödé & punctuation!"]
    for text in texts:
        assert fallback.tokenizer(text)["input_ids"] == clip.tokenizer(text)["input_ids"]
    assert clip.tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert torch.allclose(fallback.embed_texts(texts), clip.embed_texts(texts), atol=1e-6)  # same seed, same weights


def test_precision_is_part_of_the_fingerprint(clip: ClipModel, clip_folder: Path) -> None:
    half = load_clip(clip_folder, precision="bf16")
    assert half.dtype == torch.bfloat16
    assert half.fingerprint != clip.fingerprint
    assert half.fingerprint.split(":")[0] == clip.fingerprint.split(":")[0]  # same weights
    with pytest.raises(ValueError, match="precision"):
        load_clip(clip_folder, precision="fp8")


def test_folder_without_weights_names_what_is_missing(clip_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(clip_folder / "config.json", folder / "config.json")
    with pytest.raises(ModelFolderError) as info:
        load_clip(folder)
    message = str(info.value)
    assert "is missing: weights (model.safetensors or" in message and "config.json" not in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFolderError, match=r"config \(config\.json\); weights"):
        load_clip(empty)


def test_vision_only_config_is_refused_with_a_text_tower_message(clip_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "vision-only"
    folder.mkdir()
    config = json.loads((clip_folder / "config.json").read_text())
    config["model_type"] = "clip_vision_model"
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copy(clip_folder / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(ModelFolderError, match="text tower"):
        load_clip(folder)
    config["model_type"] = "siglip"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="'siglip' model .*neither a CLIP"):
        load_clip(folder)


class ClipVisionModel:
    """Shaped like ComfyUI's CLIP_VISION."""

    def encode_image(self, image: Any) -> Any:
        return image


class CLIP:
    """Shaped like ComfyUI's checkpoint CLIP."""

    def tokenize(self, text: str) -> Any:
        return text

    def encode_from_tokens(self, tokens: Any) -> Any:
        return tokens


def test_refuse_comfy_clip_explains_what_is_missing(clip: ClipModel) -> None:
    refuse_comfy_clip(clip)  # a whole CLIP is accepted
    with pytest.raises(TypeError) as info:
        refuse_comfy_clip(ClipVisionModel())
    assert "CLIP_VISION" in str(info.value) and "text tower" in str(info.value)
    assert "Atelier Load CLIP" in str(info.value)
    with pytest.raises(TypeError) as info:
        refuse_comfy_clip(CLIP())
    assert "no image tower" in str(info.value) and "Atelier Load CLIP" in str(info.value)
    with pytest.raises(TypeError, match="got str"):
        refuse_comfy_clip("openai/clip-vit-large-patch14")


# --------------------------------------------------------------------------------------------
# Finding a model folder
# --------------------------------------------------------------------------------------------

EXAMPLE = "openai/clip-vit-large-patch14"


def _fake_hub(root: Path, repo: str) -> Path:
    """The Hugging Face cache layout of one downloaded repository; returns its snapshot folder."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    entry = root / ("models--" + repo.replace("/", "--"))
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    snapshot = entry / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    return snapshot


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    return root


def test_find_model_folder_by_name_in_a_model_folder(tmp_path: Path, hub: Path) -> None:
    first, second = tmp_path / "models_a", tmp_path / "models_b"
    (second / "tiny").mkdir(parents=True)
    assert find_model_folder("tiny", [first, second], "CLIP", EXAMPLE) == second / "tiny"
    assert find_model_folder("  tiny ", [first, second], "CLIP", EXAMPLE) == second / "tiny"


def test_find_model_folder_by_absolute_path(tmp_path: Path, hub: Path) -> None:
    folder = tmp_path / "elsewhere" / "clip"
    folder.mkdir(parents=True)
    assert find_model_folder(str(folder), [tmp_path / "models"], "CLIP", EXAMPLE) == folder


def test_find_model_folder_in_the_hugging_face_cache(tmp_path: Path, hub: Path) -> None:
    snapshot = _fake_hub(hub, "org/tiny-clip")
    found = find_model_folder("org/tiny-clip", [tmp_path / "models"], "CLIP", EXAMPLE)
    assert found.resolve() == snapshot.resolve()
    assert (found / "config.json").is_file()


def test_a_model_folder_wins_over_the_cache(tmp_path: Path, hub: Path) -> None:
    _fake_hub(hub, "org/tiny-clip")
    local = tmp_path / "models" / "org" / "tiny-clip"
    local.mkdir(parents=True)
    assert find_model_folder("org/tiny-clip", [tmp_path / "models"], "CLIP", EXAMPLE) == local


def test_missing_model_names_every_place_looked_in(tmp_path: Path, hub: Path) -> None:
    _fake_hub(hub, "org/tiny-clip")
    folders = [tmp_path / "models_a", tmp_path / "models_b"]
    with pytest.raises(ModelFolderError) as info:
        find_model_folder("org/other-clip", folders, "CLIP", EXAMPLE)
    message = str(info.value)
    assert str(folders[0]) in message and str(folders[1]) in message
    assert "Hugging Face cache" in message and "'org/other-clip'" in message
    # the id asked for, into the folder a later lookup of that id tries first
    assert 'hf download org/other-clip --include "*.json"' in message
    assert '--local-dir "{}"'.format(folders[0] / "other-clip") in message
    with pytest.raises(ModelFolderError, match="no CLIP model chosen"):
        find_model_folder("   ", folders, "CLIP", EXAMPLE)
    with pytest.raises(ModelFolderError, match="not on disk") as info:
        find_model_folder("plain-name", folders, "CLIP", EXAMPLE)
    assert f'hf download {EXAMPLE} ' in str(info.value) and "Hugging Face cache" not in str(info.value)
    assert '--local-dir "{}"'.format(folders[0] / "plain-name") in str(info.value)


# --------------------------------------------------------------------------------------------
# Embedding
# --------------------------------------------------------------------------------------------


def test_embed_images_gives_unit_rows(clip: ClipModel) -> None:
    images = [_image(n) for n in SAMPLE_NAMES]
    out = clip.embed_images(images)
    assert out.shape == (4, 16) and out.dtype == torch.float32
    assert _unit_rows(out)
    assert (out @ out.T).triu(1).max() < 0.999  # different pictures, different embeddings


def test_embed_images_of_one_picture_at_different_sizes_are_close(clip: ClipModel) -> None:
    sizes = [None, (160, 106), (640, 426), (100, 100)]
    out = clip.embed_images([_image("chelsea.jpg", size) for size in sizes])
    assert _unit_rows(out)
    cos = out @ out[0]
    assert cos[:3].min() > 0.99  # the same framing, only the resolution differs
    assert cos[3] > 0.9  # squashed to a square: still much the same picture
    other = clip.embed_images([_image("rocket.png")])[0]
    assert float(out[0] @ other) < float(cos.min())


def test_embed_images_takes_a_batch_tensor(clip: ClipModel) -> None:
    batch = torch.stack([_image("chelsea.jpg"), _image("coffee.webp")])
    assert torch.allclose(clip.embed_images(batch), clip.embed_images(list(batch)), atol=1e-6)


def test_embed_texts_gives_unit_rows_independent_of_batching(clip: ClipModel) -> None:
    texts = ["a cat", "a dog", "a rocket at dusk", "a cup of coffee", "an astronaut"]
    out = clip.embed_texts(texts)
    assert out.shape == (5, 16) and _unit_rows(out)
    assert torch.allclose(clip.embed_texts(texts, batch_size=2), out, atol=1e-5)
    assert torch.allclose(clip.embed_texts(texts[2:3]), out[2:3], atol=1e-5)
    assert (out @ out.T).triu(1).max() < 0.999
    assert clip.embed_texts([]).shape == (0, 16)


# --------------------------------------------------------------------------------------------
# Indexing a folder
# --------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Copies of the samples, with caption sidecars, a truncated PNG and an empty file."""
    root = tmp_path / "pictures"
    root.mkdir()
    for name in SAMPLE_NAMES:
        shutil.copy(SAMPLES / name, root / name)
        shutil.copy(SAMPLES / f"{Path(name).stem}.txt", root / f"{Path(name).stem}.txt")
    data = (SAMPLES / "rocket.png").read_bytes()
    (root / "broken.png").write_bytes(data[: len(data) // 2])
    (root / "empty.jpg").write_bytes(b"")
    return root


class Counting:
    """Wraps clip.embed_images, counting the pictures the network runs on."""

    def __init__(self, clip: ClipModel, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls, self.pictures = 0, 0
        original = clip.embed_images

        def embed_images(images: Any) -> torch.Tensor:
            self.calls += 1
            self.pictures += len(images)
            return original(images)

        monkeypatch.setattr(clip, "embed_images", embed_images)


def _by_name(index: FolderIndex) -> dict[str, torch.Tensor]:
    return {p.name: row for p, row in zip(index.files, index.embeddings)}


def test_index_folder_embeds_readable_pictures_and_lists_broken_ones(clip: ClipModel, folder: Path) -> None:
    progress = SilentProgress(6)
    index = index_folder(clip, folder, None, progress=progress)
    assert [p.name for p in index.files] == SAMPLE_NAMES
    assert index.encoded == 4
    assert index.embeddings.shape == (4, 16) and _unit_rows(index.embeddings)
    assert index.sizes == [(320, 320), (320, 213), (320, 213), (320, 214)]
    reasons = {Path(s.path).name: s.reason for s in index.skipped}
    assert set(reasons) == {"broken.png", "empty.jpg"}
    assert "empty" in reasons["empty.jpg"]
    assert "truncated" in reasons["broken.png"] or "decode" in reasons["broken.png"]
    assert "skipped broken.png" in index.report()
    assert progress.done == 6  # every file counted, the broken ones too
    # the same embeddings as decoding each file alone; a JPEG may be decoded at a reduced scale that is
    # still at least the model's input size, so it is close to the full decode but not equal
    direct = clip.embed_images([load_image(folder / n, min_side=clip.pixels.size) for n in SAMPLE_NAMES])
    assert torch.allclose(index.embeddings, direct, atol=1e-5)
    full = clip.embed_images([_image(n) for n in SAMPLE_NAMES[:3]])
    assert torch.allclose(index.embeddings[[0, 2]], full[[0, 2]], atol=1e-5)  # tif and webp: full decodes
    assert float(index.embeddings[1] @ full[1]) > 0.99  # the JPEG


def test_index_folder_of_only_broken_files_is_an_error(clip: ClipModel, folder: Path) -> None:
    files = [folder / "broken.png", folder / "empty.jpg"]
    with pytest.raises(ImageFolderError, match="no readable picture among 2"):
        index_folder(clip, files, None)


def test_second_run_reads_everything_from_the_cache(clip: ClipModel, folder: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = index_folder(clip, folder, cache)
    counting = Counting(clip, monkeypatch)
    progress = SilentProgress(6)
    second = index_folder(clip, folder, cache, progress=progress)
    assert second.encoded == 0 and counting.calls == 0
    assert torch.equal(second.embeddings, first.embeddings)
    assert second.files == first.files and second.sizes == first.sizes
    assert len(second.skipped) == 2
    assert progress.done == 6
    assert "0 encoded, 4 from cache" in second.report()


def test_a_changed_file_is_the_only_one_encoded_again(clip: ClipModel, folder: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    before = _by_name(index_folder(clip, folder, cache))
    Image.fromarray(np.ascontiguousarray(photo("chelsea.jpg")[:, ::-1])).save(folder / "chelsea.jpg", quality=90)
    counting = Counting(clip, monkeypatch)
    index = index_folder(clip, folder, cache)
    after = _by_name(index)
    assert index.encoded == 1 and counting.pictures == 1
    assert not torch.allclose(after["chelsea.jpg"], before["chelsea.jpg"], atol=1e-4)
    for name in ("astronaut.tif", "coffee.webp", "rocket.png"):
        assert torch.equal(after[name], before[name])


def test_a_renamed_copy_costs_nothing(clip: ClipModel, folder: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    before = _by_name(index_folder(clip, folder, cache))
    (folder / "coffee.webp").rename(folder / "morning.webp")
    shutil.copy(folder / "rocket.png", folder / "rocket_copy.png")
    counting = Counting(clip, monkeypatch)
    index = index_folder(clip, folder, cache)
    after = _by_name(index)
    assert index.encoded == 0 and counting.calls == 0
    assert torch.equal(after["morning.webp"], before["coffee.webp"])
    assert torch.equal(after["rocket_copy.png"], before["rocket.png"])


def test_one_content_twice_in_a_folder_is_encoded_once(clip: ClipModel, folder: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(folder / "rocket.png", folder / "rocket_copy.png")
    counting = Counting(clip, monkeypatch)
    index = index_folder(clip, folder, None)
    assert len(index.files) == 5 and index.encoded == 4 and counting.pictures == 4
    assert index.report().startswith("5 picture(s): 4 encoded, 0 from cache, 1 with the same content as another")
    rows = _by_name(index)
    assert torch.equal(rows["rocket.png"], rows["rocket_copy.png"])


def test_another_model_does_not_reuse_the_cache(clip: ClipModel, folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = index_folder(clip, folder, cache)
    other = dataclasses.replace(clip, fingerprint=clip.fingerprint + "-other")
    index = index_folder(other, folder, cache)
    assert index.encoded == 4
    assert torch.allclose(index.embeddings, first.embeddings, atol=1e-6)  # the same network, recomputed
    assert index_folder(clip, folder, cache).encoded == 0  # each model keeps its own entries


def test_a_truncated_shard_is_rebuilt_from_the_pictures(clip: ClipModel, folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = index_folder(clip, folder, cache)
    shards = sorted(cache.rglob("shard-*.safetensors"))
    assert len(shards) == 1  # the four embeddings in one shard
    shards[0].write_bytes(shards[0].read_bytes()[:-100])  # cut short, as by a full disk or a killed copy
    with pytest.warns(UserWarning, match="cut short.*rebuilt from the pictures"):
        index = index_folder(clip, folder, cache)
    assert index.encoded == 4 and "rebuilt from the pictures" in index.report()
    assert torch.allclose(index.embeddings, first.embeddings, atol=1e-6)
    assert index_folder(clip, folder, cache).encoded == 0  # the rebuilt shard serves the next run


@pytest.mark.parametrize("batch_size", [1, 3])
def test_batch_size_does_not_change_the_embeddings(clip: ClipModel, folder: Path, batch_size: int) -> None:
    whole = index_folder(clip, folder, None, batch_size=32)
    index = index_folder(clip, folder, None, batch_size=batch_size)
    assert index.files == whole.files
    assert torch.allclose(index.embeddings, whole.embeddings, atol=1e-5)


def test_bad_batch_size_is_an_error(clip: ClipModel, folder: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        index_folder(clip, folder, None, batch_size=0)


def test_cancel_stops_indexing_and_keeps_what_was_cached(clip: ClipModel, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "good"
    root.mkdir()
    for name in SAMPLE_NAMES:
        shutil.copy(SAMPLES / name, root / name)
    cache = tmp_path / "cache"
    counting = Counting(clip, monkeypatch)
    with pytest.raises(Cancelled):
        index_folder(clip, root, cache, batch_size=1, progress=CancelAfter(2))
    assert counting.pictures == 2  # stopped before the third picture
    assert index_folder(clip, root, cache).encoded == 2  # the two finished ones came from the cache


# --------------------------------------------------------------------------------------------
# Retrieval scores
# --------------------------------------------------------------------------------------------


def test_evaluate_mrr_and_recall_at_k() -> None:
    scores = evaluate([1, 3, 2, 6], 5)
    assert scores.mrr == pytest.approx((1 + 1 / 3 + 1 / 2 + 0) / 4)
    assert scores.recall == pytest.approx(3 / 4)
    assert (scores.k, scores.queries) == (5, 4)
    assert scores.report() == "MRR@5 0.4583, recall@5 0.7500 over 4 queries"
    at_one = evaluate([1, 3, 2, 6], 1)
    assert (at_one.mrr, at_one.recall) == (0.25, 0.25)
    assert evaluate([1, 3, 2, 6], 6).mrr == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 6) / 4)


def test_evaluate_errors() -> None:
    with pytest.raises(ValueError, match="no"):
        evaluate([], 5)
    with pytest.raises(ValueError, match="k must be"):
        evaluate([1], 0)


def test_ranks_count_ties_against_the_target() -> None:
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # query 0 -> image 0, tied with image 1: rank 2; query 2 -> image 2, best: rank 1;
    # query 3 -> image 3 (0.8), below image 2 (1.0): rank 2
    assert ranks(queries, images, [0, 1, 2, 3]) == [2, 2, 1, 2]
    with pytest.raises(ValueError, match="2 queries but 1 targets"):
        ranks(queries[:2], images, [0])


def test_top_k_best_first() -> None:
    images = torch.tensor([[0.0, 1.0], [0.6, 0.8], [1.0, 0.0], [0.8, 0.6]])
    query = torch.tensor([1.0, 0.0])
    found = top_k(query, images, 3)
    assert [row for row, _ in found] == [2, 3, 1]
    assert [score for _, score in found] == pytest.approx([1.0, 0.8, 0.6])
    assert [row for row, _ in top_k(query, images, 10)] == [2, 3, 1, 0]
    with pytest.raises(ValueError, match="k must be"):
        top_k(query, images, 0)


def test_a_large_folder_is_decoded_a_batch_at_a_time(clip: ClipModel, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """1,200 pictures: every network call gets at most one batch, and no picture is decoded before the batch
    before its own has run (decoded pictures never pile up, so memory stays flat)."""
    from atelier.core.curator import image_index

    root = tmp_path / "many"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1200):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / f"p{i:04d}.png")
    decoded, seen_at_call = [0], []
    real_load = image_index.load_image

    def counting_load(*args: object, **kwargs: object) -> torch.Tensor:
        decoded[0] += 1
        return real_load(*args, **kwargs)

    monkeypatch.setattr(image_index, "load_image", counting_load)
    real_embed = clip.embed_images

    def recording_embed(images: list[torch.Tensor]) -> torch.Tensor:
        seen_at_call.append((len(images), decoded[0]))
        return real_embed(images)

    monkeypatch.setattr(clip, "embed_images", recording_embed)
    index = index_folder(clip, root, None, batch_size=64)
    assert len(index.files) == 1200 and index.embeddings.shape == (1200, clip.dim)
    assert len(seen_at_call) == 19 and all(size <= 64 for size, _ in seen_at_call)
    for call, (_, decoded_so_far) in enumerate(seen_at_call, start=1):
        assert decoded_so_far <= call * 64
