"""Colour from the pixels: histograms, the dominant palette and colour-tone words with the numbers behind them.

Every statistic is taken over the picture's 8-bit colours (each distinct colour once, weighted by how many pixels
have it), so a 12-megapixel photograph costs its few hundred thousand distinct colours, and the answer is the
same as over every pixel.

- **Histograms**: per channel in RGB and in YCbCr (ITU-R BT.601, full range, as JPEG:
  ``Y = 0.299 R + 0.587 G + 0.114 B``, ``Cb = 0.5 + (B - Y) / 1.772``, ``Cr = 0.5 + (R - Y) / 1.402``), ``bins``
  equal bins over 0..1, each histogram summing to 1.
- **Palette**: k-means (scikit-learn, seeded, ``N_INIT`` starts) in CIELAB, where equal distances look about
  equally different (sRGB decoded to linear light, to XYZ under D65, to L*a*b*). It is fitted on at most
  ``MAX_SAMPLES`` pixels (a seeded draw when the picture has more), then every pixel goes to its nearest centre, so
  each colour's share is exact over the whole picture. A colour is reported as the mean sRGB of its pixels; k
  drops to the number of distinct colours (a flat picture has one colour at 100 %).
- **Tone words**, each from one measured number against two thresholds (constants below); between them, no word:
  warm/cool from ``warmth``, the mean chroma projected on the hue angle 50 deg (``0.643 a* + 0.766 b*``, the warm
  axis of Ou et al.'s colour-emotion model, 2004: reds, oranges and yellows positive, blues and cyans negative,
  greys 0); bright/dark from the mean L*; vivid/muted from the mean chroma ``C* = sqrt(a*^2 + b*^2)``; high/low
  contrast from the standard deviation of L*.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..shared.colors import to_uint8

MAX_SAMPLES = 20_000  # pixels the k-means is fitted on; shares are then counted over every pixel
N_INIT = 4  # k-means starts; the best (lowest inertia) is kept
DEFAULT_BINS = 32
DEFAULT_PALETTE = 5

# sRGB (IEC 61966-2-1) primaries to CIE XYZ under D65, and the D65 white
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
D65_WHITE = np.array([0.95047, 1.0, 1.08883])
WARM_HUE_DEG = 50.0  # Ou et al. (2004): warm-cool = f(C*) * cos(h - 50 deg)

# (measure, low threshold, high threshold, word below, word above, Korean below, Korean above)
TONE_RULES = (
    ("warmth", -10.0, 10.0, "cool", "warm", "차가운", "따뜻한"),
    ("lightness", 35.0, 65.0, "dark", "bright", "어두운", "밝은"),
    ("chroma", 12.0, 35.0, "muted", "vivid", "차분한", "선명한"),
    ("contrast", 10.0, 25.0, "low contrast", "high contrast", "대비가 약한", "대비가 강한"),
)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``[N, 3]`` sRGB in 0..1 to CIELAB (D65): the sRGB curve undone, the linear light to XYZ, XYZ to L*a*b*."""
    rgb = np.asarray(rgb, dtype=np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ SRGB_TO_XYZ.T / D65_WHITE
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """``[N, 3]`` RGB in 0..1 to full-range BT.601 YCbCr in 0..1 (JPEG's)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    y = rgb @ np.array([0.299, 0.587, 0.114])
    return np.stack([y, 0.5 + (rgb[:, 2] - y) / 1.772, 0.5 + (rgb[:, 0] - y) / 1.402], axis=1)


@dataclass(frozen=True)
class PaletteColour:
    rgb: tuple[int, int, int]  # mean sRGB of its pixels, 0..255
    lab: tuple[float, float, float]  # its k-means centre
    share: float  # of all the picture's pixels

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)


@dataclass(frozen=True)
class ColourResult:
    size: tuple[int, int]  # height, width
    histograms: dict[str, dict[str, tuple[float, ...]]]  # "rgb"/"ycbcr" -> channel -> bins
    palette: tuple[PaletteColour, ...]  # largest share first
    measures: dict[str, float]  # warmth, lightness, chroma, contrast, mean_a, mean_b
    words: tuple[str, ...]
    words_ko: tuple[str, ...]

    def summary(self) -> str:
        """One line: the words, then the palette, like ``warm, bright: #c83c32 50%, #3246c8 50%``."""
        colours = ", ".join(f"{c.hex} {c.share * 100:.0f}%" for c in self.palette)
        return f"{', '.join(self.words) or 'neutral'}: {colours}"

    def record(self) -> dict:
        return {
            "size": list(self.size),
            "palette": [{"hex": c.hex, "rgb": list(c.rgb), "lab": [_round(v, 2) for v in c.lab],
                         "share": round(c.share, 4)} for c in self.palette],
            "words": list(self.words),
            "words_ko": list(self.words_ko),
            "measures": {k: _round(v, 2) for k, v in self.measures.items()},
            "thresholds": {rule[0]: [rule[1], rule[2]] for rule in TONE_RULES},
            "histograms": {space: {ch: [round(v, 6) for v in values] for ch, values in channels.items()}
                           for space, channels in self.histograms.items()},
        }


def _round(value: float, digits: int) -> float:
    return round(value, digits) + 0.0  # no "-0.0" in the record


def _distinct_colours(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The picture's distinct 8-bit colours ``[U, 3]`` (0..255), their pixel counts ``[U]``, and each pixel's
    index into them ``[H*W]``."""
    q = to_uint8(image.reshape(-1, 3)).to(torch.int64)
    packed = (q[:, 0] << 16) | (q[:, 1] << 8) | q[:, 2]
    values, inverse, counts = torch.unique(packed, return_inverse=True, return_counts=True)
    values = values.numpy()
    colours = np.stack([values >> 16, (values >> 8) & 255, values & 255], axis=1)
    return colours, counts.numpy(), inverse.numpy()


def _histograms(channels: np.ndarray, names: tuple[str, str, str], counts: np.ndarray,
                bins: int) -> dict[str, tuple[float, ...]]:
    total = counts.sum()
    return {name: tuple((np.histogram(np.clip(channels[:, i], 0.0, 1.0), bins=bins, range=(0.0, 1.0),
                                      weights=counts)[0] / total).tolist())
            for i, name in enumerate(names)}


def _palette(colours: np.ndarray, lab: np.ndarray, counts: np.ndarray, inverse: np.ndarray, size: int,
             seed: int) -> tuple[PaletteColour, ...]:
    from sklearn.cluster import KMeans

    pixels = inverse.shape[0]
    if pixels > MAX_SAMPLES:  # a seeded draw of pixels, folded into its distinct colours with their counts
        drawn = np.random.default_rng(seed).choice(pixels, MAX_SAMPLES, replace=False)
        fit_rows, fit_weights = np.unique(inverse[drawn], return_counts=True)
    else:
        fit_rows, fit_weights = np.arange(len(colours)), counts
    k = min(size, len(fit_rows))
    model = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(lab[fit_rows], sample_weight=fit_weights)
    centres = model.cluster_centers_
    nearest = model.predict(lab)  # every distinct colour, so every pixel, to its nearest centre
    found = []
    for c in range(k):
        mine = nearest == c
        weight = counts[mine].sum()
        if weight == 0:
            continue
        mean = (colours[mine] * counts[mine, None]).sum(0) / weight
        found.append(PaletteColour(tuple(int(v) for v in np.floor(mean + 0.5)), tuple(float(v) for v in centres[c]),
                                   float(weight / counts.sum())))
    return tuple(sorted(found, key=lambda colour: (-colour.share, colour.hex)))


def tone_words(measures: dict[str, float]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The English and Korean words the measures earn against TONE_RULES; a measure inside its band gives none."""
    words, words_ko = [], []
    for name, low, high, below, above, below_ko, above_ko in TONE_RULES:
        value = measures[name]
        if value >= high:
            words.append(above)
            words_ko.append(above_ko)
        elif value <= low:
            words.append(below)
            words_ko.append(below_ko)
    return tuple(words), tuple(words_ko)


def analyse_colour(image: torch.Tensor, palette_size: int = DEFAULT_PALETTE, bins: int = DEFAULT_BINS,
                   seed: int = 0) -> ColourResult:
    """The colour analysis of one ``[H, W, 3]`` picture in 0..1 (see the module's notes)."""
    if image.dim() != 3 or image.shape[-1] != 3 or image.shape[0] * image.shape[1] == 0:
        raise ValueError(f"expected one picture [H, W, 3], got shape {list(image.shape)}")
    if palette_size < 1 or bins < 1:
        raise ValueError(f"palette_size and bins must be at least 1, got {palette_size} and {bins}")
    colours, counts, inverse = _distinct_colours(image.detach().float().cpu())
    rgb = colours / 255.0
    lab = srgb_to_lab(rgb)
    weights = counts / counts.sum()
    lightness = float(weights @ lab[:, 0])
    mean_a, mean_b = float(weights @ lab[:, 1]), float(weights @ lab[:, 2])
    angle = math.radians(WARM_HUE_DEG)
    measures = {
        "warmth": math.cos(angle) * mean_a + math.sin(angle) * mean_b,
        "lightness": lightness,
        "chroma": float(weights @ np.hypot(lab[:, 1], lab[:, 2])),
        "contrast": math.sqrt(max(0.0, float(weights @ (lab[:, 0] - lightness) ** 2))),
        "mean_a": mean_a,
        "mean_b": mean_b,
    }
    words, words_ko = tone_words(measures)
    histograms = {"rgb": _histograms(rgb, ("r", "g", "b"), counts, bins),
                  "ycbcr": _histograms(rgb_to_ycbcr(rgb), ("y", "cb", "cr"), counts, bins)}
    palette = _palette(colours, lab, counts, inverse, palette_size, seed)
    return ColourResult((int(image.shape[0]), int(image.shape[1])), histograms, palette, measures, words, words_ko)


def swatch(palette: tuple[PaletteColour, ...], width: int = 512, height: int = 96) -> Image.Image:
    """The palette as bands side by side, each as wide as its share, labelled with its hex and share where the
    band is wide enough, in black or white, whichever stands out."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    edges = np.floor(np.cumsum([0.0, *(c.share for c in palette)]) * width + 0.5).astype(int)
    edges[-1] = width  # shares rounded in the sum still fill the strip
    for colour, left, right in zip(palette, edges[:-1], edges[1:]):
        if right <= left:
            continue
        draw.rectangle((left, 0, right - 1, height - 1), fill=colour.rgb)
        ink = (0, 0, 0) if colour.lab[0] > 55 else (255, 255, 255)
        if right - left >= 56:
            draw.text((left + 4, 4), colour.hex, fill=ink)
            draw.text((left + 4, 18), f"{colour.share * 100:.1f}%", fill=ink)
    return img

