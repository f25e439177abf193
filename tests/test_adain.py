"""AdaIN style transfer on tiny random networks in the public weight layout: the maths, the options,
tiles, and the errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.core.dataset.multiply import Original
from atelier.core.style import adain_model as am
from atelier.core.style import color_preservation as cp
from atelier.core.style import feature_transfer as ft
from atelier.core.style import style_augment
from atelier.core.style import stylize as stylize_module
from atelier.core.style.stylize import StyleOptions, encode, style_targets, stylize

from helpers import as_batch, photo, tiny_adain_files


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> am.AdaINModel:
    return am.load_model(*tiny_adain_files(tmp_path_factory.mktemp("adain")))


def _picture(name: str, size: tuple[int, int]) -> torch.Tensor:
    return as_batch(photo(name, size))


def _features(model: am.AdaINModel, image: torch.Tensor) -> torch.Tensor:
    return model.encode(image.permute(0, 3, 1, 2))


def test_adain_output_statistics_equal_the_style_statistics(model: am.AdaINModel) -> None:
    content = _features(model, _picture("chelsea.jpg", (96, 64)))
    target = ft.style_target(_features(model, _picture("coffee.webp", (80, 80))), "adain")
    mean, std = ft.mean_std(ft.adain(content, target))
    # where the ReLU left a channel all zero (content or style), it stays flat, as in VGG
    live = (ft.mean_std(content)[1].flatten() > 0.05) & (target.std.flatten() > 0.05)
    assert live.sum() >= 0.3 * live.numel()
    torch.testing.assert_close(mean, target.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(std.flatten()[live], target.std.flatten()[live], rtol=1e-4, atol=1e-5)


def test_efdm_output_has_exactly_the_style_distribution(model: am.AdaINModel) -> None:
    content = _features(model, _picture("chelsea.jpg", (64, 64)))
    style = _features(model, _picture("rocket.png", (64, 64)))
    out = ft.efdm(content, ft.style_target(style, "efdm"))
    assert torch.equal(out.flatten(2).sort(-1).values, style.flatten(2).sort(-1).values)
    # ranks are kept: taken in the content's order, the output never decreases
    in_content_order = out.flatten(2).gather(-1, content.flatten(2).argsort(dim=-1, stable=True))
    assert (in_content_order.diff(dim=-1) >= 0).all()


def test_alpha_zero_returns_the_decoders_reconstruction_of_the_content(model: am.AdaINModel) -> None:
    content = _picture("astronaut.tif", (60, 44))  # not a multiple of 8: the output is cropped back
    out = stylize(model, content, [_picture("coffee.webp", (48, 48))[0]], StyleOptions(alpha=0.0))
    with torch.no_grad():
        planar = content.permute(0, 3, 1, 2)  # channels-last, as stylize lays it out: convolutions sum alike
        expected = model.decode(model.encode(planar))[..., :44, :60].clamp(0, 1).permute(0, 2, 3, 1)
    assert out.shape == content.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    styled = stylize(model, content, [_picture("coffee.webp", (48, 48))[0]], StyleOptions(alpha=0.5))
    assert (styled - out).abs().mean() > 1e-3


def test_files_in_the_public_layout_load_and_safetensors_round_trip(tmp_path: Path, model: am.AdaINModel) -> None:
    encoder, decoder = tiny_adain_files(tmp_path / "public", base=4, seed=1)
    assert "51.weight" in torch.load(encoder, weights_only=True)  # the whole VGG-19, as released
    loaded = am.load_model(encoder, decoder)
    out = stylize(loaded, _picture("rocket.png", (37, 29)), [_picture("chelsea.jpg", (40, 40))[0]], StyleOptions())
    assert out.shape == (1, 29, 37, 3) and 0 <= out.min() and out.max() <= 1
    saved = am.save_decoder(loaded.decoder, tmp_path / "mine", "my decoder", {"steps": 3})
    again = am.save_decoder(loaded.decoder, tmp_path / "mine", "my decoder", {"steps": 3})
    assert saved.name == "my_decoder.safetensors" and again.name == "my_decoder_2.safetensors"
    reread = am.load_decoder(saved)
    x = torch.randn(1, loaded.channels, 4, 5)
    torch.testing.assert_close(reread(x), loaded.decoder(x))


def test_weights_that_do_not_fit_name_the_keys(tmp_path: Path) -> None:
    encoder, decoder = tiny_adain_files(tmp_path)
    state = torch.load(decoder, weights_only=True)
    del state["5.weight"]
    state["8.weight"] = torch.zeros(3, 3, 3, 3)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"1 missing \(5\.weight\); 1 unexpected \(extra\.weight\); 1 with another "
                                         r"shape \(8\.weight"):
        am.load_model(encoder, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="not a pair"):
        am.load_model(encoder, tiny_adain_files(tmp_path / "wide", base=8)[1])
    with pytest.raises(FileNotFoundError, match=r"'decoder\.pth' is not in .*models/atelier/adain"):
        am.find_weights("decoder.pth", [tmp_path / "elsewhere"], "decoder file")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read AdaIN encoder weights"):
        am.load_encoder(tmp_path / "junk.pth")


def test_style_weights_mix_the_transferred_features(model: am.AdaINModel) -> None:
    content = _features(model, _picture("chelsea.jpg", (64, 48)))
    a = ft.style_target(_features(model, _picture("coffee.webp", (40, 40))), "adain")
    b = ft.style_target(_features(model, _picture("rocket.png", (56, 40))), "adain")
    mixed = ft.transfer(content, [a, b], "adain", [0.25, 0.75])
    torch.testing.assert_close(mixed, 0.25 * ft.adain(content, a) + 0.75 * ft.adain(content, b))
    torch.testing.assert_close(ft.transfer(content, [a, b], "adain", [1.0, 0.0]), ft.adain(content, a))
    styles = [_picture("coffee.webp", (40, 40))[0], _picture("rocket.png", (56, 40))[0]]
    pictures = _picture("chelsea.jpg", (64, 48))
    # weights are normalised: 2:6 is 0.25:0.75
    torch.testing.assert_close(stylize(model, pictures, styles, StyleOptions(), [2, 6]),
                               stylize(model, pictures, styles, StyleOptions(), [0.25, 0.75]))
    with pytest.raises(ValueError, match="3 style weight\\(s\\) for 2 style picture"):
        stylize(model, pictures, styles, StyleOptions(), [1, 1, 1])
    with pytest.raises(ValueError, match="non-negative with a positive sum"):
        stylize(model, pictures, styles, StyleOptions(), [0, 0])


@pytest.mark.parametrize("method", ["adain", "efdm"])
def test_style_targets_computed_once_give_the_same_pictures(model: am.AdaINModel, method: str) -> None:
    options = StyleOptions(method=method)
    styles = [_picture("coffee.webp", (40, 40))[0], _picture("rocket.png", (56, 40))[0]]
    pictures = _picture("chelsea.jpg", (64, 48))
    targets = style_targets(model, styles, options)
    assert torch.equal(stylize(model, pictures, styles, options, [1, 3], targets=targets),
                       stylize(model, pictures, styles, options, [1, 3]))
    with pytest.raises(ValueError, match="1 style targets for 2 style pictures"):
        stylize(model, pictures, styles, options, targets=targets[:1])


@pytest.mark.parametrize(("preserve_color", "calls"), [("none", 1), ("match_style_colors", 6)])
def test_style_augmentation_encodes_the_styles_once(model: am.AdaINModel, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, preserve_color: str,
                                                    calls: int) -> None:
    made = []
    counted = style_augment.style_targets

    def counting(m: am.AdaINModel, styles: list[torch.Tensor], *args: object, **kwargs: object
                 ) -> list[ft.StyleTarget]:
        made.append(len(styles))
        return counted(m, styles, *args, **kwargs)

    monkeypatch.setattr(style_augment, "style_targets", counting)
    monkeypatch.setattr(stylize_module, "style_targets", counting)
    originals = [Original(_picture(n, (48, 40))[0], n) for n in ("chelsea.jpg", "coffee.webp", "astronaut.tif")]
    styles = [Original(_picture(n, (40, 40))[0], n) for n in ("rocket.png", "coffee.webp")]
    options = StyleOptions(preserve_color=preserve_color)
    written = style_augment.style_augment(model, originals, styles, tmp_path, options,
                                          style_augment.AugmentSpec("restyle_originals"))
    assert len(written.files) == 3 + 6  # the originals and every pair
    # both styles at once; with recolouring each pair needs its own
    assert made == ([2] if preserve_color == "none" else [1] * 6)


@pytest.mark.parametrize("method", ["adain", "efdm"])
def test_a_mask_gives_each_region_its_own_style(model: am.AdaINModel, method: str) -> None:
    content = _features(model, _picture("chelsea.jpg", (128, 64)))  # 16 x 8 features
    targets = [ft.style_target(_features(model, _picture(n, (48, 48))), method) for n in ("coffee.webp", "rocket.png")]
    mask = torch.zeros(1, 64, 128)
    mask[:, :, :64] = 1  # style 1 on the left half, style 2 (the rest) on the right
    regions = ft.region_weights(mask, 2, [0.5, 0.5], (8, 16))
    assert torch.equal(regions[0, :, :8], torch.ones(8, 8)) and torch.equal(regions[1, :, 8:], torch.ones(8, 8))
    out = ft.transfer(content, targets, method, [0.5, 0.5], regions)
    for k, half in enumerate((slice(0, 8), slice(8, 16))):
        part = out[..., half]
        if method == "adain":
            mean, std = ft.mean_std(part)
            live = (ft.mean_std(content[..., half])[1].flatten() > 0.05) & (targets[k].std.flatten() > 0.05)
            torch.testing.assert_close(mean, targets[k].mean, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(std.flatten()[live], targets[k].std.flatten()[live], rtol=1e-4, atol=1e-5)
        else:
            expected = ft._quantiles(targets[k].sorted_values, 64)
            torch.testing.assert_close(part.flatten(2).sort(-1).values[0], expected)


def test_masks_are_checked_before_any_work(model: am.AdaINModel) -> None:
    content = _picture("chelsea.jpg", (64, 48))
    styles = [_picture("coffee.webp", (40, 40))[0], _picture("rocket.png", (40, 40))[0]]
    with pytest.raises(ValueError, match="the mask is 32x32 but the content is 64x48"):
        stylize(model, content, styles, StyleOptions(), masks=torch.ones(1, 32, 32))
    with pytest.raises(ValueError, match="3 mask\\(s\\) for 2 style"):
        stylize(model, content, styles, StyleOptions(), masks=torch.ones(3, 48, 64))
    everywhere = stylize(model, content, styles, StyleOptions(), masks=torch.ones(1, 48, 64))
    torch.testing.assert_close(everywhere, stylize(model, content, styles[:1], StyleOptions()), rtol=0, atol=5e-4)
    nowhere = stylize(model, content, styles, StyleOptions(), masks=torch.zeros(1, 48, 64))
    torch.testing.assert_close(nowhere, stylize(model, content, styles[1:], StyleOptions()), rtol=0, atol=5e-4)


def test_tiled_and_untiled_outputs_agree(model: am.AdaINModel) -> None:
    content = _picture("astronaut.tif", (300, 200))
    style = [_picture("coffee.webp", (64, 64))[0]]
    whole = stylize(model, content, style, StyleOptions(method="efdm"))
    tiled = stylize(model, content, style, StyleOptions(method="efdm", tile=64, overlap=64))
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-3)
    features = encode(model, content.permute(0, 3, 1, 2), 1024, 64)
    torch.testing.assert_close(encode(model, content.permute(0, 3, 1, 2), 96, 64), features, rtol=1e-4, atol=1e-3)


def test_color_preservation_keeps_the_contents_colors(model: am.AdaINModel) -> None:
    content = _picture("coffee.webp", (64, 64))[0] * 0.2 + 0.4  # low contrast: no colour move leaves 0..1
    style = _picture("rocket.png", (64, 64))[0] * 0.2 + 0.4
    matched = cp.match_colors(style, content)
    for image in (matched, content):
        pixels = image.reshape(-1, 3).double()
        assert pixels.mean(0).sub(content.reshape(-1, 3).double().mean(0)).abs().max() < 1e-4
    torch.testing.assert_close(torch.cov(matched.reshape(-1, 3).T.double()),
                               torch.cov(content.reshape(-1, 3).T.double()), rtol=2e-2, atol=2e-4)
    stylized = stylize(model, content[None], [style], StyleOptions(preserve_color="luminance_only"))[0]
    plain = stylize(model, content[None], [style], StyleOptions())[0]
    yiq = cp._RGB_TO_YIQ
    inside = ((plain > 0.02) & (plain < 0.98)).all(-1) & ((stylized > 0.001) & (stylized < 0.999)).all(-1)
    torch.testing.assert_close((stylized @ yiq[1:].T)[inside], (content @ yiq[1:].T)[inside], rtol=0, atol=1e-4)
    torch.testing.assert_close((stylized @ yiq[0])[inside], (plain @ yiq[0])[inside], rtol=0, atol=1e-4)


def contrasty_photograph(size: int = 96, seed: int = 0) -> torch.Tensor:
    """A photograph-like ``[H, W, 3]``: a sky gradient, a saturated red disc and green patch, a deep shadow and a
    bright highlight, with sensor noise; its colour covariance is large, so recolouring another picture to it
    sends many pixels outside 0..1 (about a fifth to a third for the sample photographs)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.stack([0.25 + 0.5 * xx, 0.3 + 0.4 * yy, 0.8 - 0.6 * xx], -1)
    image[(xx - 0.3) ** 2 + (yy - 0.6) ** 2 < 0.05] = torch.tensor([0.95, 0.05, 0.05])
    image[(xx > 0.6) & (yy > 0.55)] = torch.tensor([0.02, 0.02, 0.03])
    image[(xx > 0.65) & (yy < 0.25)] = torch.tensor([1.0, 0.98, 0.9])
    image[(xx < 0.2) & (yy < 0.3)] = torch.tensor([0.05, 0.7, 0.1])
    return (image + 0.04 * torch.randn(size, size, 3, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("style_name", ["coffee.webp", "rocket.png", "chelsea.jpg"])
def test_matched_colors_keep_their_promise_on_a_contrasty_photograph(model: am.AdaINModel, style_name: str) -> None:
    content = contrasty_photograph()
    style = _picture(style_name, (80, 80))[0]
    matched = cp.match_colors(style, content)

    def mean_cov(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = image.reshape(-1, 3).double()
        return pixels.mean(0), torch.cov(pixels.T)

    def misses(image: torch.Tensor) -> tuple[float, float]:
        """(largest mean difference, covariance difference relative to the content's, Frobenius norms)."""
        (mean, cov), (c_mean, c_cov) = mean_cov(image), mean_cov(content)
        return float((mean - c_mean).abs().max()), float(torch.linalg.norm(cov - c_cov) / torch.linalg.norm(c_cov))

    outside = ((matched < 0) | (matched > 1)).any(-1).float().mean()
    assert outside > 0.15  # the case clipping broke: measured 0.20-0.33
    mean_miss, cov_miss = misses(matched)
    assert mean_miss < 1e-6 and cov_miss < 5e-4  # measured: below 1e-9 and 1.2e-6..5.6e-5 (float32 pixels)
    clipped_mean, clipped_cov = misses(matched.clamp(0, 1))  # what the clipping code gave the encoder
    assert clipped_mean > 0.01 and clipped_cov > 0.2  # measured: 0.023-0.033 and 0.27-0.35
    # the encoder takes it as it is; only the stylized picture is clipped
    out = stylize(model, content[None], [style], StyleOptions(preserve_color="match_style_colors"))
    assert out.isfinite().all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize(("content", "message"), [
    (torch.rand(1, 1, 1, 3), "1x1 pixels; style transfer needs at least 16x16"),
    (torch.rand(1, 32, 32, 1), "greyscale"),
    (torch.rand(1, 32, 32, 4), "RGBA"),
    (torch.rand(32, 32, 3), r"IMAGE batch \[B, H, W, 3\]"),
])
def test_bad_pictures_are_clear_errors(model: am.AdaINModel, content: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stylize(model, content, [torch.rand(32, 32, 3)], StyleOptions())
    if content.dim() == 4:  # the same checks guard every style picture
        with pytest.raises(ValueError, match="style 1 .*" + message):
            stylize(model, torch.rand(1, 32, 32, 3), [content[0]], StyleOptions())


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="alpha"):
        StyleOptions(alpha=1.5)
    with pytest.raises(ValueError, match="overlap"):
        StyleOptions(overlap=12)
    with pytest.raises(ValueError, match="method"):
        StyleOptions(method="gram")
