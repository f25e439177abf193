"""The AdaIN networks: the normalised VGG-19 encoder up to relu4_1, and its mirrored decoder.

Both are plain ``nn.Sequential`` with the layer indices of the PyTorch AdaIN port, so its public
``vgg_normalised.pth`` (the whole VGG-19; the layers past relu4_1 are dropped on loading) and
``decoder.pth`` load as they are, as do the safetensors files the pack writes. Layer widths are
read from the weights, so narrower networks of the same shape (the tests' tiny ones) load too.
Input pictures are RGB 0..1: the encoder's first 1x1 convolution does VGG's own normalisation.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from ..shared.state_dicts import file_sha256, mismatch, read_weights, save_new_file
from ..shared.weight_files import check_weight_file, reading

ENCODER_FILE = "vgg_normalised.pth"
DECODER_FILE = "decoder.pth"
WEIGHTS_URL = "https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0/"  # + the file name
WEIGHTS_SOURCE = f"the PyTorch AdaIN port's release ({WEIGHTS_URL}{ENCODER_FILE} and {WEIGHTS_URL}{DECODER_FILE})"
RELU_ENDS = (4, 11, 18, 31)  # the encoder's slices end after relu1_1, relu2_1, relu3_1, relu4_1
MIN_SIDE = 16  # three ceil-mode poolings must leave 2 pixels for the last reflection padding


def _conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3), nn.ReLU()]


def _pool() -> nn.Module:
    return nn.MaxPool2d(2, 2, 0, ceil_mode=True)


def build_encoder(base: int = 64) -> nn.Sequential:
    """The normalised VGG-19 up to relu4_1 (indices 0..30 of the port's ``vgg``); ``base`` is its first width."""
    c1, c2, c3, c4 = base, base * 2, base * 4, base * 8
    layers: list[nn.Module] = [nn.Conv2d(3, 3, 1)]
    layers += _conv_block(3, c1) + _conv_block(c1, c1) + [_pool()]
    layers += _conv_block(c1, c2) + _conv_block(c2, c2) + [_pool()]
    layers += _conv_block(c2, c3) + _conv_block(c3, c3) + _conv_block(c3, c3) + _conv_block(c3, c3) + [_pool()]
    layers += _conv_block(c3, c4)
    return nn.Sequential(*layers)


def build_decoder(base: int = 64) -> nn.Sequential:
    """The encoder's mirror: nearest-neighbour upsampling, reflection padding, no normalisation layers."""
    c1, c2, c3, c4 = base, base * 2, base * 4, base * 8
    up = nn.Upsample(scale_factor=2, mode="nearest")
    layers: list[nn.Module] = _conv_block(c4, c3) + [up]
    layers += _conv_block(c3, c3) + _conv_block(c3, c3) + _conv_block(c3, c3) + _conv_block(c3, c2) + [up]
    layers += _conv_block(c2, c2) + _conv_block(c2, c1) + [up]
    layers += _conv_block(c1, c1) + [nn.ReflectionPad2d(1), nn.Conv2d(c1, 3, 3)]
    return nn.Sequential(*layers)


class AdaINModel(nn.Module):
    """A frozen encoder and a decoder, with where their weights came from (for run keys and metadata)."""

    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential, encoder_sha256: str = "",
                 decoder_sha256: str = "") -> None:
        super().__init__()
        self.encoder = encoder.requires_grad_(False).eval()
        self.decoder = decoder
        self.encoder_sha256 = encoder_sha256
        self.decoder_sha256 = decoder_sha256
        self._slices = [encoder[a:b] for a, b in zip((0, *RELU_ENDS[:-1]), RELU_ENDS)]

    @property
    def base(self) -> int:
        return self.encoder[2].out_channels

    @property
    def channels(self) -> int:
        """Width of the relu4_1 features AdaIN works on (512 for the real network)."""
        return self.encoder[-2].out_channels

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """relu4_1 features of ``[B, 3, H, W]`` RGB 0..1 pictures: ``[B, C, ceil(H/8), ceil(W/8)]``."""
        return self.encoder(images)

    def encode_levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """relu1_1, relu2_1, relu3_1 and relu4_1 features (the style loss compares all four)."""
        out = []
        for part in self._slices:
            images = part(images)
            out.append(images)
        return out

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)


