"""Metrics command: fid (FID and KID between two folders of pictures, and the first folder's Inception Score)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_numbers


def add_parsers(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("fid", help="FID and KID between two folders of pictures, and the Inception Score of the "
                       "first (the FID Inception network)")
    f.add_argument("folder_a", help="first set, say generated samples")
    f.add_argument("folder_b", help="second set, say the originals")
    f.add_argument("--weights", help="pt_inception-2015-12-05-6726825d.pth, or a folder holding it (default: "
                   "models/atelier/fid)")
    add_numbers(f, int, 1, kid_subsets=(100, "KID: how many random subsets are averaged"),
                batch_size=(50, "pictures per Inception forward pass"),
                is_splits=(10, "Inception Score of folder_a: splits scored apart and averaged (clipped to the number "
                           "of pictures)"))
    add_numbers(f, int, 2, kid_subset_size=(1000, "KID: pictures per subset (clipped to the smaller set)"))
    add_numbers(f, int, 0, seed=(0, "seed of KID's subset draws and of the shuffle before IS's splits "
                                  "(torch-fidelity's default: 2020)"))
    f.add_argument("--cache", help="feature cache folder (default: OUTPUT/atelier/fid_cache)")
    f.add_argument("--output", default="output", help="output root folder (holds the default cache)")
    f.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def run_fid(args: argparse.Namespace) -> int:
    from ..core.dataset.image_files import list_images
    from ..core.metrics import fid
    from ..nodes import bridge
    from ..nodes.fid import fid_folders

    bridge.set_output_directory(args.output)
    device = bridge.compute_device(args.device)
    model = fid.load_fid_inception(args.weights or fid_folders(), device)
    cache = Path(args.cache) if args.cache else bridge.output_directory() / "atelier" / "fid_cache"
    a, b = (fid.folder_features(model, folder, cache, args.batch_size, device, bridge.progress(
        len(list_images(folder)), "FID features")) for folder in (args.folder_a, args.folder_b))
    print(fid.score_sets(model, a, b, args.kid_subsets, args.kid_subset_size, args.seed, args.is_splits).report())
    return 0


JOBS = {"fid": run_fid}
