"""FID and KID between two image sets, with the standard FID Inception network.

The network is pytorch-fid's port of the 2015 TensorFlow Inception-v3 graph that the original
FID code (TTUR) uses: torchvision's Inception-v3 layout with the FID block variants
(``FIDInceptionA``/``C``/``E_1`` average-pool without counting the zero padding, ``FIDInceptionE_2``
max-pools), a 1008-class ``fc`` and no auxiliary head. Its weights are pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth``, whose keys this module's ``state_dict`` matches exactly;
nothing here downloads them. Images in 0..1 are resized to 299x299 bilinearly
(``align_corners=False``, no antialiasing) and scaled to -1..1, as pytorch-fid does, and the
2048-d pool3 features are scored with pytorch-fid's Frechet distance formula and with KID
(unbiased MMD^2, cubic polynomial kernel, over random subsets, as torch-fidelity computes it). The
Inception Score takes the same network's 1008-way logits, which are the pool3 features times ``fc``'s
weight (no bias, torch-fidelity's ``logits_unbiased``), so one forward pass serves all three scores.

Folder features are cached under the SHA-256 of each file's bytes (safetensors shards, no pickle), in a
sub-folder per network, so scoring the same originals again costs nothing; the logits come from the
cached features without running the network again.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..dataset.image_files import ImageFolderError, list_images, load_image, open_image
from ..shared.progress import Progress, SilentProgress
from ..shared.state_dicts import file_sha256, mismatch, read_weights, state_dict_sha256
from ..shared.weight_files import check_weight_file, reading
from .feature_cache import FeatureCache

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_NAME
# SHA-256 of the released file (torch.hub names files after its first 8 hex digits): a file that
# differs still loads, with a warning that its scores are not comparable with published ones.
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
FID_INPUT_SIZE = 299
FEATURE_DIM = 2048
LOGITS_DIM = 1008  # the 2015 graph's 1000 ImageNet classes plus 8 unused ones
# Bumped whenever the way a file becomes features changes, so old cache entries stop matching.
CACHE_FORMAT = "atelier-fid-pool3-v1"
# KID: the full kernel matrices are computed once when the larger set has at most this many images.
_FULL_KERNEL_MAX = 4096


# --------------------------------------------------------------------------------------------
# The network (torchvision's Inception-v3 names, pytorch-fid's FID block variants)
# --------------------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Conv without bias, BatchNorm (eps 0.001), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool leaves the zero padding out of the average.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        branch7x7dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(branch7x7dbl))
        branch7x7dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(branch7x7dbl))
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(branch7x7x3))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class _InceptionE(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        branch_pool = self.branch_pool(self._pool(x))
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)


class FIDInceptionE_1(_InceptionE):  # pytorch-fid's name
    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return _tf_avg_pool(x)


class FIDInceptionE_2(_InceptionE):  # pytorch-fid's name
    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        # The FID graph max-pools here (other Inception-v3 graphs average-pool).
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def resize_for_inception(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` to 299x299 exactly as pytorch-fid: bilinear, ``align_corners=False``, no antialias."""
    return F.interpolate(images, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3; ``forward`` takes ``[B, 3, H, W]`` in 0..1 and returns ``[B, 2048]`` pool3 features.

    Module names follow torchvision's ``Inception3`` (``aux_logits=False``, 1008 classes), so the
    ``state_dict`` is key for key the one in ``pt_inception-2015-12-05-6726825d.pth``. ``fc`` gives
    the logits of the Inception Score (``logits``); FID and KID never use it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE_1(1280)
        self.Mixed_7c = FIDInceptionE_2(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, 1008)
        self.weights_sha256: str | None = None  # set by load_fid_inception
        self.eval()
        self.requires_grad_(False)

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a batch already resized to 299x299 and scaled to -1..1."""
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6a(x)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_for_inception(images)
        return self.pool3(2 * x - 1)  # 0..1 to the -1..1 the TensorFlow graph expects

    def logits(self, pool3: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The 1008-way logits ``[B, 1008]`` (float32, on the CPU) of pool3 features ``[B, 2048]``:
        ``pool3 @ fc.weight.T`` without ``fc``'s bias. That is torch-fidelity's ``logits_unbiased``, the
        layer its Inception Score reads (and the original IS code's: pool3 times the softmax weights alone)."""
        weight = self.fc.weight
        pool3 = torch.as_tensor(pool3).to(device=weight.device, dtype=torch.float32)
        with torch.inference_mode():
            return pool3.mm(weight.float().T).cpu()


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _as_locations(locations: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(locations, (str, os.PathLike)):
        return [Path(locations).expanduser()]
    return [Path(p).expanduser() for p in locations]


def find_fid_weights(locations: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> Path:
    """The weights file: a given file itself, or ``pt_inception-2015-12-05-6726825d.pth`` in the first
    folder that holds it. Raises FileNotFoundError naming the file, the places searched and the URL."""
    places = _as_locations(locations)
    for place in places:
        if place.is_file():
            return place
        candidate = place / FID_WEIGHTS_NAME
        if candidate.is_file():
            return candidate
    searched = ", ".join(repr(str(p)) for p in places) or "(no folder given)"
    raise FileNotFoundError(
        f"FID needs the Inception weights file {FID_WEIGHTS_NAME!r} (pytorch-fid's port of the 2015 TensorFlow "
        f"Inception), and it is not in: {searched}. Download it from {FID_WEIGHTS_URL} and put it in one of those "
        "folders (in ComfyUI: models/atelier/fid). Atelier never downloads it by itself."
    )


def load_fid_inception(locations: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                       device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Build the FID Inception and load its weights (``torch.load(weights_only=True)``, strict keys).

    ``locations`` is the weights file itself, or a folder or list of folders to look in (the caller
    passes ComfyUI's ``models/atelier/fid`` folders). A missing file is a FileNotFoundError; a file
    of another layout is a ValueError naming the keys that differ.
    """
    path = find_fid_weights(locations)
    how = f"download {FID_WEIGHTS_NAME} again from {FID_WEIGHTS_URL}"
    check_weight_file(path, "FID Inception weights", how)
    digest = file_sha256(path)
    with reading(path, "FID Inception weights", how, FID_WEIGHTS_URL):
        state = read_weights(path, "FID Inception weights")
    model = FIDInceptionV3()
    expected = model.state_dict()
    for key in expected:  # files saved before BatchNorm counted batches lack these; eval never reads them
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    problems = mismatch(expected, state)
    if problems:
        raise ValueError(
            f"{str(path)!r} is not the FID Inception weights file: keys {problems}. Use pytorch-fid's "
            f"{FID_WEIGHTS_NAME} from {FID_WEIGHTS_URL} (torchvision's inception_v3 weights are a different network)."
        )
    model.load_state_dict(state, strict=True)
    if digest != FID_WEIGHTS_SHA256:
        warnings.warn(
            f"{str(path)!r} loads as the FID Inception but is not the released {FID_WEIGHTS_NAME} "
            f"(sha256 {digest[:16]}..., expected {FID_WEIGHTS_SHA256[:16]}...): its scores are not comparable "
            "with published FID numbers.",
            stacklevel=2,
        )
    model.weights_sha256 = digest
    return model.to(device)


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _to_planar(images: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[B, H, W, C]`` (C = 3, or 1 for grey) to float32 ``[B, 3, H, W]``."""
    if images.dim() != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected an IMAGE batch [B, H, W, 3], got shape {list(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("the image batch is empty: FID/KID need images")
    planar = images.permute(0, 3, 1, 2)
    if planar.shape[1] == 1:
        planar = planar.expand(-1, 3, -1, -1)
    return planar


def features(model: nn.Module, images: torch.Tensor, batch_size: int = 50,
             device: str | torch.device | None = None, progress: Progress | None = None) -> np.ndarray:
    """Pool3 features ``[B, 2048]`` (float32, numpy) of an IMAGE batch ``[B, H, W, 3]`` in 0..1.

    Runs ``batch_size`` images at a time on ``device`` (default: where the model is; the model is
    moved there). ``progress`` advances once per image and is asked about a cancel before each batch.
    """
    planar = _to_planar(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device).eval()
    progress = progress or SilentProgress(planar.shape[0])
    out = []
    with torch.inference_mode():
        for start in range(0, planar.shape[0], batch_size):
            progress.check_cancel()
            batch = planar[start:start + batch_size].to(device=device, dtype=torch.float32)
            out.append(model(batch).float().cpu())
            progress.advance(batch.shape[0])
    return torch.cat(out).numpy()


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 naming the network's weights: the weights file's own hash when it was loaded from one,
    otherwise a hash of the state dict (names, dtypes, shapes and values)."""
    known = getattr(model, "weights_sha256", None)
    return known or state_dict_sha256(model.state_dict())


def folder_features(model: nn.Module, paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
                    cache_dir: str | os.PathLike[str] | None = None, batch_size: int = 50,
                    device: str | torch.device | None = None, progress: Progress | None = None) -> np.ndarray:
    """Pool3 features ``[N, 2048]`` (float32, numpy) of image files, in the order given.

    ``paths`` is a list of files or one folder (its images in natural order). Each file is read with
    the pack's image reader (EXIF orientation applied, alpha composited on white), then resized and
    scaled as pytorch-fid does; for plain RGB files that is pytorch-fid's own pipeline. With
    ``cache_dir``, features are kept under the SHA-256 of each file's bytes (in shards), in a sub-folder per
    network, so unchanged files cost nothing next time (identical files are computed once).
    Unreadable files are named in an ImageFolderError before the network runs.
    """
    files = list_images(paths) if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not files:
        raise ImageFolderError("no image files given: FID/KID need images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    cache = FeatureCache(cache_dir, CACHE_FORMAT, model_fingerprint(model)) if cache_dir is not None else None
    digests: list[str] = []
    for path in files:
        try:
            digests.append(file_sha256(path))
        except OSError as exc:
            raise ImageFolderError(f"cannot read {str(path)!r}: {exc}") from exc
    found: dict[str, torch.Tensor] = {}
    if cache is not None:
        for digest in dict.fromkeys(digests):
            value = cache.get(digest)
            if value is not None:
                found[digest] = value
    todo = {d: p for d, p in zip(digests, files) if d not in found}  # one file per distinct content
    for path in todo.values():  # headers only: a bad file fails here, before the network runs
        try:
            open_image(path).close()
        except ImageFolderError as exc:
            raise ImageFolderError(f"{str(path)!r}: {exc}") from exc

    progress = progress or SilentProgress(len(files))
    progress.advance(len(files) - len(todo))
    device = torch.device(device) if device is not None else _model_device(model)
    if todo:
        model.to(device).eval()
    pending = list(todo.items())
    # leaving the block, a cancel too, writes the features computed so far
    with torch.inference_mode(), cache if cache is not None else contextlib.nullcontext():
        for start in range(0, len(pending), batch_size):
            group = pending[start:start + batch_size]
            resized = []
            for _, path in group:
                progress.check_cancel()
                try:
                    image = load_image(path)
                except ImageFolderError as exc:
                    raise ImageFolderError(f"{str(path)!r}: {exc}") from exc
                planar = image.permute(2, 0, 1).unsqueeze(0).to(device=device, dtype=torch.float32)
                resized.append(resize_for_inception(planar))
            values = model(torch.cat(resized)).float().cpu()
            found.update({digest: value.clone() for (digest, _), value in zip(group, values)})
            if cache is not None:
                cache.put_many([digest for digest, _ in group], values)
            progress.advance(len(group))
    return torch.stack([found[d] for d in digests]).numpy()


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def _as_features(values: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected features [N, D], got shape {list(array.shape)}")
    if array.shape[0] < 2:
        raise ValueError(f"{name}: FID/KID need at least 2 images per set, got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: features contain NaN or infinity")
    return array


def statistics(feats: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``np.cov(rowvar=False)``) in float64, as pytorch-fid."""
    act = _as_features(feats, "features")
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """pytorch-fid's ``calculate_frechet_distance``:
    ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))``, retried with ``eps * I`` added to both
    covariances when the product's square root is not finite; a real part is kept only when the
    diagonal's imaginary part is within 1e-3 of zero. ``sqrtm`` is called without ``disp``, which
    SciPy 1.18 removes (the result is the same)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in length: {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape:
        raise ValueError(f"covariances differ in shape: {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy's "matrix is singular" warning: the check below decides
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: the covariance product is singular; adding {eps} to the diagonal of both", stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            largest = np.max(np.abs(covmean.imag))
            raise ValueError(f"FID: the covariance square root has an imaginary component {largest}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, eps: float = 1e-6) -> float:
    """FID between two feature sets ``[N, D]`` and ``[M, D]``, pytorch-fid's formula in float64."""
    a, b = _as_features(a, "first set"), _as_features(b, "second set")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    mu1, sigma1 = statistics(a)
    mu2, sigma2 = statistics(b)
    return frechet_distance(mu1, sigma1, mu2, sigma2, eps)


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    m = k_xx.shape[0]
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid_from_features(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, subsets: int = 100,
                      subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018) as torch-fidelity computes it: ``subsets`` times, draw
    ``subset_size`` rows of each set without replacement (``np.random.RandomState(seed)``, first set
    then second) and take the unbiased MMD^2 under ``k(x, y) = (x.y / d + 1)^3``; returns the mean
    and the (population) standard deviation. ``subset_size`` is clipped to the smaller set, where
    torch-fidelity refuses; below that the numbers equal torch-fidelity's for the same seed."""
    a, b = _as_features(a, "first set"), _as_features(b, "second set")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}")
    m = min(int(subset_size), a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"KID subset size must be at least 2, got {subset_size}")
    n_a, n_b = a.shape[0], b.shape[0]
    # Kernels of whole sets once, then index them, when that is cheaper than a kernel per subset.
    whole = max(n_a, n_b) <= _FULL_KERNEL_MAX and n_a * n_a + n_b * n_b + n_a * n_b <= 3 * subsets * m * m
    if whole:
        k_aa, k_bb, k_ab = _polynomial_kernel(a, a), _polynomial_kernel(b, b), _polynomial_kernel(a, b)
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        ia = rng.choice(n_a, m, replace=False)
        ib = rng.choice(n_b, m, replace=False)
        if whole:
            mmds[i] = _mmd2_unbiased(k_aa[np.ix_(ia, ia)], k_bb[np.ix_(ib, ib)], k_ab[np.ix_(ia, ib)])
        else:
            x, y = a[ia], b[ib]
            mmds[i] = _mmd2_unbiased(_polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y))
    return float(np.mean(mmds)), float(np.std(mmds))


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10, shuffle: bool = True,
                    seed: int = 2020) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016) of 1008-way logits ``[N, C]``, as torch-fidelity's
    ``isc_features_to_metric`` computes it: the rows permuted by ``np.random.RandomState(seed)`` (when
    ``shuffle``; torch-fidelity's default seed is 2020), softmax in float64, the rows cut into ``splits``
    consecutive chunks ``[i*N//splits, (i+1)*N//splits)``, per chunk ``exp(mean_x KL(p(y|x) || p(y)))``
    with ``p(y)`` the chunk's mean; returns the mean and the (population) standard deviation over the chunks.
    Higher is better: confident and varied class predictions. A split needs at least one row."""
    values = torch.as_tensor(logits).detach().cpu()
    if values.dim() != 2:
        raise ValueError(f"Inception Score: expected logits [N, classes], got shape {list(values.shape)}")
    n = values.shape[0]
    if splits < 1:
        raise ValueError(f"Inception Score: splits must be at least 1, got {splits}")
    if n < splits:
        raise ValueError(f"Inception Score: {n} images cannot be cut into {splits} splits; lower the splits or "
                         "score more images")
    if not torch.isfinite(values).all():
        raise ValueError("Inception Score: the logits contain NaN or infinity")
    if shuffle:
        values = values[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    values = values.double()
    p, log_p = values.softmax(dim=1), values.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        chunk = slice(i * n // splits, (i + 1) * n // splits)
        marginal = p[chunk].mean(dim=0, keepdim=True)
        kl = (p[chunk] * (log_p[chunk] - marginal.log())).sum(dim=1)
        scores.append(float(kl.mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


@dataclass(frozen=True)
class Scores:
    """FID and KID between two sets, and the Inception Score of the first (the generated) set."""

    fid: float
    kid: float
    kid_std: float
    inception_score: float
    inception_score_std: float
    is_splits: int  # the splits actually used: the asked number, at most the first set's size
    images_a: int
    images_b: int

    def report(self) -> str:
        splits = f"{self.is_splits} split{'s' * (self.is_splits != 1)}"
        return (f"FID {self.fid:.3f}  KID {self.kid:.5f} ± {self.kid_std:.5f}  IS {self.inception_score:.3f} ± "
                f"{self.inception_score_std:.3f}  ({self.images_a} vs {self.images_b} images; IS of the first set "
                f"over {splits}; small sets bias FID upwards and IS downwards)")


def score_sets(model: FIDInceptionV3, a: np.ndarray, b: np.ndarray, kid_subsets: int = 100,
               kid_subset_size: int = 1000, seed: int = 0, is_splits: int = 10) -> Scores:
    """FID and KID between the pool3 features ``a`` and ``b``, and the Inception Score of ``a`` (the generated
    set) from ``model``'s logits of those features. ``seed`` draws KID's subsets and shuffles IS's rows, as
    torch-fidelity's one ``rng_seed`` does; ``is_splits`` is clipped to the size of ``a``."""
    fid_value = fid_from_features(a, b)
    kid, kid_std = kid_from_features(a, b, kid_subsets, kid_subset_size, seed)
    splits = min(is_splits, a.shape[0])
    is_mean, is_std = inception_score(model.logits(a), splits, shuffle=True, seed=seed)
    return Scores(fid_value, kid, kid_std, is_mean, is_std, splits, a.shape[0], b.shape[0])
