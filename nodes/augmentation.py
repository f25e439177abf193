"""Nodes of the augmentation part: load and preprocess a folder, augment a batch, multiply a dataset."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.dataset import augment, multiply, variants
from ..core.dataset.folder_dataset import load_folder
from ..core.dataset.geometry import INTERPOLATIONS
from ..core.dataset.image_files import DEFAULT_MAX_MEGAPIXELS, folder_fingerprint, list_images
from ..core.dataset.preprocess import CROP_MODES, FILTERS, PAD_MODES, RESIZE_MODES, PreprocessSpec, preprocess
from ..core.shared.colors import parse_color
from ..core.shared.output_paths import safe_subfolder
from . import bridge
from .declare import DEVICE_INPUT, AtelierNode, color_input, float_input, int_input, seed_input


class DatasetNode(AtelierNode):
    CATEGORY = "Atelier/Augmentation"


DATASET = "ATELIER_DATASET"
RECIPE = "ATELIER_AUGMENT"


@dataclass
class DatasetInfo:
    """What travels beside an IMAGE batch from a folder: names, captions and source files."""

    stems: list[str]
    captions: list[str | None]
    sources: list[str]


def originals_from_batch(images: torch.Tensor, dataset: DatasetInfo | None) -> list[multiply.Original]:
    """The pictures of a batch with their names and captions (``image_0001``... without a dataset)."""
    if dataset is not None and len(dataset.stems) != images.shape[0]:
        raise ValueError(f"dataset names {len(dataset.stems)} pictures but the batch has {images.shape[0]}")
    width = max(4, len(str(images.shape[0])))
    info = dataset or DatasetInfo([f"image_{i + 1:0{width}d}" for i in range(images.shape[0])],
                                  [None] * images.shape[0], [f"batch[{i}]" for i in range(images.shape[0])])
    return [multiply.Original(images[i], info.stems[i], info.captions[i], info.sources[i])
            for i in range(images.shape[0])]


PREPROCESS_INPUTS: dict[str, tuple[Any, ...]] = {
    "resize": (list(RESIZE_MODES), {"default": "none", "tooltip": "shorter_edge/longer_edge: scale that edge to "
                                    "'size' keeping the aspect ratio; exact: stretch to width x height."}),
    "size": int_input(512, 8, 16384, "Target length of the shorter or longer edge.", 8),
    "width": int_input(512, 8, 16384, "Width for exact resize, padding to size and centre crop.", 8),
    "height": int_input(512, 8, 16384, "Height for exact resize, padding to size and centre crop.", 8),
    "pad": (list(PAD_MODES), {"default": "none", "tooltip": "to_size: centre on a width x height canvas; square: "
                              "pad the shorter edge up to the longer one."}),
    "pad_fill": (["color", "most_frequent"], {"default": "color", "tooltip": "Fill padding with pad_color, or with "
                                              "each picture's most frequent colour ('resize and fill')."}),
    "pad_color": color_input("#000000", "Padding colour when pad_fill is 'color'"),
    "crop": (list(CROP_MODES), {"default": "none", "tooltip": "center: cut a width x height window from the middle, "
                                "after resizing and padding."}),
    "filter": (list(FILTERS), {"default": "bicubic", "tooltip": "Resampling filter; shrinking is antialiased."}),
}


def preprocess_spec(resize: str, size: int, width: int, height: int, pad: str, pad_fill: str, pad_color: str,
                    crop: str, filter: str) -> PreprocessSpec:
    color = None if pad_fill == "most_frequent" else parse_color(pad_color)
    return PreprocessSpec(resize, size, width, height, pad, color, crop, filter)


def _folders(text: str) -> list[Path]:
    """One folder per line (a folder named twice is read once); a blank text gets the usual error."""
    lines = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    return [bridge.resolve_input_folder(line) for line in lines] or [bridge.resolve_input_folder(text)]


class AtelierLoadImageFolder(DatasetNode):
    DESCRIPTION = ("Load every image of a folder, or of several folders given one per line (png, jpg, webp, bmp, "
                   "gif, tif/tiff; 16-bit, CMYK, palette and alpha included), with its caption sidecar, preprocess it "
                   "and output one IMAGE batch. Unreadable files are skipped and listed in the report.")
    EXAMPLE = ("Put your originals (with optional <stem>.txt captions) in ComfyUI/input/atelier/originals, keep "
               "folder 'atelier/originals', set resize 'longer_edge', size 512, pad 'square' and pad_fill "
               "'most_frequent', and wire images and dataset into Atelier Multiply Dataset. The batch has one size, "
               "so pictures of different sizes need a resize, pad or crop that makes them equal.")
    FUNCTION = "load"
    OUTPUTS = (
        ("IMAGE", "images", "The pictures as one batch."),
        (DATASET, "dataset", "Names, captions and source files, for Multiply Dataset."),
        ("INT", "count", "How many pictures were loaded."),
        ("STRING", "report", "What was loaded and what was skipped, and why."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "folder": ("STRING", {"default": "atelier/originals", "multiline": True, "tooltip": "Folder of "
                                      "originals: absolute, or relative to ComfyUI's input folder. Several folders, "
                                      "one per line, are read as one set (say a Style Augmentation and a Virtual "
                                      "Data version joined by String Concatenate with a line break)."}),
                "recursive": ("BOOLEAN", {"default": False, "tooltip": "Also read sub-folders."}),
                **PREPROCESS_INPUTS,
                "alpha_background": color_input("#ffffff", "Colour transparent pixels are composited on"),
                "max_megapixels": float_input(DEFAULT_MAX_MEGAPIXELS, 1.0, 1000.0, "Larger files are refused as "
                                              "possible decompression bombs.", 1.0),
                "save_png_copies": ("BOOLEAN", {"default": False, "tooltip": "Also write the loaded pictures as PNG "
                                                "(with captions and a manifest) to a new version folder."}),
                "png_subfolder": ("STRING", {"default": "atelier/png", "tooltip": "Where PNG copies go, inside "
                                             "ComfyUI's output folder."}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, folder: str | None, recursive: bool | None, **_: Any) -> str | float:
        # re-run when the folder's files change, not only when the widgets do; a linked input reaches
        # IS_CHANGED as None (ComfyUI passes only constants here), and then nothing can be known: NaN never
        # equals itself, so the node runs every time
        if folder is None or recursive is None:
            return float("nan")
        try:
            files = [path for one in _folders(folder) for path in list_images(one, recursive)]
        except ValueError:
            return "missing"
        return folder_fingerprint(files)

    def load(self, folder: str, recursive: bool, alpha_background: str, max_megapixels: float,
             save_png_copies: bool, png_subfolder: str, **pre: Any) -> tuple[Any, ...]:
        spec = preprocess_spec(**pre)
        background = parse_color(alpha_background)
        png_parent = safe_subfolder(bridge.output_directory(), png_subfolder) if save_png_copies else None
        paths = _folders(folder)
        count = sum(len(list_images(path, recursive)) for path in paths)
        data = load_folder(paths, spec, background, recursive, max_megapixels, same_size=True,
                           progress=bridge.progress(count, "loading"))
        report = data.report()
        if png_parent is not None:
            written = multiply.multiply(
                [multiply.Original(i.image, i.stem, i.caption, str(i.path)) for i in data.images], png_parent,
                kinds=(), include_original=True)
            report += f"\nPNG copies: {written.folder}"
        info = DatasetInfo([i.stem for i in data.images], [i.caption for i in data.images],
                           [str(i.path) for i in data.images])
        return data.batch(), info, len(data.images), report


class AtelierPreprocessImages(DatasetNode):
    DESCRIPTION = "Resize, pad (constant or most frequent colour) and centre-crop an IMAGE batch."
    EXAMPLE = ("Wire a batch from Load Image, set resize 'shorter_edge' with size 512, then crop 'center' with width "
               "and height 512: every picture becomes a 512 x 512 square cut from its middle.")
    FUNCTION = "run"
    OUTPUTS = (
        ("IMAGE", "images", "The preprocessed batch."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE", {"tooltip": "The batch to preprocess."}), **PREPROCESS_INPUTS}}

    def run(self, images: torch.Tensor, **pre: Any) -> tuple[torch.Tensor]:
        spec = preprocess_spec(**pre)
        if pre["pad_fill"] == "most_frequent" and spec.pad == "none":
            raise ValueError("pad_fill 'most_frequent' needs pad 'to_size' or 'square'")
        return (preprocess(images, spec),)


class AtelierAugmentRecipe(DatasetNode):
    DESCRIPTION = ("Which augmentations to draw and how strongly: each happens with its probability and a "
                   "magnitude drawn uniformly between its min and max (equal: fixed). Feed it to Augment Images "
                   "or to Multiply Dataset's random variants.")
    EXAMPLE = ("Set hflip_p 0.5, rotation_p 0.3 with rotation_min -15 and rotation_max 15, and brightness_p 0.5 "
               "between 0.8 and 1.2; wire recipe into Atelier Augment Images, or into Atelier Multiply Dataset's "
               "recipe with random_variants 4.")
    FUNCTION = "build"
    OUTPUTS = (
        (RECIPE, "recipe", "The recipe, for Augment Images or Multiply Dataset's random variants."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        p = "Probability that an image gets this transform."
        return {
            "required": {
                "hflip_p": float_input(0.5, 0, 1, "Probability of a horizontal flip."),
                "vflip_p": float_input(0.0, 0, 1, "Probability of a vertical flip."),
                "grayscale_p": float_input(0.0, 0, 1, "Probability of greyscale (ITU-R 601 luma, 3 channels)."),
                "saturation_p": float_input(0.0, 0, 1, p),
                "saturation_min": float_input(-0.2, -1, 1, "Lowest offset added to the HSV S channel."),
                "saturation_max": float_input(0.2, -1, 1, "Highest offset added to the HSV S channel."),
                "brightness_p": float_input(0.0, 0, 1, p),
                "brightness_min": float_input(0.7, 0, 4, "Lowest brightness factor (1 leaves the picture as it is)."),
                "brightness_max": float_input(1.3, 0, 4, "Highest brightness factor."),
                "rotation_p": float_input(0.0, 0, 1, p),
                "rotation_min": float_input(-45, -360, 360, "Lowest angle in degrees, counter-clockwise.", 0.5),
                "rotation_max": float_input(45, -360, 360, "Highest angle in degrees, counter-clockwise.", 0.5),
                "affine_p": float_input(0.0, 0, 1, "Probability of the affine transform (translate, scale, shear)."),
                "translate_max": float_input(0.1, 0, 1, "Largest shift, as a fraction of width and height."),
                "scale_min": float_input(0.9, 0.05, 4, "Smallest scale factor."),
                "scale_max": float_input(1.1, 0.05, 4, "Largest scale factor."),
                "shear_max": float_input(10, 0, 60, "Largest horizontal shear in degrees.", 0.5),
                "expand": ("BOOLEAN", {"default": False, "tooltip": "Grow the canvas so rotated corners are kept "
                                       "(the batch takes the largest canvas any image needs)."}),
                "fill_color": color_input("#000000", "Colour of uncovered corners"),
                "interpolation": (list(INTERPOLATIONS), {"default": "bilinear", "tooltip": "Resampling of warps."}),
            }
        }

    def build(self, hflip_p: float, vflip_p: float, grayscale_p: float, saturation_p: float, saturation_min: float,
              saturation_max: float, brightness_p: float, brightness_min: float, brightness_max: float,
              rotation_p: float, rotation_min: float, rotation_max: float, affine_p: float, translate_max: float,
              scale_min: float, scale_max: float, shear_max: float, expand: bool, fill_color: str,
              interpolation: str) -> tuple[augment.AugmentSpec]:
        R = augment.Range
        return (augment.AugmentSpec(
            hflip=hflip_p, vflip=vflip_p, grayscale=grayscale_p,
            saturation=R(saturation_p, saturation_min, saturation_max),
            brightness=R(brightness_p, brightness_min, brightness_max),
            rotation=R(rotation_p, rotation_min, rotation_max),
            translate=R(affine_p, -translate_max, translate_max), scale=R(affine_p, scale_min, scale_max),
            shear=R(affine_p, -shear_max, shear_max),
            expand=expand, fill=parse_color(fill_color), interpolation=interpolation,
        ),)


class AtelierAugmentImages(DatasetNode):
    DESCRIPTION = ("Augment an IMAGE batch with a recipe, batched on the GPU, each image drawing its own seeded "
                   "parameters.")
    EXAMPLE = ("Wire Atelier Load Image Folder's images and an Atelier Augmentation Recipe and send images to Preview "
               "Image: each picture draws its own flips, angles and factors, and the same seed gives the same batch "
               "again.")
    FUNCTION = "run"
    OUTPUTS = (
        ("IMAGE", "images", "The augmented batch, in input order (with expand: on the largest canvas any picture "
                            "needs)."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The batch to augment."}),
            "recipe": (RECIPE, {"tooltip": "From Atelier Augmentation Recipe."}),
            "seed": seed_input("Same seed, same result.", largest=0xFFFFFFFFFFFFFFFF),
            "device": DEVICE_INPUT,
        }}

    def run(self, images: torch.Tensor, recipe: augment.AugmentSpec, seed: int, device: str) -> tuple[torch.Tensor]:
        target = bridge.compute_device(device)
        out = augment.augment(images.to(target), recipe, seed, bridge.progress(images.shape[0], "augmenting"))
        return (out.to(images.device),)


class AtelierMultiplyDataset(DatasetNode):
    DESCRIPTION = ("Write each original plus its named variants (brightness, saturation, greyscale, flips, "
                   "rotations) and optional seeded random variants as PNG, with caption sidecars and a "
                   "manifest.jsonl, into a new version folder (v001, v002, ...) that never overwrites.")
    EXAMPLE = ("Wire Atelier Load Image Folder's images and dataset and leave every variant on: four originals become "
               "40 PNG files (each original and its nine variants, captions copied beside them) in "
               "output/atelier/augmented/v001. Wire folder into Atelier Train LoRA's folder.")
    FUNCTION = "run"
    OUTPUT_NODE = True
    OUTPUTS = (
        ("IMAGE", "preview", "The first original and its variants."),
        ("STRING", "folder", "The version folder written."),
        ("INT", "files", "How many images were written."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        s = variants.VariantSettings()
        toggles = {k: ("BOOLEAN", {"default": True, "tooltip": f"Write the {s.name(k)} variant."})
                   for k in variants.KINDS}
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The originals."}),
                "subfolder": ("STRING", {"default": "atelier/augmented", "tooltip": "Inside ComfyUI's output folder; "
                                         "each run adds a new vNNN folder here."}),
                "include_original": ("BOOLEAN", {"default": True,
                                                 "tooltip": "Also write each original as <stem>.png."}),
                **toggles,
                "brightness_down_factor": float_input(s.brightness_down, 0, 1, "Brightness factor of brightness_down."),
                "brightness_up_factor": float_input(s.brightness_up, 1, 4, "Brightness factor of brightness_up."),
                "saturation_down_offset": float_input(s.saturation_down, -1, 0, "HSV S offset of saturation_down."),
                "saturation_up_offset": float_input(s.saturation_up, 0, 1, "HSV S offset of saturation_up."),
                "rotation_degrees": float_input(s.angle, 0.5, 359.5, "Angle of rotation_+A (counter-clockwise) and "
                                           "rotation_-A (clockwise); it appears in the file names.", 0.5),
                "fill_color": color_input("#000000", "Colour of the corners rotations uncover"),
                "random_variants": int_input(0, 0, 64, "Extra random_NN variants per original, drawn from 'recipe'."),
                "seed": seed_input("Seed of the random variants; each file's own seed is in the manifest.",
                                   largest=0xFFFFFFFFFFFFFFFF),
                "device": DEVICE_INPUT,
            },
            "optional": {
                "dataset": (DATASET, {"tooltip": "Names and captions from Load Image Folder; without it files are "
                                      "named image_0001... and have no captions."}),
                "recipe": (RECIPE, {"tooltip": "Augmentation recipe of the random variants."}),
            },
        }

    def run(self, images: torch.Tensor, subfolder: str, include_original: bool, brightness_down_factor: float,
            brightness_up_factor: float, saturation_down_offset: float, saturation_up_offset: float,
            rotation_degrees: float, fill_color: str, random_variants: int, seed: int, device: str,
            dataset: DatasetInfo | None = None, recipe: augment.AugmentSpec | None = None,
            **toggles: bool) -> tuple[Any, ...]:
        settings = variants.VariantSettings(brightness_down_factor, brightness_up_factor, saturation_down_offset,
                                            saturation_up_offset, rotation_degrees, parse_color(fill_color))
        kinds = [k for k in variants.KINDS if toggles.get(k, False)]
        if random_variants and recipe is None:
            raise ValueError("random_variants needs a recipe: connect an Atelier Augmentation Recipe")
        originals = originals_from_batch(images, dataset)
        parent = safe_subfolder(bridge.output_directory(), subfolder)
        random = multiply.RandomVariants(recipe, random_variants, seed) if random_variants and recipe else None
        planned = multiply.plan_size(originals, kinds, include_original, random)
        written = multiply.multiply(originals, parent, kinds, settings, include_original, random,
                                    bridge.compute_device(device), bridge.progress(planned, "multiplying"))
        preview = variants.preview(images[:1], kinds, settings, include_original)
        return preview, str(written.folder), len(written.files)


NODE_CLASS_MAPPINGS = {
    "AtelierLoadImageFolder": AtelierLoadImageFolder,
    "AtelierPreprocessImages": AtelierPreprocessImages,
    "AtelierAugmentRecipe": AtelierAugmentRecipe,
    "AtelierAugmentImages": AtelierAugmentImages,
    "AtelierMultiplyDataset": AtelierMultiplyDataset,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AtelierLoadImageFolder": "Atelier Load Image Folder",
    "AtelierPreprocessImages": "Atelier Preprocess Images",
    "AtelierAugmentRecipe": "Atelier Augmentation Recipe",
    "AtelierAugmentImages": "Atelier Augment Images",
    "AtelierMultiplyDataset": "Atelier Multiply Dataset",
}
