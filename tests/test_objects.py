"""Objects: open-vocabulary detection of a taxonomy group's labels (tiny random OWL-ViT and OWLv2), NMS, the main
and auxiliary rule on hand-made boxes, drawing and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atelier.core.analyses import objects
from atelier.core.curator.taxonomy import TaxonomyError, load_taxonomy

from helpers import tiny_owl_folder

TAXONOMY = """name: things
groups:
  thing:
    mode: multi
    labels:
      cat: {display: {en: cat, ko: 고양이}, prompts: [a cat], synonyms: [kitten]}
      dog: {prompts: [a dog]}
      vase: {}
  colour:
    labels: [red, blue]
"""


@pytest.fixture(scope="module")
def taxonomy(tmp_path_factory):
    path = tmp_path_factory.mktemp("tax") / "things.yaml"
    path.write_text(TAXONOMY, encoding="utf-8")
    return load_taxonomy(path)


def test_queries_are_the_group_phrases(taxonomy):
    texts, labels = objects.group_queries(taxonomy, "thing")
    assert texts == ["a cat", "kitten", "a dog", "vase"] and labels == ["cat", "cat", "dog", "vase"]
    with pytest.raises(TaxonomyError, match="no group 'objects'; its groups are: thing, colour"):
        objects.group_queries(taxonomy, "objects")


def test_nms_on_hand_made_boxes():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5]], dtype=torch.float32)
    scores = torch.tensor([0.8, 0.9, 0.5, 0.7])
    # IoU(0, 1) = 81 / 119 = 0.68; IoU(1, 3) = 36 / 114 = 0.32; IoU(0, 3) = 0.5
    assert objects.box_iou(boxes[:2], boxes[:2])[0, 1].item() == pytest.approx(81 / 119)
    assert objects.nms(boxes, scores, 0.6) == [1, 3, 2]
    assert objects.nms(boxes, scores, 0.3) == [1, 2]
    assert objects.nms(boxes, scores, 0.7) == [1, 0, 3, 2]


def test_role_rule_on_hand_made_boxes():
    # a 100 x 80 picture: half-diagonal 64.03
    share, distance, prominence = objects.placement((30, 20, 70, 60), 100, 80)  # centred, 1600 / 8000
    assert (share, distance, prominence) == (0.2, 0.0, 0.2)
    share, distance, prominence = objects.placement((0, 0, 20, 16), 100, 80)  # corner
    assert share == pytest.approx(0.04)
    assert distance == pytest.approx((40**2 + 32**2) ** 0.5 / ((100**2 + 80**2) ** 0.5 / 2))
    assert prominence == pytest.approx(0.04 * (1 - distance))
    assert objects.placement((0, 0, 100, 80), 100, 80) == (1.0, 0.0, 1.0)


def test_decide_is_exact_on_fixed_outputs():
    """Four predicted boxes, three queries (two for 'cat'), a 200 x 100 picture, OWL-ViT box convention."""
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    logits = torch.tensor([[logit(0.2), logit(0.6), logit(0.1)],    # cat by its second phrase, 0.6
                           [logit(0.5), logit(0.3), logit(0.55)],   # dog 0.55, overlaps box 0 a lot
                           [logit(0.05), logit(0.02), logit(0.3)],  # dog 0.3, small, in a corner
                           [logit(0.01), logit(0.01), logit(0.05)]])  # under the threshold
    pred_boxes = torch.tensor([[0.5, 0.5, 0.5, 0.6], [0.52, 0.5, 0.5, 0.6], [0.1, 0.1, 0.1, 0.1],
                               [0.5, 0.5, 1.0, 1.0]])
    found = objects.decide(logits, pred_boxes, ["cat", "cat", "dog"], "owlvit", 200, 100, score_threshold=0.1,
                           iou_threshold=0.5, main_threshold=0.1)
    assert [(o.label, o.role) for o in found] == [("cat", "main"), ("dog", "auxiliary")]
    cat, dog = found
    assert cat.score == pytest.approx(0.6) and cat.box == pytest.approx((50, 20, 150, 80))
    assert cat.area_share == pytest.approx(0.3) and cat.centre_distance == pytest.approx(0.0, abs=1e-6)
    assert dog.score == pytest.approx(0.3) and dog.box == pytest.approx((10, 5, 30, 15))
    # the same boxes read as OWLv2's: fractions of the longer side of the picture padded to a square
    v2 = objects.decide(logits, pred_boxes, ["cat", "cat", "dog"], "owlv2", 200, 100, 0.1, 0.5, 0.1)
    assert v2[0].box == pytest.approx((50, 40, 150, 100))  # y clipped to the picture
    record = json.loads(json.dumps(objects.Objects(found, ("a cat", "kitten", "a dog"), (200, 100)).record()))
    assert record["main"] == ["cat"] and record["auxiliary"] == ["dog"]
    assert record["objects"][0] == {"label": "cat", "score": 0.6, "box": [50.0, 20.0, 150.0, 80.0],
                                    "area_share": 0.3, "centre_distance": 0.0, "prominence": 0.3, "role": "main"}


@pytest.mark.parametrize("kind", ["owlv2", "owlvit"])
def test_tiny_detector_end_to_end(tmp_path, taxonomy, kind):
    folder = tiny_owl_folder(tmp_path / kind, kind)
    detector = objects.load_detector(folder)
    assert detector.kind == kind
    image = torch.from_numpy(np.random.default_rng(0).uniform(0, 1, (48, 64, 3)).astype(np.float32))
    found = objects.detect_objects(detector, image, taxonomy, "thing", score_threshold=0.0, iou_threshold=0.5)
    assert found.queries == ("a cat", "kitten", "a dog", "vase") and found.size == (64, 48)
    # the same as the transformers processor's own inputs through the model, decided by hand
    inputs = detector.processor(text=[list(found.queries)], images=(image.numpy() * 255 + 0.5).astype(np.uint8),
                                return_tensors="pt")
    with torch.no_grad():
        out = detector.model(**inputs)
    assert out.logits.shape == (1, 16, 4) and out.pred_boxes.shape == (1, 16, 4)  # 16 patches of 8 px
    expected = objects.decide(out.logits[0], out.pred_boxes[0], ["cat", "cat", "dog", "vase"], kind, 64, 48,
                              0.0, 0.5, 0.1)
    assert len(found.objects) == len(expected) > 0
    for got, want in zip(found.objects, expected):
        assert got.label == want.label and got.role == want.role
        assert got.score == pytest.approx(want.score, abs=1e-5) and got.box == pytest.approx(want.box, abs=1e-3)
    for obj in found.objects:
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 48
    picture = np.asarray(objects.draw_boxes(image, found, {"cat": "고양이"}))
    assert picture.shape == (48, 64, 3)


def test_draw_boxes_colours_main_and_auxiliary():
    image = torch.zeros(100, 200, 3)
    main = objects.DetectedObject("cat", 0.9, (50.0, 20.0, 150.0, 80.0), 0.3, 0.0, 0.3, "main")
    aux = objects.DetectedObject("dog", 0.4, (160.0, 60.0, 190.0, 90.0), 0.045, 0.6, 0.018, "auxiliary")
    picture = np.asarray(objects.draw_boxes(image, objects.Objects((main, aux), ("a cat", "a dog"), (200, 100))))
    assert tuple(picture[79, 100]) == objects.MAIN_COLOUR and tuple(picture[89, 175]) == objects.AUXILIARY_COLOUR
    assert tuple(picture[50, 100]) == (0, 0, 0)  # inside a box stays as it was


def test_bad_input(tmp_path, taxonomy):
    from atelier.core.shared.hf_folders import ModelFolderError, find_model_folder

    with pytest.raises(ModelFolderError, match=r"object detector model 'google/owlv2-base-patch16-ensemble' is not "
                       r"on disk.*owlv2-base-patch16-ensemble.*hf download"):
        find_model_folder(objects.DEFAULT_DETECTOR, [tmp_path / "detectors"], "object detector",
                          objects.DEFAULT_DETECTOR)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text('{"model_type": "owlv2"}')
    with pytest.raises(ModelFolderError, match="missing: weights.*tokenizer.*preprocessor"):
        objects.load_detector(tmp_path / "half")
    detector = objects.load_detector(tiny_owl_folder(tmp_path / "owl"))
    with pytest.raises(ValueError, match="20x100 picture is too small.*at least 32 pixels.*Upscale"):
        objects.detect_objects(detector, torch.zeros(100, 20, 3), taxonomy, "thing")
    with pytest.raises(TaxonomyError, match="its groups are: thing, colour"):
        objects.detect_objects(detector, torch.zeros(64, 64, 3), taxonomy, "things")


def test_a_box_in_owlv2_padding_is_dropped():
    logits = torch.tensor([[3.0], [3.0]])
    pred_boxes = torch.tensor([[0.5, 0.8, 0.1, 0.1], [0.5, 0.25, 0.1, 0.1]])  # below the picture; inside it
    found = objects.decide(logits, pred_boxes, ["cat"], "owlv2", 200, 100, 0.1, 0.3, 0.1)
    assert [o.box for o in found] == [pytest.approx((90, 40, 110, 60))]


def test_detector_nodes(tmp_path, taxonomy, monkeypatch):
    from atelier.core.shared.hf_folders import ModelFolderError
    from atelier.nodes.analyses import AtelierDetectObjects, AtelierLoadDetector

    from helpers import node_defaults

    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path / "ComfyUI"))
    where = tmp_path / "ComfyUI" / "models" / "atelier" / "detectors"
    with pytest.raises(ModelFolderError, match=f"{where}.*hf download google/owlv2-base-patch16-ensemble.*"
                       f"{where / 'owlv2-base-patch16-ensemble'}"):
        AtelierLoadDetector().load(objects.DEFAULT_DETECTOR, "auto", "cpu")
    tiny_owl_folder(where / "owlv2-base-patch16-ensemble")  # where the message says to put it
    (detector,) = AtelierLoadDetector().load(objects.DEFAULT_DETECTOR, "auto", "cpu")
    images = torch.from_numpy(np.random.default_rng(1).uniform(0, 1, (2, 40, 56, 3)).astype(np.float32))
    args = node_defaults(AtelierDetectObjects, group="thing", score_threshold=0.0, language="ko")
    objects_json, boxes, summary = AtelierDetectObjects().run(detector, taxonomy, images=images, **args)
    records = json.loads(objects_json)
    assert len(records) == 2 and boxes.shape == (2, 40, 56, 3)
    assert set(records[0]) >= {"objects", "main", "auxiliary", "queries"}
    korean = {"cat": "고양이", "dog": "dog", "vase": "vase"}
    for line, record in zip(summary.splitlines(), records):
        main = ", ".join(korean[label] for label in record["main"]) or "none"
        auxiliary = ", ".join(korean[label] for label in record["auxiliary"]) or "none"
        assert line == f"main: {main}; auxiliary: {auxiliary}"
    assert records[0]["objects"] and [o["role"] for o in records[0]["objects"]] == sorted(
        (o["role"] for o in records[0]["objects"]), key=lambda role: role != "main")
    with pytest.raises(TaxonomyError, match="its groups are: thing, colour"):
        AtelierDetectObjects().run(detector, taxonomy, images=images, **{**args, "group": "subject"})
