"""BLIP-2 captions with a tiny random BLIP-2 (OPT language model): loading, settings, batching, seeds,
prompts, and captioning a folder for the LoRA trainer."""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch

from atelier.core.captions.blip2 import Blip2Model, CaptionSettings, caption_folder, caption_images, load_blip2
from atelier.core.dataset.image_files import load_image, read_caption
from atelier.core.shared.hf_folders import ModelFolderError
from atelier.core.shared.progress import Cancelled, SilentProgress

from helpers import SAMPLES, CancelAfter, photo, tiny_blip2_folder

PICTURES = ["astronaut.tif", "chelsea.jpg", "coffee.webp", "rocket.png"]
SHORT = CaptionSettings(max_new_tokens=4, min_new_tokens=4, num_beams=2)  # beam search


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models") / "tiny-blip2"
    root.mkdir()
    return tiny_blip2_folder(root)


@pytest.fixture(scope="module")
def blip(blip_folder: Path) -> Blip2Model:
    return load_blip2(blip_folder, "cpu")


def _image(name: str, size: tuple[int, int] | None = (48, 36)) -> torch.Tensor:
    return torch.from_numpy(photo(name, size)).float() / 255.0


def _copy_folder(source: Path, target: Path, leave_out: tuple[str, ...] = ()) -> Path:
    shutil.copytree(source, target, ignore=lambda _, names: [n for n in names if n in leave_out])
    return target


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_load_blip2_on_the_cpu_in_fp32(blip: Blip2Model) -> None:
    assert blip.name == "tiny-blip2" and blip.precision == "auto"
    assert blip.device.type == "cpu" and blip.dtype == torch.float32
    assert blip.pixels.size == 32 and blip.pixels.square
    assert not blip.model.training
    assert not any(p.requires_grad for p in blip.model.parameters())
    assert blip.tokenizer.padding_side == "left"


@pytest.mark.parametrize("precision", ["8bit", "4bit"])
def test_quantized_precisions_need_cuda_and_say_so_before_reading_any_file(tmp_path: Path, precision: str) -> None:
    empty = tmp_path / "no-weights-at-all"
    empty.mkdir()
    # the folder has nothing in it: an error about missing files would be a ModelFolderError, not this
    with pytest.raises(RuntimeError, match=f"{precision}.*CUDA"):
        load_blip2(empty, "cpu", precision)


@pytest.mark.parametrize(("precision", "layer"), [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_quantized_precisions_load_through_bitsandbytes_and_caption(tmp_path: Path, precision: str, layer: str) -> None:
    """The real 8-bit / 4-bit loading path. load_blip2 asks for CUDA, so it is reached here through an unloaded
    model coming back; bitsandbytes' CPU backend runs it (its kernels take 64-wide blocks, hence the widths)."""
    pytest.importorskip("bitsandbytes")
    root = tmp_path / "wide-blip2"
    root.mkdir()
    blip = dataclasses.replace(load_blip2(tiny_blip2_folder(root, width=64, inner=128), "cpu"), model=None,
                               precision=precision)
    pictures = torch.stack([_image("chelsea.jpg"), _image("rocket.png")])
    captions = caption_images(blip, pictures, SHORT)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    assert caption_images(blip, pictures, SHORT) == captions
    assert blip.dtype == torch.float16
    linears = {name: type(m).__name__ for name, m in blip.model.named_modules() if isinstance(m, torch.nn.Linear)}
    # bitsandbytes keeps the Q-Former (BLIP-2 keeps it in fp32) and the output head unquantized
    kept = {n for n in linears if n.startswith("qformer.") or n.endswith("lm_head")}
    assert kept and all(linears[n] == "Linear" for n in kept)
    assert {linears[n] for n in linears.keys() - kept} == {layer}
    if precision == "4bit":
        weight = blip.model.language_model.model.decoder.layers[0].fc1.weight
        assert weight.quant_type == "nf4" and weight.compress_statistics  # NF4 with double quantization


def test_unknown_precision_is_an_error(blip_folder: Path) -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        load_blip2(blip_folder, "cpu", "fp8")


@pytest.mark.parametrize(("leave_out", "missing"), [
    (("tokenizer.json", "vocab.json", "merges.txt"), "tokenizer"),
    (("model.safetensors",), "weights"),
    (("config.json",), "config"),
])
def test_a_folder_missing_files_names_what_is_missing(blip_folder: Path, tmp_path: Path,
                                                      leave_out: tuple[str, ...], missing: str) -> None:
    assert any((blip_folder / name).is_file() for name in leave_out)
    folder = _copy_folder(blip_folder, tmp_path / "partial", leave_out)
    with pytest.raises(ModelFolderError, match=f"is missing: {missing} "):
        load_blip2(folder, "cpu")


def test_a_folder_missing_tokenizer_and_weights_lists_both(blip_folder: Path, tmp_path: Path) -> None:
    folder = _copy_folder(blip_folder, tmp_path / "partial", ("tokenizer.json", "vocab.json", "model.safetensors"))
    with pytest.raises(ModelFolderError) as caught:
        load_blip2(folder, "cpu")
    assert "weights" in str(caught.value) and "tokenizer" in str(caught.value)


def _edited(blip_folder: Path, target: Path, **changes: Any) -> Path:
    folder = _copy_folder(blip_folder, target)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_a_config_without_image_token_index_is_refused_clearly(blip_folder: Path, tmp_path: Path) -> None:
    folder = _edited(blip_folder, tmp_path / "old-blip2", image_token_index=None)
    with pytest.raises(ModelFolderError, match="no image_token_index.*current copy"):
        load_blip2(folder, "cpu")


def test_a_folder_of_another_model_type_is_refused(blip_folder: Path, tmp_path: Path) -> None:
    folder = _edited(blip_folder, tmp_path / "not-blip2", model_type="clip")
    with pytest.raises(ModelFolderError, match="holds a 'clip' model, not BLIP-2"):
        load_blip2(folder, "cpu")


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "message"), [
    ({"min_new_tokens": 10, "max_new_tokens": 5}, "min_new_tokens"),
    ({"max_new_tokens": 0}, "max_new_tokens >= 1"),
    ({"num_beams": 0}, "num_beams must be at least 1"),
    ({"sampling": True, "temperature": 0.0}, "temperature > 0"),
    ({"sampling": True, "top_p": 0.0}, "top_p"),
])
def test_caption_settings_check(blip: Blip2Model, changes: dict[str, Any], message: str) -> None:
    settings = CaptionSettings(**changes)
    with pytest.raises(ValueError, match=message):
        settings.check()
    with pytest.raises(ValueError, match=message):  # checked before any picture is captioned
        caption_images(blip, [_image("chelsea.jpg")], settings)


