"""The one place the pack touches ComfyUI; every function also works without it.

Inside ComfyUI: its folder_paths (model, input and output folders, extra_model_paths.yaml),
its ProgressBar and its interrupt flag, its torch device. Outside: the models of a ComfyUI folder
(the CLI's --comfyui, or COMFYUI_PATH; else the ComfyUI this pack is installed in, and ./models),
input and output folders from ATELIER_INPUT_DIR and ATELIER_OUTPUT_DIR or the working directory,
tqdm, no cancel, CUDA when present. ATELIER_MODELS_DIR names a models folder directly (the tests').
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..core.shared.progress import Progress, TqdmProgress

_output_override: Path | None = None
_comfyui_override: Path | None = None
PREVIEW_SIZE = 512
PACK_ROOT = Path(__file__).resolve().parents[1]
COMFYUI_ENV = "COMFYUI_PATH"  # the variable ComfyUI-Manager's cm-cli also reads for the ComfyUI folder


def _folder_paths() -> ModuleType | None:
    try:
        import folder_paths  # ComfyUI's own module, importable only inside ComfyUI
    except ImportError:
        return None
    return folder_paths


def in_comfyui() -> bool:
    return _folder_paths() is not None


def set_output_directory(path: str | os.PathLike[str]) -> None:
    """Where headless runs write (the CLI's --output); ComfyUI's own setting wins inside ComfyUI."""
    global _output_override
    _output_override = Path(path).expanduser().resolve()


def output_directory() -> Path:
    fp = _folder_paths()
    if fp is not None:
        return Path(fp.get_output_directory())
    if _output_override is not None:
        return _output_override
    return Path(os.environ.get("ATELIER_OUTPUT_DIR", "output")).expanduser().resolve()


def input_directory() -> Path:
    fp = _folder_paths()
    if fp is not None:
        return Path(fp.get_input_directory())
    return Path(os.environ.get("ATELIER_INPUT_DIR", "input")).expanduser().resolve()


def resolve_input_folder(text: str) -> Path:
    """An absolute folder as given; a relative one under ComfyUI's input folder, else the working directory."""
    path = Path(text.strip()).expanduser()
    if path.is_absolute():
        return path
    under_input = input_directory() / path
    return under_input if under_input.exists() or in_comfyui() else path.resolve()


def set_comfyui_directory(path: str | os.PathLike[str]) -> None:
    """The ComfyUI folder whose models headless runs use (the CLI's --comfyui); inside ComfyUI its own folders win."""
    global _comfyui_override
    folder = Path(path).expanduser().resolve()
    if not (folder / "models").is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a ComfyUI folder: it has no 'models' folder. Give the folder "
                                "that holds ComfyUI's main.py and models")
    _comfyui_override = folder


def _models_dirs() -> list[Path]:
    """The models folders searched outside ComfyUI, in order: that of the ComfyUI folder given with --comfyui; else
    ATELIER_MODELS_DIR (a models folder itself, as the tests set it); else that of the ComfyUI folder in
    COMFYUI_PATH; else that of the ComfyUI this pack is installed in (when it sits in a custom_nodes folder) and
    ./models of the working directory."""
    fp = _folder_paths()
    if fp is not None:
        return [Path(fp.models_dir)]
    if _comfyui_override is not None:
        return [_comfyui_override / "models"]
    if os.environ.get("ATELIER_MODELS_DIR"):
        return [Path(os.environ["ATELIER_MODELS_DIR"]).expanduser().resolve()]
    if os.environ.get(COMFYUI_ENV):
        return [Path(os.environ[COMFYUI_ENV]).expanduser().resolve() / "models"]
    found = [PACK_ROOT.parent.parent / "models"] if PACK_ROOT.parent.name == "custom_nodes" else []
    return list(dict.fromkeys([*found, Path("models").resolve()]))


def register_model_folder(kind: str, extensions: set[str]) -> str:
    """Register ``models/atelier/<kind>`` as ComfyUI model folder ``atelier_<kind>``; returns the key.

    Paths the user already gave for that key in extra_model_paths.yaml (loaded before custom
    nodes) are kept and searched first; ours is added after them.
    """
    key = f"atelier_{kind}"
    default = str(_models_dirs()[0] / "atelier" / kind)
    fp = _folder_paths()
    if fp is None:
        return key
    paths, exts = fp.folder_names_and_paths.get(key, ([], set()))
    if default not in paths:
        paths = [*paths, default]
    fp.folder_names_and_paths[key] = (paths, set(exts) | set(extensions))
    return key


