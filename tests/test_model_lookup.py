"""Every missing-model message, followed to the letter, ends in a model that loads; the command line finds
models in a ComfyUI folder (--comfyui or COMFYUI_PATH) and says everywhere it looked; relative paths work."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from atelier.cli import main
from atelier.cli.common import model_file
from atelier.core.captions.blip2 import DEFAULT_BLIP2, Blip2Model
from atelier.core.curator.clip_model import DEFAULT_CLIP, ClipModel, load_clip
from atelier.core.metrics import fid
from atelier.core.sd15 import checkpoint as sd15_checkpoint
from atelier.core.shared.hf_folders import ModelFolderError, find_model_folder
from atelier.core.style.adain_model import DECODER_FILE, ENCODER_FILE, AdaINModel
from atelier.nodes import audio, bridge, captioner, curator, story, style
from atelier.nodes import fid as fid_node

from helpers import (
    SAMPLES,
    node_defaults,
    synthetic_paired_folder,
    synthetic_picture,
    tiny_adain_files,
    tiny_blip2_folder,
    tiny_clip_folder,
    tiny_sd15_folder,
    tiny_sd15_parts,
    to_ldm_checkpoint,
)

STORIES = ["the sea is calm tonight.", "a small boat leaves the harbour.", "the lighthouse keeps its light.",
           "gulls follow the boat home.", "the night is long and quiet.", "morning comes over the water."] * 3


@pytest.fixture
def comfyui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output_dir: Path) -> Path:
    """A ComfyUI folder named by COMFYUI_PATH, as a user sets it, and a working directory of its own."""
    root = tmp_path / "ComfyUI"
    (root / "models").mkdir(parents=True)
    monkeypatch.delenv("ATELIER_MODELS_DIR", raising=False)
    monkeypatch.setenv("COMFYUI_PATH", str(root))
    monkeypatch.setattr(bridge, "_comfyui_override", None)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return root


def _quoted_after(marker: str, message: str) -> Path:
    """The first quoted path after ``marker`` in ``message``."""
    match = re.search(re.escape(marker) + r"""\s*["']([^"']+)["']""", message)
    assert match, f"no path after {marker!r} in: {message}"
    return Path(match.group(1))


def _error(load: Callable[[], object]) -> str:
    with pytest.raises(FileNotFoundError) as info:
        load()
    return str(info.value)


# Each case: load as a new user does (the default name), read the error, do exactly what it says, load again.


def _clip(comfyui: Path, tmp_path: Path) -> object:
    def load() -> object:
        return curator.AtelierLoadCLIP().load(DEFAULT_CLIP, "fp32", "cpu")[0]

    message = _error(load)
    assert str(comfyui / "models" / "atelier" / "clip") in message and "the working directory" in message
    assert f"hf download {DEFAULT_CLIP} " in message
    tiny_clip_folder(_quoted_after("--local-dir", message))  # what the download command would put there
    return load()


def _blip2(comfyui: Path, tmp_path: Path) -> object:
    def load() -> object:
        return captioner.AtelierLoadBLIP2().load(DEFAULT_BLIP2, "fp32", "cpu")[0]

    message = _error(load)
    assert f"hf download {DEFAULT_BLIP2} " in message
    folder = _quoted_after("--local-dir", message)
    assert folder == comfyui / "models" / "atelier" / "blip2" / "blip2-opt-2.7b"  # the short name the issue named
    tiny_blip2_folder(folder)
    return load()


def _fid(comfyui: Path, tmp_path: Path) -> object:
    def load() -> object:
        return fid.load_fid_inception(fid_node.fid_folders())

    message = _error(load)
    assert fid.FID_WEIGHTS_URL in message
    folder = _quoted_after("it is not in:", message)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(fid.FIDInceptionV3().state_dict(), folder / fid.FID_WEIGHTS_NAME)  # stands in for the download
    with pytest.warns(UserWarning, match="not the released"):
        return load()


def _adain(comfyui: Path, tmp_path: Path) -> object:
    def load() -> object:
        return style.AtelierLoadAdaIN().load(ENCODER_FILE, DECODER_FILE)[0]

    message = _error(load)
    assert "Put it in the first of those folders" in message
    tiny_adain_files(_quoted_after("is not in", message))
    return load()


def _checkpoint(comfyui: Path, tmp_path: Path) -> object:
    name = "v1-5-pruned-emaonly.safetensors"
    args = ["train", str(SAMPLES), "--model", name, "--loras", str(tmp_path / "loras"), "--run", str(tmp_path / "run"),
            "--device", "cpu"]
    with pytest.raises(ModelFolderError) as info:
        model_file(name, "checkpoints", "SD 1.5 checkpoint")
    message = str(info.value)
    assert main(args) == 2 and not (tmp_path / "run").exists()
    folder = _quoted_after("--local-dir", message)
    assert folder == comfyui / "models" / "checkpoints"
    folder.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in to_ldm_checkpoint(tiny_sd15_parts()).items()}, str(folder / name))
    return sd15_checkpoint.load(model_file(name, "checkpoints", "SD 1.5 checkpoint"))[0]


def _text_model(comfyui: Path, tmp_path: Path) -> object:
    def load() -> object:
        return story.AtelierLoadTextGenerator().load(story.DEFAULT_MODEL)[0]

    message = _error(load)
    assert "train one with Atelier Train Text Generator" in message
    assert main(["text-sample", story.DEFAULT_MODEL, "--count", "1"]) == 2  # the command line: the same folder
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(STORIES), encoding="utf-8")
    values = node_defaults(story.AtelierTrainTextGenerator, corpus=str(corpus), max_len=20, emb_dim=16,
                           hidden_dim=24, batch_size=8, mle_epochs=2, dis_rounds=1, adversarial_epochs=1, d_steps=1,
                           d_epochs=1, rollouts=2, checkpoint_every=5)
    story.AtelierTrainTextGenerator().train(**values)
    assert main(["text-sample", story.DEFAULT_MODEL, "--count", "1"]) == 0
    return load()


def _audio_encoder(comfyui: Path, tmp_path: Path) -> object:
    def load() -> object:
        return audio.AtelierLoadAudioEncoder().load(audio.DEFAULT_ENCODER)[0]

    message = _error(load)
    assert "train one with Atelier Train Audio Encoder" in message
    clip = load_clip(tiny_clip_folder(tmp_path / "clip"))
    pairs = synthetic_paired_folder(tmp_path / "pairs", per_class=2)
    values = node_defaults(audio.AtelierTrainAudioEncoder, folder=str(pairs), epochs=1, batch_size=4,
                           val_fraction=0.25, sample_rate=8000, window_seconds=0.5, n_mels=32)
    audio.AtelierTrainAudioEncoder().train(**values, clip_model=clip)
    return load()


def _adapter(comfyui: Path, tmp_path: Path) -> object:
    def load() -> object:
        return audio.AtelierLoadEmbeddingAdapter().load(audio.DEFAULT_ADAPTER)[0]

    message = _error(load)
    assert "train one with Atelier Train Embedding Adapter" in message
    folder = _quoted_after("is not in", message)
    # the node needs ComfyUI's MODEL; its headless twin writes the same file into the folder the message names
    from PIL import Image

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for kind in range(2):
        Image.fromarray(synthetic_picture(kind, size=64)).save(pictures / f"p{kind}.png")
    assert main(["adapter-train", str(pictures), "--model", str(tiny_sd15_folder(tmp_path / "sd")), "--clip",
                 str(tiny_clip_folder(tmp_path / "clip")), "--out-dir", str(folder), "--run", str(tmp_path / "run"),
                 "--steps", "1", "--batch-size", "2", "--resolution", "64", "--device", "cpu"]) == 0
    return load()


CASES = {"clip": (_clip, ClipModel), "blip2": (_blip2, Blip2Model), "fid": (_fid, fid.FIDInceptionV3),
         "adain": (_adain, AdaINModel), "checkpoint": (_checkpoint, object), "text_model": (_text_model, object),
         "audio_encoder": (_audio_encoder, object), "adapter": (_adapter, object)}


@pytest.mark.parametrize("kind", list(CASES))
def test_each_missing_model_message_followed_literally_loads(kind: str, comfyui: Path, tmp_path: Path) -> None:
    follow, loaded_type = CASES[kind]
    model = follow(comfyui, tmp_path)
    assert model is not None and isinstance(model, loaded_type)


# --------------------------------------------------------------------------------------------
# The command line and a ComfyUI folder
# --------------------------------------------------------------------------------------------


def test_the_cli_finds_a_model_in_the_comfyui_folder_given_and_names_every_place_looked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bridge, "_comfyui_override", None)
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.delenv("ATELIER_MODELS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "ComfyUI"
    tiny_clip_folder(root / "models" / "atelier" / "clip" / "tiny-clip")
    args = ["label", str(SAMPLES), "--clip", "tiny-clip", "--precision", "fp32", "--device", "cpu", "--output",
            str(tmp_path / "out"), "--json", str(tmp_path / "labels.json")]
    assert main(args) == 2  # without the ComfyUI folder: ./models of the working directory only
    error = capsys.readouterr().err
    assert str(tmp_path / "models" / "atelier" / "clip") in error and "the working directory" in error
    assert main([*args, "--comfyui", str(root)]) == 0
    assert "labelled 4 picture(s)" in capsys.readouterr().out
    assert main([*args[:3], "other-clip", *args[4:], "--comfyui", str(root)]) == 2
    error = capsys.readouterr().err
    assert str(root / "models" / "atelier" / "clip") in error and f"the working directory ({str(tmp_path)!r})" in error
    assert str(tmp_path / "models" / "atelier" / "clip") not in error  # --comfyui replaces ./models
    assert main([*args, "--comfyui", str(tmp_path / "nowhere")]) == 2
    assert "is not a ComfyUI folder" in capsys.readouterr().err


def test_the_comfyui_this_pack_is_installed_in_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("COMFYUI_PATH", "ATELIER_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(bridge, "_comfyui_override", None)
    monkeypatch.setattr(bridge, "PACK_ROOT", tmp_path / "ComfyUI" / "custom_nodes" / "atelier")
    monkeypatch.chdir(tmp_path)
    assert bridge.model_folders("atelier_clip") == [tmp_path / "ComfyUI" / "models" / "atelier" / "clip",
                                                    tmp_path / "models" / "atelier" / "clip"]
    assert bridge.model_folders("checkpoints")[0] == tmp_path / "ComfyUI" / "models" / "checkpoints"
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path / "Other"))
    assert bridge.model_folders("atelier_fid") == [tmp_path / "Other" / "models" / "atelier" / "fid"]
    assert bridge.loras_directory() == tmp_path / "Other" / "models" / "loras"


# --------------------------------------------------------------------------------------------
# Relative paths (issue 15 item 15)
# --------------------------------------------------------------------------------------------


def test_a_relative_model_path_that_exists_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bridge, "_comfyui_override", None)
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "empty_models"))
    monkeypatch.chdir(tmp_path)
    tiny_clip_folder(tmp_path / "models" / "clip")
    assert find_model_folder("models/clip", [tmp_path / "empty_models"], "CLIP", DEFAULT_CLIP) == \
        tmp_path / "models" / "clip"
    assert main(["label", str(SAMPLES), "--clip", "models/clip", "--precision", "fp32", "--device", "cpu",
                 "--output", str(tmp_path / "out"), "--json", "labels.json"]) == 0, capsys.readouterr().err
    encoder, decoder = tiny_adain_files(tmp_path / "weights")
    assert model_file("weights/vgg_normalised.pth", "adain", "encoder file") == encoder
    assert bridge.find_model_file("atelier_adain", "weights/decoder.pth", "decoder", "") == decoder
    with pytest.raises(ModelFolderError, match="the working directory"):
        model_file("weights/missing.pth", "adain", "encoder file")


# --------------------------------------------------------------------------------------------
# Damaged weights (issue 15 item 14): one clear error naming the file and what to do
# --------------------------------------------------------------------------------------------


class _RunsCode:
    """Pickles as a call to ``print``: what ``torch.load(weights_only=True)`` must refuse."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled",))


