"""Seeded random augmentation: determinism, probabilities, ranges, and per-image independence."""
from __future__ import annotations

import pytest
import torch

from atelier.core import augment, transforms
from atelier.core.augment import AugmentSpec, Range
from atelier.core.progress import Cancelled

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
