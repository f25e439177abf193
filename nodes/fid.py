"""Score FID and KID between two image sets (IMAGE batches or folders), and the Inception Score of the first,
with the standard FID Inception."""
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
    DESCRIPTION = ("FID and KID between two image sets, say generated samples and the originals, and the Inception "
                   "Score of the first (generated) set: Inception-v3 pool features and logits of the standard FID "
                   "network (put pt_inception-2015-12-05-6726825d.pth in models/atelier/fid), resized as pytorch-fid "
                   "does; IS as torch-fidelity computes it; folder features are cached per file. Small sets bias FID "
                   "upwards and IS downwards, so compare scores only at equal set sizes (and IS splits) and prefer "
                   "KID below a few thousand images.")
    EXAMPLE = ("Put pt_inception-2015-12-05-6726825d.pth in models/atelier/fid, wire VAE Decode's samples into "
               "images_a and leave folder_b at your originals ('atelier/originals'). With a few dozen pictures "
               "compare kid, not fid; the inception_score output is the samples' IS over is_splits splits.")
    FUNCTION = "score"
    OUTPUT_NODE = True
    OUTPUTS = (
        ("FLOAT", "fid", "Frechet Inception Distance (lower is closer)."),
        ("FLOAT", "kid", "Kernel Inception Distance (mean over subsets; lower is closer)."),
        ("FLOAT", "kid_std", "Standard deviation of KID over the subsets."),
        ("STRING", "report", "FID, KID ± std and IS ± std with the set sizes and the IS splits."),
        ("FLOAT", "inception_score", "Inception Score of the first set (mean over the splits; higher: more "
                                     "confident and more varied ImageNet classes). It says nothing about likeness "
                                     "to the second set."),
        ("FLOAT", "inception_score_std", "Standard deviation of the Inception Score over the splits."),
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
                "seed": seed_input("KID's subset draws and the shuffle before IS's splits (torch-fidelity's rng_seed, "
                                   "whose default is 2020)."),
                "batch_size": int_input(50, 1, 1024, "Images per Inception forward pass."),
                "is_splits": int_input(10, 1, 1000, "Inception Score: the first set is cut into this many splits "
                                       "(clipped to its size), scored apart, then averaged; 10 as torch-fidelity and "
                                       "the original code. Fewer images per split lower the score."),
            },
            "optional": {
                "images_a": ("IMAGE", {"tooltip": "First set as a batch (for example a VAE Decode's samples)."}),
                "images_b": ("IMAGE", {"tooltip": "Second set as a batch."}),
            },
        }

    def score(self, folder_a: str, folder_b: str, kid_subsets: int, kid_subset_size: int, seed: int,
              batch_size: int, is_splits: int = 10, images_a: torch.Tensor | None = None,
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
        scores = fid.score_sets(model, *feats, kid_subsets, kid_subset_size, seed, is_splits)
        del model
        report = scores.report()
        return {"ui": {"text": [report]}, "result": (scores.fid, scores.kid, scores.kid_std, report,
                                                     scores.inception_score, scores.inception_score_std)}


NODE_CLASS_MAPPINGS = {"AtelierFID": AtelierFID}
NODE_DISPLAY_NAME_MAPPINGS = {"AtelierFID": "Atelier FID / KID Score"}
