"""The story strip: exact panel placement, gutters and margins, captions under panels, clear errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from atelier.core.story import strip as story_strip
from atelier.core.story.strip import StripLayout, caption_lines, find_font, load_font, make_strip, panel_rects

RED = (1.0, 0.0, 0.0)
WHITE = (1.0, 1.0, 1.0)


def solid(width: int, height: int, color: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(color, dtype=torch.float32).expand(height, width, 3).clone()


def is_background(region: torch.Tensor, color: tuple[float, float, float] = WHITE) -> bool:
    return bool((region == torch.tensor(color)).all())


LAYOUT = StripLayout(width=200, margin=10, gutter=6)
PANELS = [solid(100, 50, (1.0, 0.0, 0.0)), solid(300, 300, (0.0, 0.5, 0.0)), solid(50, 200, (0.2, 0.4, 0.8))]


def test_panels_of_any_size_are_stacked_at_the_strip_width_with_exact_gutters_and_margins() -> None:
    panels, captions, height = panel_rects([(100, 50), (300, 300), (50, 200)], None, LAYOUT)
    assert panels == [(10, 10, 180, 90), (10, 106, 180, 180), (10, 292, 180, 720)]
    assert captions == [(10, 100, 180, 0), (10, 286, 180, 0), (10, 1012, 180, 0)]
    assert height == 1012 + 10

    strip = make_strip(PANELS, layout=LAYOUT)
    assert strip.shape == (1022, 200, 3)
    covered = torch.zeros(strip.shape[:2], dtype=torch.bool)
    for picture, (x, y, w, h) in zip(PANELS, panels):
        expected = F.interpolate(picture.permute(2, 0, 1)[None], size=(h, w), mode="bicubic", antialias=True)
        torch.testing.assert_close(strip[y : y + h, x : x + w], expected[0].permute(1, 2, 0).clamp(0, 1))
        covered[y : y + h, x : x + w] = True
    assert is_background(strip[~covered])  # margins and gutters


def test_panels_of_different_widths_line_up() -> None:
    layout = StripLayout(width=120, margin=4, gutter=0)
    strip = make_strip([solid(37, 20, RED), solid(640, 100, RED)], layout=layout)
    panels, _, _ = panel_rects([(37, 20), (640, 100)], None, layout)
    assert [w for _, _, w, _ in panels] == [112, 112]
    red_columns = (strip == torch.tensor(RED)).all(dim=-1).any(dim=0).nonzero().flatten()
    assert (red_columns.min(), red_columns.max()) == (4, 115)


def test_a_caption_sits_under_its_panel_in_the_caption_colour() -> None:
    layout = StripLayout(width=300, margin=12, gutter=10, caption_size=20, caption_color=RED, caption_gap=8)
    pictures = [solid(50, 50, (0.0, 0.0, 1.0)), solid(50, 50, (0.0, 0.0, 1.0))]
    panels, captions, height = panel_rects([(50, 50), (50, 50)], ["Hello there", None], layout)
    (px, py, pw, ph), (cx, cy, cw, ch) = panels[0], captions[0]
    assert (cx, cy, cw) == (px, py + ph + 8, pw) and ch > 0
    assert panels[1][1] == cy + ch + 10  # the next panel starts a gutter below the caption
    assert captions[1][3] == 0
    assert height == panels[1][1] + panels[1][3] + 12

    strip = make_strip(pictures, ["Hello there", None], layout)
    assert strip.shape == (height, 300, 3)
    box = strip[cy : cy + ch, cx : cx + cw]
    assert (box == torch.tensor(RED)).all(dim=-1).any()
    outside = torch.ones(strip.shape[:2], dtype=torch.bool)
    for x, y, w, h in panels + captions:
        outside[y : y + h, x : x + w] = False
    assert is_background(strip[outside])


def test_a_long_caption_wraps_within_the_panel_width() -> None:
    layout = StripLayout(width=200, margin=10, caption_size=16)
    text = "a rather long caption that cannot possibly fit on a single line of a narrow strip"
    font = load_font(layout, text)
    lines = caption_lines(text, font, 180)
    assert len(lines) > 2
    assert " ".join(lines) == text
    assert all(font.getlength(line) <= 180 for line in lines)
    _, captions, _ = panel_rects([(100, 100)], [text], layout)
    assert captions[0][3] == len(lines) * sum(font.getmetrics())


def test_a_word_wider_than_the_width_is_broken_between_characters() -> None:
    font = load_font(StripLayout(caption_size=16), "W")
    lines = caption_lines("W" * 40, font, 60)
    assert len(lines) > 1 and "".join(lines) == "W" * 40
    assert all(font.getlength(line) <= 60 for line in lines)


def test_caption_size_zero_draws_no_caption() -> None:
    layout = StripLayout(width=100, margin=5, gutter=4, caption_size=0)
    plain = make_strip([solid(20, 20, RED)], layout=layout)
    assert torch.equal(make_strip([solid(20, 20, RED)], ["ignored"], layout), plain)


def test_captions_fall_back_to_pillows_font_when_no_system_font_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(story_strip, "find_font", lambda text: None)
    layout = StripLayout(width=200, margin=10, caption_size=20, caption_color=RED)
    _, captions, _ = panel_rects([(40, 40)], ["Hello"], layout)
    x, y, w, h = captions[0]
    assert h > 0
    assert (make_strip([solid(40, 40, WHITE)], ["Hello"], layout)[y : y + h, x : x + w] == torch.tensor(RED)).any()


def test_a_korean_caption_renders() -> None:
    text = "옛날 옛적에작은마을에사는소녀가있었습니다"
    if find_font(text) is None:
        pytest.skip("no Korean-capable font (Noto Sans CJK, NanumGothic, ...) is installed on this machine")
    layout = StripLayout(width=200, margin=10, caption_size=20)
    font = load_font(layout, text)
    lines = caption_lines(text, font, 180)
    assert len(lines) > 1 and "".join(lines).replace(" ", "") == text.replace(" ", "")
    _, captions, _ = panel_rects([(40, 40)], [text], layout)
    x, y, w, h = captions[0]
    assert not is_background(make_strip([solid(40, 40, RED)], [text], layout)[y : y + h, x : x + w])


def test_mismatched_captions_empty_panels_and_tight_widths_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="1 captions for 2 panels"):
        make_strip([solid(10, 10, RED)] * 2, ["only one"])
    with pytest.raises(ValueError, match="no panels"):
        make_strip([])
    with pytest.raises(ValueError, match="width 70 leaves 6 pixels"):
        make_strip([solid(10, 10, RED)], layout=StripLayout(width=70, margin=32))
    with pytest.raises(ValueError, match="gutter"):
        StripLayout(gutter=-1).check()
    with pytest.raises(ValueError, match="not a file"):
        StripLayout(font="/no/such/font.ttf").check()
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        make_strip([torch.zeros(2, 10, 10, 3)])


def test_a_batch_slice_is_accepted_and_the_result_is_float_in_range() -> None:
    panel = torch.rand(1, 30, 40, 3) * 1.2 - 0.1  # out-of-range input must still come out in 0..1
    strip = make_strip([panel, solid(40, 30, RED)], ["a caption", ""], StripLayout(width=100, margin=8))
    assert strip.dtype == torch.float32
    assert strip.min() >= 0.0 and strip.max() <= 1.0
