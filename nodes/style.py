"""Nodes of the style-transfer part: load an AdaIN model, stylize, make style-augmented datasets, train a decoder."""
from __future__ import annotations

from typing import Any

import torch

from ..core.dataset.folder_dataset import skip_lines
from ..core.dataset.image_files import load_image
from ..core.shared import plots
from ..core.shared.output_paths import safe_name, safe_subfolder
from ..core.style import adain_model
from ..core.style.color_preservation import MODES as COLOR_MODES
from ..core.style.feature_transfer import METHODS
from ..core.style.stylize import StyleOptions, parse_weights
from . import bridge
from .augmentation import DATASET, DatasetInfo, originals_from_batch
from .declare import AtelierNode, float_input, int_input, model_input, seed_input


class StyleNode(AtelierNode):
    CATEGORY = "Atelier/Style"


ADAIN = "ATELIER_ADAIN"
ADAIN_KIND = "adain"
RUNS_SUBFOLDER = "atelier/adain_runs"
NEW_DECODER = "(new decoder)"


def adain_key() -> str:
    return bridge.register_model_folder(ADAIN_KIND, {".pth", ".pt", ".safetensors"})


def _weights_path(name: str, what: str) -> Any:
    return adain_model.find_weights(name, bridge.model_folders(adain_key()), what)


def _weights_input(default: str, tip: str) -> Any:
    return model_input(bridge.model_files(adain_key()), default, tip)


STYLE_INPUTS: dict[str, tuple[Any, ...]] = {
    "alpha": float_input(1.0, 0.0, 1.0, "Style strength: 1 all style, 0 the decoder's reconstruction of the content."),
    "method": (list(METHODS), {"default": "adain", "tooltip": "adain: match each feature channel's mean and std; "
                               "efdm: match the whole distribution (more faithful style, same cost)."}),
    "preserve_color": (list(COLOR_MODES), {"default": "none", "tooltip": "match_style_colors: give the style picture "
                       "the content's colour mean and covariance first; luminance_only: keep the content's colours "
                       "and take only the stylized luminance."}),
    "tile": int_input(1024, 64, 8192, "Pictures larger than this (pixels) run in tiles, so huge pictures fit in GPU "
                 "memory; statistics still come from the whole picture.", 8),
    "overlap": int_input(64, 0, 512, "Context around each tile (pixels, multiple of 8); 64 and above give results "
                    "equal to untiled ones, half of it is cross-faded.", 8),
}


def _options(alpha: float, method: str, preserve_color: str, tile: int, overlap: int) -> StyleOptions:
    return StyleOptions(alpha=alpha, method=method, preserve_color=preserve_color, tile=tile, overlap=overlap)


class AtelierLoadAdaIN(StyleNode):
    DESCRIPTION = ("Load an AdaIN style-transfer model from models/atelier/adain: the normalised VGG-19 encoder "
                   "(vgg_normalised.pth) and a decoder (decoder.pth, or one trained by Atelier Train AdaIN Decoder).")
    EXAMPLE = ("Put vgg_normalised.pth and decoder.pth (the AdaIN authors' released weights) in models/atelier/adain, "
               "choose them here and wire adain_model into Atelier Stylize (AdaIN) or Atelier Style Augmentation.")
    FUNCTION = "load"
    OUTPUTS = (
        (ADAIN, "adain_model", "The encoder and decoder, for Stylize (AdaIN) and Style Augmentation."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "encoder": _weights_input(adain_model.ENCODER_FILE, "The normalised VGG-19 weights in "
                                      "models/atelier/adain."),
            "decoder": _weights_input(adain_model.DECODER_FILE, "The decoder weights in models/atelier/adain."),
        }}

    def load(self, encoder: str, decoder: str) -> tuple[adain_model.AdaINModel]:
        return (adain_model.load_model(_weights_path(encoder, "encoder file"), _weights_path(decoder, "decoder file")),)