def test_temperature_only_matters_when_sampling() -> None:
    CaptionSettings(temperature=0.0).check()
    assert "temperature" not in CaptionSettings(temperature=0.0).generate_kwargs()
    assert CaptionSettings(sampling=True, temperature=0.7).generate_kwargs()["temperature"] == 0.7


def test_bad_batch_size_is_an_error(blip: Blip2Model) -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        caption_images(blip, [_image("chelsea.jpg")], SHORT, batch_size=0)


# --------------------------------------------------------------------------------------------
# Captioning pictures
# --------------------------------------------------------------------------------------------


def test_one_caption_per_picture_on_one_line(blip: Blip2Model) -> None:
    images = [_image(name) for name in PICTURES]
    captions = caption_images(blip, images, SHORT, batch_size=8)
    assert len(captions) == len(images)
    for caption in captions:
        assert isinstance(caption, str) and caption.strip()
        assert "\n" not in caption and "\r" not in caption
        assert caption == caption.strip() and "  " not in caption


class Generate:
    """Wraps the model's generate, keeping what it was given and what it returned."""

    def __init__(self, blip: Blip2Model, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict[str, Any]] = []
        original = blip.model.generate

        def generate(**kwargs: Any) -> torch.Tensor:
            out = original(**kwargs)
            self.calls.append({**kwargs, "out": out})
            return out

        monkeypatch.setattr(blip.model, "generate", generate)

    def new_tokens(self, call: int | None = None) -> list[list[int]]:
        """The tokens generated per picture (after the prompt), over every call or one."""
        rows = []
        for record in self.calls if call is None else [self.calls[call]]:
            out, prompt = record["out"], record["input_ids"]
            if out.shape[1] >= prompt.shape[1] and torch.equal(out[:, :prompt.shape[1]], prompt):
                out = out[:, prompt.shape[1]:]
            rows += out.tolist()
        return rows


def test_an_image_batch_tensor_gives_the_same_captions_as_a_list(blip: Blip2Model) -> None:
    images = [_image(name) for name in PICTURES[:2]]
    assert caption_images(blip, torch.stack(images), SHORT) == caption_images(blip, images, SHORT)


