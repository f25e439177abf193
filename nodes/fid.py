"""Score FID and KID between two image sets (IMAGE batches or folders) with the standard FID Inception."""
from __future__ import annotations

from typing import Any

import torch

from ..core.metrics import fid
from . import bridge
from .declare import AtelierNode, int_input, seed_input


class EvaluationNode(AtelierNode):
    CATEGORY = "Atelier/Evaluation"


FID_KIND = "fid"


def fid_folders() -> list[Any]:
    """Where the FID Inception weights are looked for: ComfyUI's ``models/atelier/fid`` (and extra paths)."""
    return bridge.model_folders(bridge.register_model_folder(FID_KIND, {".pth", ".pt"}))


class AtelierFID(EvaluationNode):
    DESCRIPTION = ("FID and KID between two image sets, say generated samples and the originals: Inception-v3 pool "
                   "features of the standard FID network (put pt_inception-2015-12-05-6726825d.pth in "
                   "models/atelier/fid), resized as pytorch-fid does; folder features are cached per file. Small sets "
                   "bias FID upwards, so compare FIDs only at equal set sizes and prefer KID below a few thousand "
                   "images.")
    EXAMPLE = ("Put pt_inception-2015-12-05-6726825d.pth in models/atelier/fid, wire VAE Decode's samples into "
               "images_a and leave folder_b at your originals ('atelier/originals'). With a few dozen pictures "
               "compare kid, not fid.")
    FUNCTION = "score"
    OUTPUT_NODE = True
    OUTPUTS = (
        ("FLOAT", "fid", "Frechet Inception Distance (lower is closer)."),
        ("FLOAT", "kid", "Kernel Inception Distance (mean over subsets; lower is closer)."),
        ("FLOAT", "kid_std", "Standard deviation of KID over the subsets."),
        ("STRING", "report", "Both scores with the set sizes."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        folder_tip = "Folder of images (absolute, or relative to ComfyUI's input folder); used when the IMAGE input " \
                     "of this set is not wired."
        return {
            "required": {
                "folder_a": ("STRING", {"default": "", "tooltip": "First set: " + folder_tip}),
                "folder_b": ("STRING", {"default": "atelier/originals", "tooltip": "Second set: " + folder_tip}),
                "kid_subsets": int_input(100, 1, 10_000, "KID: how many random subsets are averaged."),
                "kid_subset_size": int_input(1000, 2, 100_000, "KID: images per subset (clipped to the smaller set)."),
                "seed": seed_input("KID's subset draws."),
                "batch_size": int_input(50, 1, 1024, "Images per Inception forward pass."),
            },
            "optional": {
                "images_a": ("IMAGE", {"tooltip": "First set as a batch (for example a VAE Decode's samples)."}),
                "images_b": ("IMAGE", {"tooltip": "Second set as a batch."}),
            },
        }

    def score(self, folder_a: str, folder_b: str, kid_subsets: int, kid_subset_size: int, seed: int,
              batch_size: int, images_a: torch.Tensor | None = None,
              images_b: torch.Tensor | None = None) -> dict[str, Any]:
        sets = [(images_a, folder_a, "a"), (images_b, folder_b, "b")]
        for images, folder, name in sets:
            if images is None and not folder.strip():
                raise ValueError(f"set {name}: wire images_{name} or give folder_{name}")
            if images is not None and images.shape[0] < 2:
                raise ValueError(f"set {name} has {images.shape[0]} image; FID and KID need at least 2 per set")
        device = bridge.compute_device()
        model = fid.load_fid_inception(fid_folders(), device)
        cache = bridge.output_directory() / "atelier" / "fid_cache"
        feats = []
        for images, folder, _ in sets:
            if images is not None:
                feats.append(fid.features(model, images, batch_size, device,
                                          bridge.progress(images.shape[0], "FID features")))
            else:
                path = bridge.resolve_input_folder(folder)
                feats.append(fid.folder_features(model, path, cache, batch_size, device))
        del model
        a, b = feats
        fid_value = fid.fid_from_features(a, b)
        kid, kid_std = fid.kid_from_features(a, b, kid_subsets, kid_subset_size, seed)
        report = (f"FID {fid_value:.3f}  KID {kid:.5f} ± {kid_std:.5f}  ({a.shape[0]} vs {b.shape[0]} images; "
                  f"small sets bias FID upwards)")
        return {"ui": {"text": [report]}, "result": (fid_value, kid, kid_std, report)}


NODE_CLASS_MAPPINGS = {"AtelierFID": AtelierFID}
NODE_DISPLAY_NAME_MAPPINGS = {"AtelierFID": "Atelier FID / KID Score"}
