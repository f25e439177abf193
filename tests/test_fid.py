"""FID and KID: the FID Inception network (random weights), its weights file, features and their cache,
and the scores against pytorch-fid's and torch-fidelity's own formulas."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from atelier.core.dataset.image_files import ImageFolderError
from atelier.core.metrics import fid
from atelier.core.shared.progress import SilentProgress

from helpers import as_batch, photo

DATA = Path(__file__).parent / "data"


# ---------------------------------------------------------------------------- references


def reference_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of ``[C, H, W]`` with half-pixel centres (``align_corners=False``), no antialias,
    written from the definition: source = (dst + 0.5) * in / out - 0.5, clamped at 0."""
    c, h, w = x.shape

    def taps(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = taps(h, out_h)
    x0, x1, fx = taps(w, out_w)
    top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
    bottom = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance, transcribed (sqrtm called the way SciPy 1.18 allows)."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def torch_fidelity_kid(f1, f2, subsets, subset_size, seed):
    """torch-fidelity's kid_features_to_metric / polynomial_mmd / mmd2 (unbiased), transcribed."""
    def kernel(x, y):
        return (np.matmul(x, y.T) * (1.0 / x.shape[1]) + 1) ** 3

    def mmd2(k_xx, k_xy, k_yy):
        m = k_xx.shape[0]
        diag_x, diag_y = np.diagonal(k_xx), np.diagonal(k_yy)
        kt_xx_sum = (k_xx.sum(axis=1) - diag_x).sum()
        kt_yy_sum = (k_yy.sum(axis=1) - diag_y).sum()
        k_xy_sum = k_xy.sum(axis=0).sum()
        return (kt_xx_sum + kt_yy_sum) / (m * (m - 1)) - 2 * k_xy_sum / (m * m)

    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        x = f1[rng.choice(len(f1), subset_size, replace=False)]
        y = f2[rng.choice(len(f2), subset_size, replace=False)]
        mmds[i] = mmd2(kernel(x, x), kernel(x, y), kernel(y, y))
    return float(np.mean(mmds)), float(np.std(mmds))


def torch_fidelity_isc(logits, splits, shuffle, seed):
    """torch-fidelity's isc_features_to_metric (torch_fidelity/metric_isc.py), transcribed in numpy float64:
    rows permuted by np.random.RandomState(seed).permutation(N) when shuffling, softmax over the classes, chunk i
    is rows [i*N//splits, (i+1)*N//splits), its score exp(mean over rows of sum_y p * (log p - log mean_chunk p)),
    and the result np.mean and np.std (ddof 0) of the chunk scores."""
    x = np.asarray(logits, dtype=np.float64)
    n = x.shape[0]
    if shuffle:
        x = x[np.random.RandomState(seed).permutation(n)]
    shifted = x - x.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        q = p[lo:hi].mean(axis=0, keepdims=True)
        scores.append(np.exp((p[lo:hi] * (log_p[lo:hi] - np.log(q))).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def gaussian_sets(n=300, d=64, shift=0.3, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / math.sqrt(d)
    a = rng.normal(size=(n, d)) @ (np.eye(d) + 0.5 * mix)
    b = rng.normal(size=(n, d)) @ (np.eye(d) + 0.3 * mix.T) * 1.2 + shift
    return a, b


class Refused:
    """Something torch.load(weights_only=True) must not unpickle."""


# ---------------------------------------------------------------------------- the network


@pytest.fixture(scope="module")
def net() -> fid.FIDInceptionV3:
    """The FID Inception with random weights scaled so activations neither vanish nor explode."""
    torch.manual_seed(0)
    model = fid.FIDInceptionV3()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.eval()


def test_random_network_gives_2048_pool3_features_batch_by_batch(net: fid.FIDInceptionV3) -> None:
    torch.manual_seed(1)
    images = torch.rand(3, 70, 90, 3)
    progress = SilentProgress(3)
    feats = fid.features(net, images, batch_size=2, device="cpu", progress=progress)
    assert feats.shape == (3, fid.FEATURE_DIM) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and (feats >= 0).all()  # average of ReLU outputs
    assert progress.done == 3
    assert np.abs(feats[0] - feats[1]).mean() > 1e-3 * np.abs(feats).mean()  # images are told apart
    whole = fid.features(net, images, batch_size=3)
    np.testing.assert_allclose(feats, whole, rtol=1e-4, atol=1e-6 * np.abs(whole).max())


def test_bad_image_batches_are_refused(net: fid.FIDInceptionV3) -> None:
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        fid.features(net, torch.rand(1, 8, 8, 4))
    with pytest.raises(ValueError, match="empty"):
        fid.features(net, torch.rand(0, 8, 8, 3))


TORCHVISION_ORDER = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                     "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"]  # then pool3; fc is never run


def test_input_is_resized_bilinearly_to_299_and_scaled_to_minus_one_one(net: fid.FIDInceptionV3) -> None:
    torch.manual_seed(2)
    seen, order = [], []
    hooks = [net.Conv2d_1a_3x3.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))]
    for name, child in net.named_children():
        hooks.append(child.register_forward_hook(lambda module, args, out, name=name: order.append(name)))
    try:
        x = torch.rand(1, 3, 40, 57, dtype=torch.float32)
        with torch.no_grad():
            net(x)
    finally:
        for hook in hooks:
            hook.remove()
    assert order == TORCHVISION_ORDER
    want = 2 * reference_bilinear(x[0].double().numpy(), 299, 299) - 1
    assert seen[0].shape == (1, 3, 299, 299)
    # torch computes source coordinates in float32 (differences ~1e-5); align_corners=True or an
    # antialiased resize differ from the reference by 0.2 to 0.5
    np.testing.assert_allclose(seen[0][0].numpy(), want, atol=1e-4)

    big = torch.rand(2, 3, 420, 333)  # downscaling: no antialiasing, as pytorch-fid
    ours = fid.resize_for_inception(big)
    np.testing.assert_allclose(ours[1].numpy(), reference_bilinear(big[1].double().numpy(), 299, 299), atol=1e-4)
    torch.testing.assert_close(ours, F.interpolate(big, size=(299, 299), mode="bilinear", align_corners=False),
                               rtol=0, atol=0)


def test_state_dict_keys_and_shapes_are_pytorch_fid_s() -> None:
    rows = [line.split() for line in (DATA / "fid_inception_keys.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    state = fid.FIDInceptionV3().state_dict()
    assert list(state) == [key for key, _ in rows]
    for key, shape in rows:
        assert ("x".join(map(str, state[key].shape)) or "scalar") == shape, key
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch1x1.conv.weight", "Mixed_7c.branch_pool.bn.running_var",
                "fc.weight", "fc.bias"):
        assert key in state
    assert not any(key.startswith("AuxLogits") for key in state)
    norms = [m for m in fid.FIDInceptionV3().modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 94 and {m.eps for m in norms} == {0.001}  # torchvision's BasicConv2d
    # torchvision documents 27,161,264 parameters for inception_v3; without its aux head (3,326,696)
    # and with 1008 classes instead of 1000 (+8 x 2049) that is pytorch-fid's network.
    assert sum(p.numel() for p in fid.FIDInceptionV3().parameters()) == 27_161_264 - 3_326_696 + 8 * 2049


def test_fid_blocks_pool_as_the_tensorflow_graph(net: fid.FIDInceptionV3) -> None:
    def pool_branch_input(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        seen = []
        hook = block.branch_pool.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
        try:
            with torch.no_grad():
                block(x)
        finally:
            hook.remove()
        return seen[0]

    # A, C and E_1 average without the zero padding: a constant stays constant up to the border
    for block, channels in ((net.Mixed_5b, 192), (net.Mixed_6b, 768), (net.Mixed_7b, 1280)):
        pooled = pool_branch_input(block, torch.full((1, channels, 5, 5), 2.0))
        torch.testing.assert_close(pooled, torch.full_like(pooled, 2.0))
    # E_2 max-pools
    x = torch.randn(1, 2048, 5, 5)
    torch.testing.assert_close(pool_branch_input(net.Mixed_7c, x), F.max_pool2d(x, 3, stride=1, padding=1))


# The branch outputs each block concatenates, in torchvision's order (None: the block's own max pool).
BRANCHES = {
    "Mixed_5b": [["branch1x1"], ["branch5x5_2"], ["branch3x3dbl_3"], ["branch_pool"]],
    "Mixed_6a": [["branch3x3"], ["branch3x3dbl_3"], None],
    "Mixed_6b": [["branch1x1"], ["branch7x7_3"], ["branch7x7dbl_5"], ["branch_pool"]],
    "Mixed_7a": [["branch3x3_2"], ["branch7x7x3_4"], None],
    "Mixed_7b": [["branch1x1"], ["branch3x3_2a", "branch3x3_2b"], ["branch3x3dbl_3a", "branch3x3dbl_3b"],
                 ["branch_pool"]],
}


@pytest.mark.parametrize("name", list(BRANCHES))
def test_blocks_concatenate_branches_in_torchvision_order(net: fid.FIDInceptionV3, name: str) -> None:
    block = getattr(net, name)
    channels = {"Mixed_5b": 192, "Mixed_6a": 288, "Mixed_6b": 768, "Mixed_7a": 768, "Mixed_7b": 1280}[name]
    x = torch.randn(1, channels, 9, 9)
    outputs: dict[str, torch.Tensor] = {}
    hooks = [getattr(block, part).register_forward_hook(lambda m, a, out, part=part: outputs.__setitem__(part, out))
             for group in BRANCHES[name] if group for part in group]
    try:
        with torch.no_grad():
            got = block(x)
    finally:
        for hook in hooks:
            hook.remove()
    pieces = [torch.cat([outputs[p] for p in group], 1) if group else F.max_pool2d(x, 3, stride=2)
              for group in BRANCHES[name]]
    torch.testing.assert_close(got, torch.cat(pieces, 1), rtol=0, atol=0)


# ---------------------------------------------------------------------------- the weights file


def test_saved_state_dict_loads_back_strictly(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = fid.FIDInceptionV3()
    with torch.no_grad():
        for buffer in source.buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)  # running stats that differ from a fresh model's
    folder = tmp_path / "models" / "atelier" / "fid"
    folder.mkdir(parents=True)
    path = folder / fid.FID_WEIGHTS_NAME
    torch.save(source.state_dict(), path)

    with pytest.warns(UserWarning, match="not the released"):  # random weights: not the published file
        loaded = fid.load_fid_inception([tmp_path / "elsewhere", folder])
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    for (key, want), (key2, got) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert key == key2 and torch.equal(want, got), key

    # a file from before BatchNorm counted batches loads too; a file of another layout is named
    old = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    old_path = tmp_path / "old.pth"
    torch.save(old, old_path)
    with pytest.warns(UserWarning):
        assert torch.equal(fid.load_fid_inception(old_path).fc.weight, source.fc.weight)
    renamed = dict(old)
    renamed["Mixed_7c.branch_pool.conv.kernel"] = renamed.pop("Mixed_7c.branch_pool.conv.weight")
    torch.save(renamed, old_path)
    with pytest.raises(ValueError, match=r"Mixed_7c\.branch_pool\.conv\.weight"):
        fid.load_fid_inception(old_path)


def test_weights_are_loaded_without_unpickling_code(tmp_path: Path) -> None:
    path = tmp_path / fid.FID_WEIGHTS_NAME
    torch.save({"fc.weight": torch.zeros(1), "payload": Refused()}, path)
    with pytest.raises(ValueError, match="cannot read FID Inception weights"):
        fid.load_fid_inception(tmp_path)


def test_missing_weights_error_names_file_folders_and_url(tmp_path: Path) -> None:
    folders = [tmp_path / "a", tmp_path / "b"]
    folders[0].mkdir()
    with pytest.raises(FileNotFoundError) as info:
        fid.load_fid_inception(folders)
    message = str(info.value)
    assert fid.FID_WEIGHTS_NAME in message and fid.FID_WEIGHTS_URL in message
    assert str(folders[0]) in message and str(folders[1]) in message
    assert list(folders[0].iterdir()) == [] and not folders[1].exists()  # nothing fetched


# ---------------------------------------------------------------------------- FID


def test_fid_of_a_set_with_itself_is_zero() -> None:
    a, _ = gaussian_sets()
    assert abs(fid.fid_from_features(a, a)) < 1e-8 * np.trace(np.cov(a, rowvar=False))


def test_fid_agrees_with_pytorch_fid_formula() -> None:
    a, b = gaussian_sets()
    ours = fid.fid_from_features(torch.from_numpy(a).float(), b.astype(np.float32))
    a32, b32 = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
    mu1, s1 = np.mean(a32, axis=0), np.cov(a32, rowvar=False)
    mu2, s2 = np.mean(b32, axis=0), np.cov(b32, rowvar=False)
    want = pytorch_fid_distance(mu1, s1, mu2, s2)
    assert ours > 10.0
    assert abs(ours - want) <= 1e-6 * abs(want)
    # and by another road: Tr sqrt(S1 S2) = sum of sqrt of the eigenvalues of sqrt(S1) S2 sqrt(S1)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    other = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert abs(ours - other) <= 1e-6 * abs(other)


def test_fid_retries_a_singular_product_and_refuses_imaginary_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    from scipy import linalg

    real_sqrtm = linalg.sqrtm
    calls = []

    def first_not_finite(matrix):
        calls.append(matrix.copy())
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(linalg, "sqrtm", first_not_finite)
    a, b = gaussian_sets(n=50, d=8)
    with pytest.warns(UserWarning, match="singular"):
        value = fid.fid_from_features(a, b, eps=1e-3)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    np.testing.assert_allclose(calls[1], (s1 + 1e-3 * np.eye(8)) @ (s2 + 1e-3 * np.eye(8)))
    assert np.isfinite(value)

    monkeypatch.setattr(linalg, "sqrtm", lambda matrix: real_sqrtm(matrix) + 0.1j * np.eye(len(matrix)))
    with pytest.raises(ValueError, match="imaginary"):
        fid.fid_from_features(a, b)


def test_scores_refuse_sets_too_small_or_of_other_sizes() -> None:
    a, b = gaussian_sets(n=10, d=4)
    with pytest.raises(ValueError, match="at least 2"):
        fid.fid_from_features(a[:1], b)
    with pytest.raises(ValueError, match="feature sizes differ"):
        fid.kid_from_features(a, b[:, :3])


# ---------------------------------------------------------------------------- KID


def test_kid_near_zero_for_one_distribution_and_positive_for_shifted_ones() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(200, 64)), rng.normal(size=(200, 64))
    same_mean, same_std = fid.kid_from_features(a, b, subsets=50, subset_size=100)
    shifted_mean, shifted_std = fid.kid_from_features(a, b + 0.5, subsets=50, subset_size=100)
    assert abs(same_mean) < 0.01
    assert shifted_mean > 0.1 and shifted_mean > 20 * max(abs(same_mean), same_std)
    assert shifted_std > 0


def test_kid_is_seeded_and_agrees_with_torch_fidelity(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = gaussian_sets(n=120, d=32, shift=0.2)
    first = fid.kid_from_features(a, b, subsets=20, subset_size=50, seed=7)
    assert fid.kid_from_features(a, b, subsets=20, subset_size=50, seed=7) == first
    assert fid.kid_from_features(a, b, subsets=20, subset_size=50, seed=8) != first
    want = torch_fidelity_kid(a, b, 20, 50, 7)
    np.testing.assert_allclose(first, want, rtol=1e-9)
    monkeypatch.setattr(fid, "_FULL_KERNEL_MAX", 0)  # kernels per subset instead of indexed whole kernels
    np.testing.assert_allclose(fid.kid_from_features(a, b, subsets=20, subset_size=50, seed=7), want, rtol=1e-9)
    # a subset larger than a set is clipped to the smaller set
    clipped = fid.kid_from_features(a[:40], b, subsets=5, subset_size=1000, seed=1)
    np.testing.assert_allclose(clipped, torch_fidelity_kid(a[:40], b, 5, 40, 1), rtol=1e-9)


# ---------------------------------------------------------------------------- Inception Score


def test_inception_score_agrees_with_torch_fidelity_formula() -> None:
    rng = np.random.default_rng(11)
    # logits of the Inception's size, spread like a real network's, in float32 as the network returns them
    logits = (rng.normal(size=(103, fid.LOGITS_DIM)) * rng.uniform(0.5, 6.0, size=(103, 1))).astype(np.float32)
    for splits, shuffle, seed in [(10, True, 2020), (10, False, 0), (7, True, 3), (1, True, 5), (103, False, 0)]:
        got = fid.inception_score(logits, splits, shuffle, seed)
        want = torch_fidelity_isc(logits, splits, shuffle, seed)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)  # atol: the std of 1-row splits is 0
    assert fid.inception_score(logits)[0] > 1.5  # varied, confident rows: clearly above the floor of 1
    assert fid.inception_score(logits, 10, True, 1) != fid.inception_score(logits, 10, True, 2)  # the shuffle counts
    assert fid.inception_score(torch.from_numpy(logits)) == fid.inception_score(logits)


def test_inception_score_known_values() -> None:
    # every picture certain of its own class, k classes equally often in each split: IS = k exactly
    k, per_class, splits = 4, 5, 5
    logits = np.full((k * per_class, fid.LOGITS_DIM), -50.0)
    logits[np.arange(k * per_class), np.arange(k * per_class) % k] = 50.0
    mean, std = fid.inception_score(logits, splits, shuffle=False)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    same = np.tile(np.random.default_rng(0).normal(size=(1, fid.LOGITS_DIM)), (20, 1))  # one prediction for all
    assert fid.inception_score(same, 4) == pytest.approx((1.0, 0.0), abs=1e-12)


def test_inception_score_refuses_bad_logits_and_splits() -> None:
    logits = np.zeros((5, 8))
    with pytest.raises(ValueError, match="5 images cannot be cut into 6 splits"):
        fid.inception_score(logits, 6)
    with pytest.raises(ValueError, match="at least 1"):
        fid.inception_score(logits, 0)
    with pytest.raises(ValueError, match="expected logits"):
        fid.inception_score(np.zeros(5), 1)
    logits[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fid.inception_score(logits, 1)


def test_logits_are_pool3_times_the_fc_weight_without_bias(net: fid.FIDInceptionV3) -> None:
    pool3 = fid.features(net, torch.rand(3, 40, 40, 3, generator=torch.Generator().manual_seed(2)))
    logits = net.logits(pool3)
    assert logits.shape == (3, fid.LOGITS_DIM) and logits.dtype == torch.float32
    expected = pool3.astype(np.float64) @ net.fc.weight.detach().double().numpy().T  # torch-fidelity's logits_unbiased
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-4, atol=1e-4)
    assert net.fc.bias.abs().sum() > 0  # the bias exists and is left out
    with torch.no_grad():
        full = net.fc(torch.from_numpy(pool3))
    assert not torch.allclose(full, logits)


def test_score_sets_reports_is_of_the_first_set_with_clipped_splits(net: fid.FIDInceptionV3,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # FID's 2048-d matrix square root is slow on a busy CPU and its maths is tested above: here on 16 dimensions
    real_fid = fid.fid_from_features
    monkeypatch.setattr(fid, "fid_from_features", lambda a, b: real_fid(a[:, :16], b[:, :16]))
    rng = np.random.default_rng(3)
    a = rng.gamma(1.0, size=(6, fid.FEATURE_DIM)).astype(np.float32)
    b = rng.gamma(1.0, size=(5, fid.FEATURE_DIM)).astype(np.float32)
    scores = fid.score_sets(net, a, b, kid_subsets=4, kid_subset_size=3, seed=9, is_splits=10)
    assert scores.is_splits == 6 and (scores.images_a, scores.images_b) == (6, 5)
    assert (scores.inception_score, scores.inception_score_std) == fid.inception_score(net.logits(a), 6, True, 9)
    assert (scores.kid, scores.kid_std) == fid.kid_from_features(a, b, 4, 3, 9)
    assert scores.fid == real_fid(a[:, :16], b[:, :16])
    assert fid.score_sets(net, a, b, 4, 3, 9, is_splits=2).is_splits == 2
    report = scores.report()
    assert f"IS {scores.inception_score:.3f} ± {scores.inception_score_std:.3f}" in report
    assert "6 vs 5 images; IS of the first set over 6 splits" in report


# ---------------------------------------------------------------------------- folders and the cache


class CountingNet(nn.Module):
    """A cheap stand-in with the FID network's interface (0..1 in, resized as pytorch-fid, 2048-d out)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.proj = nn.Conv2d(3, fid.FEATURE_DIM, kernel_size=4, stride=4)
        self.calls = 0
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += x.shape[0]
        x = 2 * fid.resize_for_inception(x) - 1
        return F.relu(self.proj(x)).mean(dim=(2, 3))


def _write_photos(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = [photo("chelsea.jpg", (64, 48)), photo("rocket.png", (40, 56)), photo("astronaut.tif", (50, 50))]
    paths = []
    for i, array in enumerate(arrays):
        paths.append(folder / f"{i}.png")
        Image.fromarray(array).save(paths[-1])
    return paths


def test_folder_features_are_cached_per_file_content(tmp_path: Path) -> None:
    paths = _write_photos(tmp_path / "images")
    dup = tmp_path / "images" / "3.png"
    dup.write_bytes(paths[0].read_bytes())
    paths.append(dup)
    cache = tmp_path / "cache"
    net = CountingNet()

    first = fid.folder_features(net, paths, cache, batch_size=2)
    assert first.shape == (4, fid.FEATURE_DIM) and first.dtype == np.float32
    assert net.images == 3  # the duplicate content is computed once
    np.testing.assert_array_equal(first[0], first[3])
    stored = [p.name for p in cache.rglob("*") if p.is_file()]
    assert len(stored) == 2 and "index.json" in stored  # the three vectors in one shard, and its index

    # pytorch-fid's own reading: PIL RGB, /255, the whole batch resized by the model
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths[:1]]
    with torch.no_grad():
        np.testing.assert_allclose(first[:1], net(as_batch(*arrays).permute(0, 3, 1, 2)).numpy(), rtol=1e-5, atol=1e-7)

    net.calls = net.images = 0
    progress = SilentProgress(4)
    again = fid.folder_features(net, paths, cache, progress=progress)
    assert net.calls == 0 and progress.done == 4  # every file from the cache
    np.testing.assert_array_equal(again, first)

    Image.fromarray(photo("coffee.webp", (30, 30))).save(paths[1])  # one file changes
    changed = fid.folder_features(net, paths, cache)
    assert net.images == 1
    np.testing.assert_array_equal(changed[[0, 2, 3]], first[[0, 2, 3]])
    assert not np.array_equal(changed[1], first[1])

    other = CountingNet(seed=1)  # other weights never read this network's entries
    fid.folder_features(other, paths, cache)
    assert other.images == 3

    for entry in cache.rglob("*.safetensors"):  # a damaged shard is recomputed, not trusted
        entry.write_bytes(b"not safetensors")
    net.images = 0
    with pytest.warns(UserWarning, match="damaged"):
        np.testing.assert_array_equal(fid.folder_features(net, paths, cache), changed)
    assert net.images == 3


def test_folder_features_match_image_batch_features(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    paths = _write_photos(folder)
    net = CountingNet()
    from_folder = fid.folder_features(net, folder)  # a folder: its images in natural order
    for i, path in enumerate(paths):
        batch = as_batch(np.asarray(Image.open(path).convert("RGB")))
        np.testing.assert_allclose(from_folder[i], fid.features(net, batch)[0], rtol=1e-5, atol=1e-7)


def test_unreadable_file_is_named_before_the_network_runs(tmp_path: Path) -> None:
    paths = _write_photos(tmp_path / "images")
    broken = tmp_path / "images" / "broken.png"
    broken.write_bytes(b"this is no png")
    net = CountingNet()
    with pytest.raises(ImageFolderError, match="broken.png"):
        fid.folder_features(net, [*paths, broken], tmp_path / "cache")
    assert net.calls == 0
