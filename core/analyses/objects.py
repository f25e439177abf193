"""Objects (claims 18-19): open-vocabulary detection of a taxonomy group's labels, and main versus auxiliary objects.

The detector is OWLv2 or OWL-ViT (transformers), loaded offline from a model folder like CLIP. Its text queries are
the phrases of a taxonomy group: each label's prompts and synonyms (its display name where it has neither). Every
predicted box takes the label whose best phrase scores highest (sigmoid of the detector's logit); boxes under the
score threshold are dropped, and class-agnostic non-maximum suppression keeps, of boxes overlapping by more than the
IoU threshold, the highest-scoring one (one object per place, under its best label). A box left with no area
once clipped to the picture (OWLv2 also looks at the padding that makes the picture square) is dropped.

Main versus auxiliary (the seed: an object near the centre and large is a main object):

    area_share      = box area / picture area                                   (0..1)
    centre_distance = |box centre - picture centre| / half the picture's diagonal (0 at the centre, 1 at a corner)
    prominence      = area_share * (1 - centre_distance)

an object is main when its prominence is at least ``main_threshold``, else auxiliary; so a box covering a fifth of
the picture at its centre (0.2) is main at the default 0.1, and so is one covering 40 % whose centre is 70 % of the
way to a corner (0.12), while a small centred one (5 %: 0.05) is auxiliary. No object at all may be main.

Pictures whose shorter side is under ``MIN_SIDE`` pixels are refused: the detector sees every picture at its own
input size (960 px for OWLv2 base, 768 for OWL-ViT), and such a picture would be nearly all interpolation.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from ..curator.taxonomy import Taxonomy, TaxonomyError
from ..shared.colors import to_uint8
from ..shared.hf_folders import (
    WEIGHT_FILES,
    HoldsModel,
    ModelFolderError,
    check_files,
    dtype_argument,
    loading_weights,
)

DEFAULT_DETECTOR = "google/owlv2-base-patch16-ensemble"
KINDS = ("owlv2", "owlvit")
MIN_SIDE = 32
MAIN_COLOUR = (230, 60, 40)
AUXILIARY_COLOUR = (40, 120, 230)


@dataclass
class Detector(HoldsModel):
    model: Any  # transformers Owlv2ForObjectDetection or OwlViTForObjectDetection
    processor: Any  # its processor (tokenizer and image processor)
    kind: str  # "owlv2" (boxes relative to the picture padded to a square) or "owlvit" (relative to the picture)
    name: str



def load_detector(folder: Path, device: torch.device | str = "cpu", precision: str = "auto") -> Detector:
    """An OWLv2 or OWL-ViT folder (config, weights, tokenizer and preprocessor files), loaded offline."""
    from transformers import Owlv2ForObjectDetection, Owlv2Processor, OwlViTForObjectDetection, OwlViTProcessor

    from ..curator.clip_model import precision_dtype

    device = torch.device(device)
    check_files(folder, "object detector", {"config": ("config.json",), "weights": WEIGHT_FILES,
                                            "tokenizer": ("tokenizer.json", "vocab.json"),
                                            "preprocessor": ("preprocessor_config.json", "processor_config.json")})
    kind = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if kind not in KINDS:
        raise ModelFolderError(f"{str(folder)!r} holds a {kind!r} model, not an open-vocabulary detector (OWLv2 or "
                               f"OWL-ViT, such as {DEFAULT_DETECTOR})")
    model_class, processor_class = ((Owlv2ForObjectDetection, Owlv2Processor) if kind == "owlv2"
                                    else (OwlViTForObjectDetection, OwlViTProcessor))
    dtype = precision_dtype(precision, device)
    with loading_weights(folder, "object detector", DEFAULT_DETECTOR):
        model = model_class.from_pretrained(str(folder), local_files_only=True, **dtype_argument(dtype))
    processor = processor_class.from_pretrained(str(folder), local_files_only=True)
    return Detector(model.to(device).eval().requires_grad_(False), processor, kind, folder.name)


def group_queries(taxonomy: Taxonomy, group_name: str) -> tuple[list[str], list[str]]:
    """The query phrases of a taxonomy group and, for each, its label's id."""
    if group_name not in taxonomy.groups:
        raise TaxonomyError(f"taxonomy {taxonomy.name!r} has no group {group_name!r}; its groups are: "
                            f"{', '.join(taxonomy.groups)}")
    texts, labels = [], []
    for label in taxonomy.groups[group_name].labels.values():
        phrases = label.texts(["{}"]) or [label.name()]
        texts += phrases
        labels += [label.id] * len(phrases)
    return texts, labels