def model_folders(key: str) -> list[Path]:
    """Every folder searched for models of ``key`` (``atelier_<kind>``, or one of ComfyUI's own such as
    ``checkpoints``), in order; outside ComfyUI, the first is where trained models go."""
    fp = _folder_paths()
    if fp is not None:
        return [Path(p) for p in fp.get_folder_paths(key)]
    kind = key.removeprefix("atelier_")
    return [root / "atelier" / kind if kind != key else root / key for root in _models_dirs()]


def model_files(key: str) -> list[str]:
    """Names of the files in the folders of ``key`` (ComfyUI's own list inside ComfyUI), for a dropdown."""
    fp = _folder_paths()
    if fp is not None:
        return list(fp.get_filename_list(key))
    names = {p.name for folder in model_folders(key) if folder.is_dir() for p in folder.iterdir() if p.is_file()}
    return sorted(names)


def find_model_file(key: str, name: str, what: str, how: str, found: Callable[[Path], bool] = Path.is_file) -> Path:
    """The file ``name`` in the first folder of ``key`` that has it, or ``name`` as a path (absolute, or relative
    to the working directory); else an error naming every place looked in and ``how`` to get one. ``found``
    says what will do (a file, or also a folder)."""
    from ..core.shared.hf_folders import ModelFolderError, locate, places

    folders = model_folders(key)
    path = locate(name, folders, found)
    if path is None:
        raise ModelFolderError(f"{what} {name.strip()!r} is not in {places(folders)}: {how}")
    return path


def model_dirs(key: str) -> list[str]:
    """Names of the transformers model folders (with a config.json) in the folders of ``key``, for a dropdown."""
    from ..core.shared.hf_folders import model_subfolders

    return model_subfolders(model_folders(key))


class ComfyProgress:
    """ComfyUI's progress bar on the running node, and its cancel button."""

    def __init__(self, total: int) -> None:
        from comfy.utils import ProgressBar

        self._bar = ProgressBar(total)

    def advance(self, steps: int = 1) -> None:
        self._bar.update(steps)

    def check_cancel(self) -> None:
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()

    def status(self, text: str) -> None:
        return None  # ComfyUI's bar shows no text; the loss reaches the user through the previews and the plot

    def preview(self, image: Any) -> None:
        self._bar.update_absolute(self._bar.current, None, ("PNG", image, PREVIEW_SIZE))


def progress(total: int, desc: str = "") -> Progress:
    return ComfyProgress(total) if in_comfyui() else TqdmProgress(total, desc)


def compute_device(choice: str = "auto") -> torch.device:
    """``auto``: ComfyUI's torch device inside ComfyUI, else CUDA when present, else the CPU."""
    if choice == "cpu":
        return torch.device("cpu")
    if in_comfyui():
        import comfy.model_management

        return comfy.model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def loras_directory() -> Path:
    """Where a trained LoRA goes: ComfyUI's first ``loras`` folder, else ``<models>/loras``."""
    return model_folders("loras")[0]


def sd15_weights(model: Any, clip: Any, vae: Any) -> dict[str, torch.Tensor]:
    """What Load Checkpoint gave, as one original-layout state dict on the CPU.

    Patches already on the MODEL or CLIP (LoRAs applied upstream) are baked in, as ComfyUI's own
    checkpoint saving does; ComfyUI's copies then leave the GPU so training has it to itself.
    """
    import comfy.model_management as mm

    mm.load_models_gpu([model, clip.load_model()], force_patch_weights=True)
    state = model.model.state_dict_for_saving(clip.get_sd(), vae.get_sd())
    state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
    free_gpu()
    return state


def free_gpu() -> None:
    """ComfyUI's loaded models off the GPU and its cache emptied, so a training has the memory to itself (outside
    ComfyUI nothing is held)."""
    if not in_comfyui():
        return
    import comfy.model_management as mm

    mm.unload_all_models()
    mm.soft_empty_cache()


def apply_lora(model: Any, clip: Any, path: Path, strength: float) -> tuple[Any, Any]:
    """The MODEL and CLIP with the LoRA file applied by ComfyUI's own loader (as LoraLoader does)."""
    import comfy.sd
    import comfy.utils

    return comfy.sd.load_lora_for_models(model, clip, comfy.utils.load_torch_file(str(path), safe_load=True),
                                         strength, strength)


@contextlib.contextmanager
def training_mode() -> Iterator[None]:
    """Autograd on for the training loops: ComfyUI runs every node under ``torch.inference_mode()``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


class ClipVisionOutput:
    """The shape of ComfyUI's CLIP_VISION_OUTPUT (``comfy.clip_vision.Output``) outside ComfyUI: attributes
    that can also be read and set as items."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)