def test_beam_search_captions_do_not_depend_on_the_batch_size(blip: Blip2Model,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    images = [_image(name) for name in PICTURES[:3]]
    recorder = Generate(blip, monkeypatch)
    batched = caption_images(blip, images, SHORT, batch_size=2)  # a full batch of 2, then a batch of 1
    batched_tokens = recorder.new_tokens()
    recorder.calls.clear()
    alone = caption_images(blip, images, SHORT, batch_size=1)
    assert batched == alone
    assert batched_tokens == recorder.new_tokens()
    assert len({tuple(t) for t in batched_tokens}) > 1  # the pictures do not all get one caption


def test_sampling_with_a_seed_is_reproducible_and_another_seed_differs(blip: Blip2Model,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    images = [_image(name) for name in PICTURES[:3]]
    seed0 = CaptionSettings(max_new_tokens=8, min_new_tokens=8, num_beams=1, sampling=True, seed=0)
    seed1 = CaptionSettings(max_new_tokens=8, min_new_tokens=8, num_beams=1, sampling=True, seed=1)
    recorder = Generate(blip, monkeypatch)
    state = torch.random.get_rng_state()
    first = caption_images(blip, images, seed0, batch_size=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is left alone
    torch.manual_seed(1234)  # another global state must not matter
    assert caption_images(blip, images, seed0, batch_size=3) == first
    other = caption_images(blip, images, seed1, batch_size=3)
    first_tokens, again_tokens, other_tokens = (recorder.new_tokens(call) for call in range(3))
    assert again_tokens == first_tokens
    assert all(a != b for a, b in zip(first_tokens, other_tokens))  # every picture gets another caption
    assert other != first


def test_pictures_of_different_sizes_caption_together(blip: Blip2Model) -> None:
    images = [_image("chelsea.jpg", (40, 30)), _image("coffee.webp", (25, 60)), _image("rocket.png", None),
              _image("astronaut.tif", (7, 9))]
    assert len({tuple(i.shape) for i in images}) == 4
    together = caption_images(blip, images, SHORT, batch_size=4)
    assert len(together) == 4 and all(c.strip() for c in together)


def test_the_model_gets_the_image_tokens_then_the_prompt(blip: Blip2Model, monkeypatch: pytest.MonkeyPatch) -> None:
    config = blip.model.config
    prompt = "Question: what is this? Answer:"
    recorder = Generate(blip, monkeypatch)
    caption_images(blip, [_image("chelsea.jpg"), _image("coffee.webp")], CaptionSettings(prompt=prompt,
                   max_new_tokens=4), batch_size=2)
    assert len(recorder.calls) == 1
    ids = recorder.calls[0]["input_ids"]
    assert ids.shape[0] == 2 and torch.equal(ids[0], ids[1])
    queries = config.num_query_tokens
    assert queries == 4
    assert ids[0, :queries].tolist() == [config.image_token_index] * queries
    assert config.image_token_index not in ids[0, queries:].tolist()
    assert ids[0, queries:].tolist() == blip.tokenizer(prompt, add_special_tokens=True)["input_ids"]
    assert blip.tokenizer.decode(ids[0, queries:]) == prompt
    assert torch.equal(recorder.calls[0]["attention_mask"], torch.ones_like(ids))
    assert recorder.calls[0]["pixel_values"].shape == (2, 3, 32, 32)


def test_an_empty_prompt_gives_only_the_image_tokens(blip: Blip2Model, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Generate(blip, monkeypatch)
    caption_images(blip, [_image("chelsea.jpg")], SHORT)
    ids = recorder.calls[0]["input_ids"][0].tolist()
    assert ids == [blip.model.config.image_token_index] * blip.model.config.num_query_tokens


def test_the_prompt_is_not_echoed_in_the_caption(blip: Blip2Model, monkeypatch: pytest.MonkeyPatch) -> None:
    prompt = "Question: what is this? Answer:"
    recorder = Generate(blip, monkeypatch)
    settings = CaptionSettings(prompt=prompt, max_new_tokens=5, min_new_tokens=5, num_beams=1)
    (caption,) = caption_images(blip, [_image("chelsea.jpg")], settings)
    raw = blip.tokenizer.decode(recorder.calls[0]["out"][0], skip_special_tokens=True)
    assert raw.startswith(prompt)  # the model hands the prompt back: the caption must leave it out
    assert "Question" not in caption and "Answer" not in caption
    assert caption == " ".join(raw[len(prompt):].split())


def test_unload_frees_the_model_and_the_next_caption_loads_it_again(blip_folder: Path) -> None:
    """ComfyUI hands the cached loader output to the next run, so an unloaded model comes back by itself."""
    model = load_blip2(blip_folder, "cpu")
    before = caption_images(model, [_image("chelsea.jpg")], SHORT)
    alive = weakref.ref(model.model)
    model.unload()
    gc.collect()
    assert model.model is None and alive() is None
    model.unload()  # a second unload is harmless
    assert caption_images(model, [_image("chelsea.jpg")], SHORT) == before
    assert model.model is not None


# --------------------------------------------------------------------------------------------
# Captioning a folder
# --------------------------------------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """The sample pictures without their caption sidecars."""
    folder = _copy_folder(SAMPLES, tmp_path / "dataset")
    for sidecar in folder.glob("*.txt"):
        sidecar.unlink()
    assert sorted(p.name for p in folder.iterdir()) == PICTURES
    return folder


def _no_temporary_files(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".part")]
    assert leftovers == []


def test_caption_folder_writes_a_sidecar_per_picture_with_the_trigger(blip: Blip2Model, dataset: Path) -> None:
    progress = SilentProgress(4)
    report = caption_folder(blip, dataset, SHORT, trigger=" sks_style ", progress=progress)
    texts = caption_images(blip, [load_image(dataset / name) for name in PICTURES], SHORT, batch_size=4)
    expected = dict(zip(PICTURES, texts))
    assert all(expected.values())
    for name in PICTURES:
        sidecar = (dataset / name).with_suffix(".txt")
        assert sidecar.read_text(encoding="utf-8") == f"sks_style, {expected[name]}\n"
        assert read_caption(dataset / name) == f"sks_style, {expected[name]}"  # what the LoRA trainer reads
    assert sorted(report.written) == sorted((dataset / n).with_suffix(".txt") for n in PICTURES)
    assert report.kept == [] and report.skipped == []
    assert report.captions == {name: f"sks_style, {text}" for name, text in expected.items()}
    assert report.report() == "wrote 4 caption(s), kept 0 existing"
    assert progress.done == 4
    _no_temporary_files(dataset)
    assert sorted(p.name for p in dataset.iterdir()) == sorted(PICTURES + [Path(n).stem + ".txt" for n in PICTURES])


def test_existing_sidecars_are_kept_unless_overwrite(blip: Blip2Model, dataset: Path) -> None:
    mine = dataset / "chelsea.txt"
    mine.write_text("my own words about the cat\n", encoding="utf-8")
    progress = SilentProgress(4)
    report = caption_folder(blip, dataset, SHORT, trigger="sks", progress=progress)
    assert mine.read_text(encoding="utf-8") == "my own words about the cat\n"
    assert report.kept == [dataset / "chelsea.jpg"]
    assert len(report.written) == 3 and mine not in report.written and "chelsea.jpg" not in report.captions
    assert report.report().startswith("wrote 3 caption(s), kept 1 existing")
    assert progress.done == 4  # the kept picture counts too

    again = caption_folder(blip, dataset, SHORT, trigger="", overwrite=True, batch_size=4)  # no trigger
    assert again.kept == [] and len(again.written) == 4
    plain = again.captions["chelsea.jpg"]
    assert plain and not plain.startswith(("sks", ","))
    assert mine.read_text(encoding="utf-8") == plain + "\n"


def test_a_corrupt_picture_is_skipped_and_the_others_are_captioned(blip: Blip2Model, dataset: Path) -> None:
    data = (SAMPLES / "rocket.png").read_bytes()
    (dataset / "broken.png").write_bytes(data[: len(data) // 3])
    (dataset / "garbage.jpg").write_bytes(b"this is not a picture")
    progress = SilentProgress(6)
    report = caption_folder(blip, dataset, SHORT, batch_size=2, progress=progress)
    assert sorted(Path(s.path).name for s in report.skipped) == ["broken.png", "garbage.jpg"]
    assert all(s.reason for s in report.skipped)
    assert len(report.written) == 4
    for name in PICTURES:
        assert (dataset / name).with_suffix(".txt").is_file()
    assert not (dataset / "broken.txt").exists() and not (dataset / "garbage.txt").exists()
    assert "skipped broken.png" in report.report() and "skipped garbage.jpg" in report.report()
    assert progress.done == 6
    _no_temporary_files(dataset)


def test_cancel_stops_captioning_without_a_half_written_sidecar(blip: Blip2Model, dataset: Path) -> None:
    with pytest.raises(Cancelled):
        caption_folder(blip, dataset, SHORT, trigger="sks", batch_size=1, progress=CancelAfter(2))
    written = sorted(p.name for p in dataset.glob("*.txt"))
    assert written == ["astronaut.txt", "chelsea.txt"]  # the first two pictures, in folder order
    for name in written:
        text = (dataset / name).read_text(encoding="utf-8")
        assert text.startswith("sks, ") and text.endswith("\n") and text.count("\n") == 1
    _no_temporary_files(dataset)
    # a rerun finishes the job and keeps what the cancelled run wrote
    report = caption_folder(blip, dataset, SHORT, trigger="sks")
    assert sorted(p.name for p in report.kept) == ["astronaut.tif", "chelsea.jpg"] and len(report.written) == 2


def test_caption_folder_checks_its_settings_before_touching_the_folder(blip: Blip2Model, dataset: Path) -> None:
    with pytest.raises(ValueError, match="num_beams"):
        caption_folder(blip, dataset, CaptionSettings(num_beams=0))
    assert list(dataset.glob("*.txt")) == []
    assert os.listdir(dataset)  # nothing removed either