def find_weights(name: str, folders: Iterable[str | os.PathLike[str]], what: str) -> Path:
    """The first of ``folders`` that holds ``name``, else ``name`` as a path (absolute, or relative to the working
    directory); the error names the file, every place searched and where the public files come from."""
    from ..shared.hf_folders import ModelFolderError, locate, places

    folders = [Path(f).expanduser() for f in folders]
    found = locate(name, folders, Path.is_file)
    if found is not None:
        return found
    raise ModelFolderError(
        f"AdaIN {what} {name.strip()!r} is not in {places(folders)}. Put it in the first of those folders (in ComfyUI: "
        f"models/atelier/adain): {ENCODER_FILE} and {DECODER_FILE} come from {WEIGHTS_SOURCE}; decoders trained by "
        "Atelier are safetensors files written there.")


def _checked(path: Path, net: nn.Sequential, state: dict[str, torch.Tensor], what: str) -> nn.Sequential:
    problems = mismatch(net.state_dict(), state)
    if problems:
        raise ValueError(f"{str(path)!r} does not fit the AdaIN {what}: keys {problems}")
    net.load_state_dict(state)
    return net


def _read(path: Path, what: str, url: str, how: str) -> dict[str, torch.Tensor]:
    """The tensors of a weight file; an empty, cut-short or code-carrying file is one error saying ``how`` to
    get it again (the public file is at ``url``)."""
    check_weight_file(path, what, how)
    with reading(path, what, how, url):
        return read_weights(path, what)


def load_encoder(path: Path) -> nn.Sequential:
    """The encoder from a full normalised VGG-19 (``vgg_normalised.pth``) or one cut at relu4_1."""
    url = WEIGHTS_URL + ENCODER_FILE
    state = _read(path, "AdaIN encoder weights", url, f"get it again from {url}")
    # the public file holds the whole VGG-19; only layers 0..30 (up to relu4_1) are used
    state = {k: v for k, v in state.items() if not (k.split(".")[0].isdigit() and int(k.split(".")[0]) >= 31)}
    base = state["2.weight"].shape[0] if "2.weight" in state else 64
    return _checked(path, build_encoder(base), state, "encoder (normalised VGG-19 up to relu4_1)")


def load_decoder(path: Path) -> nn.Sequential:
    url = WEIGHTS_URL + DECODER_FILE
    state = _read(path, "AdaIN decoder weights", url, f"get it again from {url}, or train the decoder again (Atelier "
                  "Train AdaIN Decoder)")
    base = state["28.weight"].shape[1] if "28.weight" in state and state["28.weight"].dim() == 4 else 64
    return _checked(path, build_decoder(base), state, "decoder (the encoder's mirror)")


def load_model(encoder_path: Path, decoder_path: Path | None = None, seed: int = 0) -> AdaINModel:
    """Encoder and decoder from their files; without a decoder file, a new decoder initialised from ``seed``
    (to train from scratch)."""
    encoder = load_encoder(encoder_path)
    base = encoder[2].out_channels
    if decoder_path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            decoder = build_decoder(base)
        return AdaINModel(encoder, decoder, file_sha256(encoder_path), f"new (seed {seed})")
    decoder = load_decoder(decoder_path)
    if decoder[1].in_channels != encoder[-2].out_channels:
        raise ValueError(f"decoder {str(decoder_path)!r} takes {decoder[1].in_channels}-channel features but the "
                         f"encoder {str(encoder_path)!r} gives {encoder[-2].out_channels}: they are not a pair")
    return AdaINModel(encoder, decoder, file_sha256(encoder_path), file_sha256(decoder_path))


def save_decoder(decoder: nn.Sequential, folder: Path, name: str, metadata: dict[str, object]) -> Path:
    """``<name>.safetensors`` in ``folder`` (never replacing a file), loadable by ``load_decoder``."""
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in decoder.state_dict().items()}
    return save_new_file(folder, name, tensors, {"format": "atelier-adain-decoder", **metadata}, "decoder name")
