"""Seeded random augmentation: determinism, probabilities, ranges, and per-image independence."""
from __future__ import annotations

import pytest
import torch

from atelier.core.dataset import augment, transforms
from atelier.core.dataset.augment import AugmentSpec, Range
from atelier.core.shared.progress import Cancelled

from helpers import as_batch, photo

FULL = AugmentSpec(hflip=0.5, vflip=0.5, grayscale=0.3, saturation=Range(0.5, -0.3, 0.3),
                   brightness=Range(0.5, 0.7, 1.3), rotation=Range(0.7, -30, 30), translate=Range(0.5, -0.1, 0.1),
                   scale=Range(0.5, 0.8, 1.2), shear=Range(0.5, -10, 10), fill=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    cat = photo("chelsea.jpg", (96, 64))
    return as_batch(*[cat] * 6)


def test_same_seed_same_output_other_seed_other_output(batch: torch.Tensor) -> None:
    a, b = augment.augment(batch, FULL, seed=11), augment.augment(batch, FULL, seed=11)
    assert torch.equal(a, b)
    assert not torch.equal(a, augment.augment(batch, FULL, seed=12))
    assert a.shape == batch.shape and a.min() >= 0 and a.max() <= 1


def test_an_image_result_does_not_depend_on_the_batch_around_it(batch: torch.Tensor) -> None:
    whole = augment.augment(batch, FULL, seed=5)
    draws = augment.draw(FULL, [augment.derive_seed(5, 3)])
    alone = augment.apply(batch[3:4], FULL, draws, (batch.shape[2], batch.shape[1]))
    assert torch.allclose(whole[3], alone[0], atol=1e-6)


def test_zero_probabilities_leave_the_batch_unchanged(batch: torch.Tensor) -> None:
    assert torch.equal(augment.augment(batch, AugmentSpec(), seed=1), batch)


def test_certain_fixed_transforms_are_exactly_those_transforms(batch: torch.Tensor) -> None:
    spec = AugmentSpec(hflip=1.0, brightness=Range(1.0, 0.5, 0.5), grayscale=1.0)
    expected = transforms.grayscale(transforms.adjust_brightness(transforms.hflip(batch), 0.5))
    assert torch.allclose(augment.augment(batch, spec, seed=3), expected, atol=1e-6)


def test_draws_respect_probability_and_range() -> None:
    spec = AugmentSpec(hflip=0.25, rotation=Range(1.0, -20, 10))
    d = augment.draw(spec, [augment.derive_seed(0, i) for i in range(2000)])
    assert 0.21 < d.hflip.double().mean() < 0.29
    assert d.angle.min() >= -20 and d.angle.max() <= 10 and d.angle.std() > 5


def test_expand_gives_the_whole_batch_the_largest_canvas(batch: torch.Tensor) -> None:
    spec = AugmentSpec(rotation=Range(1.0, -40, 40), expand=True)
    out = augment.augment(batch, spec, seed=2)
    assert out.shape[1] > batch.shape[1] and out.shape[2] > batch.shape[2]


def test_bad_recipes_are_refused() -> None:
    with pytest.raises(ValueError, match="probability"):
        AugmentSpec(hflip=1.5)
    with pytest.raises(ValueError, match="above maximum"):
        AugmentSpec(rotation=Range(1, 10, -10))
    with pytest.raises(ValueError, match="scale"):
        AugmentSpec(scale=Range(1, 0, 1))


def test_cancel_stops_between_pieces(batch: torch.Tensor) -> None:
    class CancelAtOnce:
        def advance(self, steps: int = 1) -> None: ...

        def check_cancel(self) -> None:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        augment.augment(batch, FULL, seed=0, progress=CancelAtOnce())


def test_a_recipe_file_reads_every_kind_of_setting(tmp_path) -> None:
    import json

    path = tmp_path / "레시피.json"
    path.write_text(json.dumps({"hflip": 1, "rotation": {"p": 1.0, "low": -5, "high": 5}, "scale": {"p": 0.5},
                                "expand": True, "fill": [1, 0.5, 0], "interpolation": "nearest"}), encoding="utf-8")
    spec = augment.read_recipe(path)
    assert spec == AugmentSpec(hflip=1.0, rotation=Range(1.0, -5, 5), scale=Range(0.5, 1.0, 1.0), expand=True,
                               fill=(1.0, 0.5, 0.0), interpolation="nearest")


@pytest.mark.parametrize(("raw", "message"), [
    ("[1, 2]", r"must be a JSON object of augmentation settings, not a list"),
    ('{"hflip": 0.5,\n "roation": {"p": 1}}', r"unknown key 'roation'; the keys are hflip, vflip, .*interpolation"),
    ('{"hflip": "often"}', r"'hflip' must be a number \(a probability from 0 to 1\), not text"),
    ('{"hflip": true}', r"'hflip' must be a number .*, not true/false"),
    ('{"rotation": 15}', r"'rotation' must be an object with 'p', 'low' and 'high' numbers, not a number"),
    ('{"rotation": {"p": 1, "min": -5}}', r"unknown key 'min' in 'rotation'; a range has 'p', 'low' and 'high'"),
    ('{"rotation": {"p": "1"}}', r"'rotation.p' must be a number, not text"),
    ('{"expand": 1}', r"'expand' must be true or false, not a number"),
    ('{"fill": "#000000"}', r"'fill' must be a list of three numbers from 0 to 1 \(red, .*not \"#000000\""),
    ('{"fill": [0, 0, 255]}', r"'fill' must be a list of three numbers from 0 to 1"),
    ('{"interpolation": 2}', r"'interpolation' must be text, not a number"),
    ('{"interpolation": "cubicle"}', r": interpolation must be one of"),
    ('{"hflip": 2}', r": hflip: probability must be between 0 and 1"),
    ('{"hflip": 0.5,\n "vflip": }', r", line 2: not valid JSON: Expecting value"),
])
def test_a_bad_recipe_file_names_the_file_the_key_and_the_type(tmp_path, raw: str, message: str) -> None:
    path = tmp_path / "recipe.json"
    path.write_text(raw, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^recipe '{path}'.*{message}"):
        augment.read_recipe(path)


def test_the_multiply_command_names_a_bad_recipe_instead_of_a_traceback(tmp_path, capsys) -> None:
    from atelier.cli import main

    from helpers import SAMPLES

    path = tmp_path / "recipe.json"
    path.write_text('{"hflip": 0.5, "colour": 1}', encoding="utf-8")
    assert main(["multiply", str(SAMPLES), "--output", str(tmp_path / "out"), "--random", "1", "--recipe",
                 str(path)]) == 2
    assert f"atelier: --recipe {path}: unknown key 'colour'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "atelier").exists()