def _cut(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: len(data) // 2])


def _clip_folder(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    folder = tiny_clip_folder(tmp_path / "clip")
    return folder / "model.safetensors", lambda: load_clip(folder)


def _blip2_folder(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    from atelier.core.captions.blip2 import load_blip2

    folder = tiny_blip2_folder(tmp_path / "blip2")
    return folder / "model.safetensors", lambda: load_blip2(folder)


def _clip_pickle(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    from safetensors.torch import load_file

    folder = tiny_clip_folder(tmp_path / "clip")
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")  # torch's zip format, as transformers saves .bin files
    return folder / "pytorch_model.bin", lambda: load_clip(folder)


def _adain_encoder(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    from atelier.core.style.adain_model import load_encoder

    encoder, _ = tiny_adain_files(tmp_path / "adain")
    return encoder, lambda: load_encoder(encoder)


def _adain_decoder(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    from atelier.core.style.adain_model import load_decoder

    _, decoder = tiny_adain_files(tmp_path / "adain")
    return decoder, lambda: load_decoder(decoder)


def _adain_old_format(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    """The encoder in torch's pre-1.6 pickle format (not a zip), which the public release may use."""
    from atelier.core.style.adain_model import load_encoder

    encoder, _ = tiny_adain_files(tmp_path / "adain")
    torch.save(torch.load(encoder, weights_only=True), encoder, _use_new_zipfile_serialization=False)
    return encoder, lambda: load_encoder(encoder)


def _fid_weights(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    path = tmp_path / fid.FID_WEIGHTS_NAME
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, path)
    return path, lambda: fid.load_fid_inception(path)


def _diffusers_folder(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    folder = tiny_sd15_folder(tmp_path / "sd")
    return folder / "unet" / "diffusion_pytorch_model.safetensors", lambda: sd15_checkpoint.load(folder)


def _checkpoint_file(suffix: str) -> Callable[[Path], tuple[Path, Callable[[], object]]]:
    def make(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
        from safetensors.torch import save_file

        path = tmp_path / f"sd15{suffix}"
        state = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}
        save_file(state, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
        return path, lambda: sd15_checkpoint.read_state_dict(path)

    return make


DAMAGED = {"clip": _clip_folder, "blip2": _blip2_folder, "clip_bin": _clip_pickle, "adain_encoder": _adain_encoder,
           "adain_decoder": _adain_decoder, "adain_old_format": _adain_old_format, "fid": _fid_weights,
           "checkpoint": _checkpoint_file(".safetensors"), "checkpoint_ckpt": _checkpoint_file(".ckpt"),
           "diffusers": _diffusers_folder}


@pytest.mark.parametrize("damage", ["empty", "cut"])
@pytest.mark.parametrize("kind", list(DAMAGED))
def test_an_empty_or_cut_short_weight_file_is_named_with_what_to_do(kind: str, damage: str, tmp_path: Path) -> None:
    from atelier.core.shared.weight_files import WeightFileError

    path, load = DAMAGED[kind](tmp_path)
    _cut(path, damage)
    with pytest.raises(WeightFileError) as info:
        load()
    message = str(info.value)
    assert repr(str(path)) in message and "damaged or incomplete" in message
    assert "again" in message  # what to do: get the file again (the command or place to get it from)


@pytest.mark.parametrize("kind", ["clip_bin", "checkpoint_ckpt"])
def test_a_pickle_that_would_run_code_is_refused_with_where_to_get_safetensors(kind: str, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from atelier.core.shared.weight_files import WeightFileError

    path, load = DAMAGED[kind](tmp_path)
    torch.save({"weight": _RunsCode()}, path)
    with pytest.raises(WeightFileError) as info:
        load()
    message = str(info.value)
    assert repr(str(path)) in message and "more than plain tensors" in message and ".safetensors" in message
    assert "unpickled" not in capsys.readouterr().out  # refused, never run