@dataclass(frozen=True)
class DetectedObject:
    label: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    area_share: float
    centre_distance: float
    prominence: float
    role: str  # "main" or "auxiliary"

    def record(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 4), "box": [round(v, 1) for v in self.box],
                "area_share": round(self.area_share, 4), "centre_distance": round(self.centre_distance, 4),
                "prominence": round(self.prominence, 4), "role": self.role}


@dataclass(frozen=True)
class Objects:
    objects: tuple[DetectedObject, ...]  # main ones first, each part by prominence
    queries: tuple[str, ...]
    size: tuple[int, int]  # the picture's width and height

    def record(self) -> dict[str, Any]:
        return {"objects": [o.record() for o in self.objects],
                "main": [o.label for o in self.objects if o.role == "main"],
                "auxiliary": [o.label for o in self.objects if o.role == "auxiliary"],
                "queries": list(self.queries),
                "size": list(self.size),
                "rule": "main when prominence = area_share * (1 - centre_distance) reaches the main threshold"}

    def summary(self, labels: dict[str, str] | None = None) -> str:
        """``main: a, b; auxiliary: c`` with each label's display name where ``labels`` gives one."""
        names = labels or {}

        def names_of(role: str) -> str:
            return ", ".join(names.get(o.label, o.label) for o in self.objects if o.role == role) or "none"

        return f"main: {names_of('main')}; auxiliary: {names_of('auxiliary')}"


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU ``[N, M]`` of ``[N, 4]`` and ``[M, 4]`` boxes (x0, y0, x1, y1)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> list[int]:
    """Indices of the boxes kept, best score first: each box suppresses the lower-scoring ones that overlap it by
    more than ``iou_threshold``."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    iou = box_iou(boxes, boxes)
    kept: list[int] = []
    for i in order:
        if all(float(iou[i, j]) <= iou_threshold for j in kept):
            kept.append(i)
    return kept


def placement(box: Sequence[float], width: int, height: int) -> tuple[float, float, float]:
    """``(area_share, centre_distance, prominence)`` of a box in a ``width`` x ``height`` picture."""
    x0, y0, x1, y1 = box
    area_share = max(0.0, x1 - x0) * max(0.0, y1 - y0) / (width * height)
    dx, dy = (x0 + x1) / 2 - width / 2, (y0 + y1) / 2 - height / 2
    centre_distance = min(1.0, (dx * dx + dy * dy) ** 0.5 / ((width * width + height * height) ** 0.5 / 2))
    return area_share, centre_distance, area_share * (1.0 - centre_distance)


def pixel_boxes(pred_boxes: torch.Tensor, kind: str, width: int, height: int) -> torch.Tensor:
    """The detector's ``[P, 4]`` (centre x, centre y, width, height; 0..1) boxes as pixels (x0, y0, x1, y1), clipped
    to the picture. OWLv2 sees the picture padded to a square at the bottom and right, so its boxes are fractions
    of the longer side; OWL-ViT sees it stretched to a square, so fractions of each side."""
    scale = (torch.tensor([max(width, height)] * 2 if kind == "owlv2" else [width, height], dtype=torch.float32))
    centre, size = pred_boxes[:, :2].float() * scale, pred_boxes[:, 2:].float() * scale
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    limit = torch.tensor([width, height, width, height], dtype=torch.float32)
    return torch.minimum(boxes.clamp(min=0), limit)


def decide(logits: torch.Tensor, pred_boxes: torch.Tensor, query_labels: Sequence[str], kind: str, width: int,
           height: int, score_threshold: float, iou_threshold: float, main_threshold: float
           ) -> tuple[DetectedObject, ...]:
    """Objects from one picture's raw detector outputs (``logits [P, Q]``, ``pred_boxes [P, 4]``): best label per
    box, score threshold, NMS, placement and role; main objects first, each part by prominence then score."""
    scores_pq = torch.sigmoid(logits.float())
    names = list(dict.fromkeys(query_labels))
    columns = torch.tensor([names.index(label) for label in query_labels])
    per_label = torch.full((scores_pq.shape[0], len(names)), -1.0).scatter_reduce(
        1, columns.expand_as(scores_pq), scores_pq, reduce="amax")
    scores, best = per_label.max(dim=1)
    boxes = pixel_boxes(pred_boxes, kind, width, height)
    # a box wholly outside the picture (OWLv2's padding) has no area left after clipping
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    candidates = [i for i in range(len(scores)) if float(scores[i]) >= score_threshold and float(area[i]) > 0]
    kept = [candidates[k] for k in nms(boxes[candidates], scores[candidates], iou_threshold)] if candidates else []
    found = []
    for i in kept:
        box = tuple(float(v) for v in boxes[i])
        area_share, centre_distance, prominence = placement(box, width, height)
        role = "main" if prominence >= main_threshold else "auxiliary"
        found.append(DetectedObject(names[int(best[i])], float(scores[i]), box, area_share, centre_distance,  # type: ignore[arg-type]
                                    prominence, role))
    return tuple(sorted(found, key=lambda o: (o.role != "main", -o.prominence, -o.score)))


def check_picture_size(image: torch.Tensor) -> None:
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"a {width}x{height} picture is too small for the object detector: its shorter side must "
                         f"be at least {MIN_SIDE} pixels (the detector looks at every picture at 768-960 pixels); "
                         "upscale it first, for example with ComfyUI's Upscale Image node")


def detect_objects(detector: Detector, image: torch.Tensor, taxonomy: Taxonomy, group: str,
                   score_threshold: float = 0.1, iou_threshold: float = 0.3, main_threshold: float = 0.1) -> Objects:
    """Objects of ``group``'s labels in ``image`` (``[H, W, 3]`` 0..1)."""
    texts, query_labels = group_queries(taxonomy, group)
    check_picture_size(image)
    height, width = image.shape[:2]
    limit = int(detector.model.config.text_config.max_position_embeddings)
    tokens = detector.processor.tokenizer(texts, padding="max_length", truncation=True, max_length=limit,
                                          return_tensors="pt")
    array = to_uint8(image.float()).cpu().numpy()
    pixels = detector.processor.image_processor(images=array, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = detector.model(input_ids=tokens["input_ids"].to(detector.device),
                             attention_mask=tokens["attention_mask"].to(detector.device),
                             pixel_values=pixels.to(detector.device, detector.dtype))
    objects = decide(out.logits[0].cpu(), out.pred_boxes[0].cpu(), query_labels, detector.kind, width, height,
                     score_threshold, iou_threshold, main_threshold)
    return Objects(objects, tuple(texts), (width, height))


def draw_boxes(image: torch.Tensor, result: Objects, labels: dict[str, str] | None = None) -> Image.Image:
    """The picture with each object's box and label: main objects in red, auxiliary ones in blue."""
    picture = Image.fromarray(to_uint8(image.float()).cpu().numpy())
    from ..story.strip import font_for

    draw = ImageDraw.Draw(picture)
    line = max(1, round(min(picture.size) / 200))
    texts = [f"{(labels or {}).get(o.label, o.label)} {o.score:.2f}" for o in result.objects]
    font = font_for("".join(texts), max(10, round(min(picture.size) / 40)))  # a font that has Korean glyphs too
    for obj, text in reversed(list(zip(result.objects, texts))):  # main objects drawn last, on top
        colour = MAIN_COLOUR if obj.role == "main" else AUXILIARY_COLOUR
        x0, y0, x1, y1 = obj.box
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour, width=line)
        left, top, right, bottom = draw.textbbox((x0 + 1, y0 + 1), text, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=colour)
        draw.text((x0 + 1, y0 + 1), text, fill="white", font=font)
    return picture