def clip_vision_output(image_embeds: torch.Tensor) -> Any:
    """A CLIP_VISION_OUTPUT holding only ``image_embeds`` (ComfyUI's own class inside ComfyUI)."""
    try:
        from comfy.clip_vision import Output
    except ImportError:
        Output = ClipVisionOutput  # noqa: N806 - the class ComfyUI would give
    out = Output()
    out["image_embeds"] = image_embeds
    return out


def clip_vision_embedder(clip_vision: Any):  # -> core.image_embedding.ImageEmbedder
    """ComfyUI's CLIP_VISION (from Load CLIP Vision) as an image embedder: its projected ``image_embeds``."""
    from ..core.audio.image_embedding import ImageEmbedder

    if not hasattr(clip_vision, "encode_image"):
        raise TypeError("'clip_vision' must come from Load CLIP Vision")

    def raw(images: torch.Tensor) -> torch.Tensor:
        embeds = clip_vision.encode_image(images).image_embeds
        if embeds is None:
            raise ValueError("this CLIP vision model has no projection (no image_embeds); use a CLIP ViT-L/14 or "
                             "ViT-H/14 vision model")
        return embeds.float().cpu()

    dim = int(raw(torch.zeros(1, 224, 224, 3)).shape[-1])
    name = getattr(clip_vision, "atelier_name", None) or f"ComfyUI CLIP vision ({dim}-d)"
    return ImageEmbedder(name, dim, raw)


# KSampler's own lists inside ComfyUI; outside it (tests, the CLI's node docs) the common SD 1.5 choices
_SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "lms", "dpmpp_2m", "dpmpp_sde", "ddim", "uni_pc"]
_SCHEDULERS = ["normal", "karras", "exponential", "simple", "sgm_uniform", "ddim_uniform", "beta"]


def sampler_choices() -> tuple[list[str], list[str]]:
    """The sampler and scheduler names KSampler offers."""
    try:
        import comfy.samplers
    except ImportError:
        return list(_SAMPLERS), list(_SCHEDULERS)
    return list(comfy.samplers.KSampler.SAMPLERS), list(comfy.samplers.KSampler.SCHEDULERS)


def encode_text(clip: Any, text: str) -> list:
    """CLIP Text Encode: the CONDITIONING of ``text`` with the CLIP from Load Checkpoint (LoRAs applied upstream
    included)."""
    tokens = clip.tokenize(text)
    if hasattr(clip, "encode_from_tokens_scheduled"):  # ComfyUI since 2024-12
        return clip.encode_from_tokens_scheduled(tokens)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def sample_pictures(model: Any, vae: Any, positive: list, negative: list, count: int, size: tuple[int, int],
                    seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str) -> torch.Tensor:
    """Empty Latent Image, KSampler and VAE Decode as the core nodes run them: ``count`` pictures of ``size``
    (width, height) as an IMAGE ``[count, H, W, 3]``; KSampler's own cancel and previews apply."""
    latent = torch.zeros([count, 4, size[1] // 8, size[0] // 8])
    return vae_decode(vae, ksample(model, latent, positive, negative, seed, steps, cfg, sampler_name, scheduler))


def ksample(model: Any, latent: torch.Tensor, positive: list, negative: list, seed: int, steps: int, cfg: float,
            sampler_name: str, scheduler: str, denoise: float = 1.0) -> torch.Tensor:
    """KSampler as the core node runs it (ComfyUI's common_ksampler): the sampled latent ``[B, 4, h, w]`` from
    ``latent`` (zeros: from noise), ``denoise`` below 1 keeping that much of it."""
    import nodes as comfy_nodes  # ComfyUI's nodes.py (ours is imported relatively, under the pack's name)

    (out,) = comfy_nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                         {"samples": latent}, denoise=denoise)
    return out["samples"]


def vae_decode(vae: Any, samples: torch.Tensor) -> torch.Tensor:
    """VAE Decode: an IMAGE ``[B, H, W, 3]``."""
    images = vae.decode(samples)
    return images.reshape(-1, *images.shape[-3:])  # video VAEs give [B, T, H, W, 3], as VAE Decode flattens


def vae_encode(vae: Any, images: torch.Tensor) -> torch.Tensor:
    """VAE Encode: the latent ``[B, 4, h, w]`` of an IMAGE (its first three channels)."""
    return vae.encode(images[:, :, :, :3])