class AtelierStylize(StyleNode):
    DESCRIPTION = ("Arbitrary style transfer (AdaIN or EFDM) of every content picture: one style, several styles "
                   "mixed by weights (batch them), or placed by masks. Any size; large pictures run in tiles.")
    EXAMPLE = ("Wire Atelier Load AdaIN Model, a photograph from Load Image as content and a painting as style, alpha "
               "1: the photograph painted in that style. For two styles batch both pictures into style and set "
               "style_weights '0.7, 0.3'; preserve_color 'luminance_only' keeps the photograph's colours.")
    FUNCTION = "run"
    OUTPUTS = (
        ("IMAGE", "images", "The stylized content pictures, in input order and at their size."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "adain_model": (ADAIN, {"tooltip": "From Atelier Load AdaIN Model."}),
                "content": ("IMAGE", {"tooltip": "Pictures to stylize; each keeps its size."}),
                "style": ("IMAGE", {"tooltip": "Style picture, or a batch of several styles (Batch Images)."}),
                **STYLE_INPUTS,
                "style_weights": ("STRING", {"default": "", "tooltip": "One weight per style picture, like '0.7, "
                                  "0.3' (normalised to sum 1); empty: equal weights."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Where each style goes, at the content's size: one mask per style, or "
                                  "one fewer (the last style takes the rest; with two styles: style 1 inside the "
                                  "mask, style 2 outside)."}),
            },
        }

    def run(self, adain_model: adain_model.AdaINModel, content: torch.Tensor, style: torch.Tensor, alpha: float,
            method: str, preserve_color: str, tile: int, overlap: int, style_weights: str,
            mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        from ..core.style.stylize import stylize

        options = _options(alpha, method, preserve_color, tile, overlap)
        device = bridge.compute_device()
        try:
            out = stylize(adain_model.to(device), content, list(style), options, parse_weights(style_weights), mask,
                          device, bridge.progress(content.shape[0], "stylizing"))
        finally:
            adain_model.to("cpu")
        return (out,)


def _others(direction: str, content_folder: str, style_folder: str, styles: torch.Tensor | None
            ) -> tuple[list[Any], list[Any]]:
    """The pictures beside the originals (the content folder's, or the style pictures from the batch or the
    folder), and the files skipped (they failed to decode)."""
    from ..core.dataset.multiply import Original
    from ..core.style.style_augment import load_contents, load_pictures

    if direction == "in_originals_style":
        if not content_folder.strip():
            raise ValueError("give a content_folder: a folder of photographs to paint in the originals' style")
        return load_contents(bridge.resolve_input_folder(content_folder))
    if styles is not None:
        return [Original(styles[i], f"style_{i + 1:02d}", None, f"styles[{i}]") for i in range(styles.shape[0])], []
    if not style_folder.strip():
        raise ValueError("give a style_folder or wire style pictures into 'styles'")
    return load_pictures(bridge.resolve_input_folder(style_folder), "style_folder")


class AtelierStyleAugment(StyleNode):
    DESCRIPTION = ("Virtual training pictures in the originals' style, the first model of the two-model flow: with "
                   "direction in_originals_style (the default) every picture of a content folder (your "
                   "photographs) is painted in the style of each original, or of the whole set mixed by "
                   "style_weights, and captioned with its own caption plus the trigger word; restyle_originals "
                   "instead paints the originals in the styles of a style folder. All pairs or a seeded sample, "
                   "written with caption sidecars and a manifest.jsonl naming each file's content and style into a "
                   "new version folder (v001, v002, ...) that Atelier Train LoRA can take.")
    EXAMPLE = ("Wire Atelier Load AdaIN Model and Atelier Load Image Folder's images and dataset (four originals), "
               "put 40 varied photographs in ComfyUI/input/atelier/content and set trigger 'sks_style': with pairs "
               "0 you get 160 pictures named <photo>__in_<original>.png, captioned 'sks_style, <the photo's "
               "caption>', plus the four originals in output/atelier/styled/v001, for Atelier Train LoRA's folder. "
               "Turn on whole_set for one picture per photograph in the style of all four (style_weights "
               "'2, 1, 1, 1' leans on the first).")
    FUNCTION = "run"
    OUTPUT_NODE = True
    OUTPUTS = (
        ("IMAGE", "preview", "The first content picture's virtual pictures (up to 8)."),
        ("STRING", "folder", "The version folder written."),
        ("INT", "files", "How many images were written."),
        ("STRING", "report", "What was written, and every content or style picture skipped (it failed to decode) "
                             "with the reason."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from ..core.style.style_augment import DIRECTIONS

        return {
            "required": {
                "adain_model": (ADAIN, {"tooltip": "From Atelier Load AdaIN Model."}),
                "images": ("IMAGE", {"tooltip": "The originals: the style of every virtual picture "
                                     "(in_originals_style), or the pictures restyled (restyle_originals)."}),
                "style_folder": ("STRING", {"default": "atelier/styles", "tooltip": "restyle_originals: folder of "
                                 "style pictures (absolute, or inside ComfyUI's input folder); ignored when 'styles' "
                                 "is wired, and by in_originals_style."}),
                "subfolder": ("STRING", {"default": "atelier/styled", "tooltip": "Inside ComfyUI's output folder; "
                              "each run adds a new vNNN folder here."}),
                "pairs": int_input(0, 0, 100_000, "How many (content, style) pairs to draw at random; 0: all of "
                                   "them (with whole_set: how many content pictures)."),
                "seed": seed_input("Seed of the pair draw."),
                "include_original": ("BOOLEAN", {"default": True, "tooltip": "Also write each original, with its "
                                     "own caption."}),
                **STYLE_INPUTS,
                "direction": (list(DIRECTIONS), {"default": DIRECTIONS[0], "tooltip": "in_originals_style: the "
                              "content folder's pictures painted in the originals' style (virtual data for a LoRA "
                              "of that style); restyle_originals: the originals painted in the style folder's "
                              "styles (the node's behaviour before this option)."}),
                "content_folder": ("STRING", {"default": "atelier/content", "tooltip": "in_originals_style: folder "
                                   "of content pictures, varied photographs, 5-20 per original, with optional "
                                   "<stem>.txt captions, sub-folders included (absolute, or inside ComfyUI's input "
                                   "folder)."}),
                "trigger": ("STRING", {"default": "", "tooltip": "in_originals_style: the word naming the "
                            "originals' style, put before each virtual picture's caption. Train LoRA's own trigger "
                            "goes before every caption that does not already begin with it."}),
                "whole_set": ("BOOLEAN", {"default": False, "tooltip": "Mix all style pictures (the originals, "
                              "in in_originals_style) into one style target: one picture per content picture, in "
                              "the style of the whole set."}),
                "style_weights": ("STRING", {"default": "", "tooltip": "With whole_set: one weight per style "
                                  "picture in their order, like '2, 1, 1' (normalised to sum 1); empty: equal."}),
            },
            "optional": {
                "dataset": (DATASET, {"tooltip": "Names and captions from Load Image Folder; without it files are "
                                      "named image_0001... and have no captions."}),
                "styles": ("IMAGE", {"tooltip": "restyle_originals: style pictures as a batch, instead of "
                                     "style_folder."}),
            },
        }

    def run(self, adain_model: adain_model.AdaINModel, images: torch.Tensor, style_folder: str, subfolder: str,
            pairs: int, seed: int, include_original: bool, alpha: float, method: str, preserve_color: str,
            tile: int, overlap: int, direction: str = "in_originals_style", content_folder: str = "atelier/content",
            trigger: str = "", whole_set: bool = False, style_weights: str = "", dataset: DatasetInfo | None = None,
            styles: torch.Tensor | None = None) -> tuple[Any, ...]:
        from ..core.style.style_augment import AugmentSpec, plan, style_augment, summary

        options = _options(alpha, method, preserve_color, tile, overlap)
        weights = parse_weights(style_weights)
        spec = AugmentSpec(direction, pairs, seed, include_original, trigger, whole_set,
                           None if weights is None else tuple(weights))
        originals = originals_from_batch(images, dataset)
        others, skipped = _others(direction, content_folder, style_folder, styles)
        parent = safe_subfolder(bridge.output_directory(), subfolder)
        device = bridge.compute_device()
        try:
            written = style_augment(adain_model.to(device), originals, others, parent, options, spec, device,
                                    bridge.progress(len(plan(originals, others, spec)), "style augmentation"))
        finally:
            adain_model.to("cpu")
        virtual = [(f, r) for f, r in zip(written.files, written.records) if r["variant"] != "original"]
        first = [f for f, r in virtual if r["content"] == virtual[0][1]["content"]] if virtual else []
        preview = torch.stack([load_image(f) for f in first[:8]]) if first else images[:1]
        report = [summary(written, originals, others, spec), *skip_lines(skipped)]
        return preview, str(written.folder), len(written.files), "\n".join(report)


class AtelierTrainAdaINDecoder(StyleNode):
    DESCRIPTION = ("Train an AdaIN decoder from scratch, or fine-tune one, on a content folder and a style folder "
                   "(content loss + style_weight x style loss; Adam with inverse decay; random crops). Resumes "
                   "after a cancel when queued again; saves safetensors into models/atelier/adain.")
    EXAMPLE = ("Put photographs in ComfyUI/input/atelier/content and paintings in input/atelier/styles, keep "
               "init_decoder '(new decoder)' and queue: the decoder is saved into models/atelier/adain under 'name' "
               "and appears in Atelier Load AdaIN Model's list. For a first try lower steps to 2000; queue again "
               "after a cancel to resume.")
    FUNCTION = "train"
    OUTPUT_NODE = True
    OUTPUTS = (
        (ADAIN, "adain_model", "The encoder with the trained decoder, for Stylize (AdaIN) and Style Augmentation."),
        ("STRING", "decoder_path", "The decoder's .safetensors file in models/atelier/adain."),
        ("IMAGE", "loss_curve", "The training losses per step."),
        ("STRING", "report", "Steps trained, and every picture skipped (it failed to decode) with the reason."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from ..training.style.adain_decoder import DecoderConfig

        d = DecoderConfig()
        return {
            "required": {
                "encoder": _weights_input(adain_model.ENCODER_FILE, "The normalised VGG-19 weights in "
                                          "models/atelier/adain (frozen)."),
                "init_decoder": ([NEW_DECODER, *bridge.model_files(adain_key())], {"default": NEW_DECODER,
                                 "tooltip": "Start from scratch, or fine-tune this decoder."}),
                "content_folder": ("STRING", {"default": "atelier/content", "tooltip": "Folder of content pictures "
                                   "(absolute, or inside ComfyUI's input folder)."}),
                "style_folder": ("STRING", {"default": "atelier/styles", "tooltip": "Folder of style pictures."}),
                "name": ("STRING", {"default": "atelier_decoder", "tooltip": "File name of the trained decoder."}),
                "steps": int_input(d.steps, 1, 1_000_000, "Optimizer steps."),
                "batch_size": int_input(d.batch_size, 1, 64, "Content/style pairs per step."),
                "learning_rate": float_input(d.lr, 1e-7, 1.0, "Adam learning rate.", 1e-5),
                "lr_decay": float_input(d.lr_decay, 0.0, 1.0, "Inverse decay: lr / (1 + lr_decay x step).", 1e-5),
                "style_weight": float_input(d.style_weight, 0.0, 1000.0, "Lambda: weight of the style loss.", 0.5),
                "resize_to": int_input(d.resize_to, 16, 4096, "Pictures are resized to this on the shorter side.", 8),
                "crop": int_input(d.crop, 16, 4096, "Random square crops of this size are trained on.", 8),
                "seed": seed_input("Seeds the picture and crop draws."),
                "checkpoint_every": int_input(d.checkpoint_every, 1, 1_000_000, "Steps between resumable checkpoints."),
                "preview_every": int_input(500, 0, 1_000_000, "Show content, style and result every N "
                                           "steps; 0: never."),
            },
        }

    def train(self, encoder: str, init_decoder: str, content_folder: str, style_folder: str, name: str, steps: int,
              batch_size: int, learning_rate: float, lr_decay: float, style_weight: float, resize_to: int, crop: int,
              seed: int, checkpoint_every: int, preview_every: int) -> tuple[Any, ...]:
        from ..training.style import adain_decoder

        config = adain_decoder.DecoderConfig(steps, batch_size, learning_rate, lr_decay, style_weight, resize_to,
                                             crop, seed, checkpoint_every)
        stem = safe_name(name, "decoder name")
        init = None if init_decoder == NEW_DECODER else _weights_path(init_decoder, "decoder file")
        model = adain_model.load_model(_weights_path(encoder, "encoder file"), init, seed)
        content = bridge.resolve_input_folder(content_folder)
        style = bridge.resolve_input_folder(style_folder)
        run_dir = bridge.output_directory() / RUNS_SUBFOLDER / adain_decoder.run_name(
            stem, config, model, content, style)
        with bridge.training_mode():
            result = adain_decoder.train_decoder(model, content, style, config, run_dir, bridge.compute_device(),
                                                 bridge.progress(steps, "training decoder"), preview_every)
        model.to("cpu")
        path = adain_decoder.save_trained(model, result, config, adain_model_folder(), stem,
                                          init_decoder if init else "scratch")
        plot = adain_decoder.loss_plot(result, config)
        plot.save(run_dir / "loss.png")
        return model, str(path), plots.to_image_tensor(plot), result.report()


def adain_model_folder() -> Any:
    """Where trained decoders go: the first models/atelier/adain folder."""
    return bridge.model_folders(adain_key())[0]


NODE_CLASS_MAPPINGS = {
    "AtelierLoadAdaIN": AtelierLoadAdaIN,
    "AtelierStylize": AtelierStylize,
    "AtelierStyleAugment": AtelierStyleAugment,
    "AtelierTrainAdaINDecoder": AtelierTrainAdaINDecoder,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AtelierLoadAdaIN": "Atelier Load AdaIN Model",
    "AtelierStylize": "Atelier Stylize (AdaIN)",
    "AtelierStyleAugment": "Atelier Style Augmentation",
    "AtelierTrainAdaINDecoder": "Atelier Train AdaIN Decoder",
}
