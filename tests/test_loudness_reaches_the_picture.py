"""Loudness reaches the conditioning and the sampler's picture, on a tiny audio encoder and adapter trained in fresh
processes (loudness_child.py): one sound at gains 0.25, 0.5, 1 and 2 through Mix Sounds, Encode Audio and Audio to
Conditioning, and two sounds mixed both ways.

The measures (see loudness_child.py): the norm of the appended tokens, their distance from the gain-1 tokens, and
the distance of a seeded 4-step DDIM sample on a tiny UNet from the gain-1 sample. Each doubling of the gain is
+6.02 dB, so the strength (and the tokens' norm) grows by 2 ** 0.602 = 1.518 per step: the margins below are far
from the numbers measured (in the comments)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("loudness_child.py")
STEP = 2 ** (20 * 0.30103 / 10)  # the strength ratio of one doubling of the gain (+6.02 dB): 1.518


def _measures(work: Path, host_seed: int) -> dict:
    done = subprocess.run([sys.executable, str(CHILD), str(work), "--host-seed", str(host_seed)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("loudness")
    first, second = _measures(work / "a", 1), _measures(work / "b", 2)
    assert first == second  # the host's generator state does not reach training, encoding or sampling
    return first


def test_the_same_sound_louder_gives_stronger_tokens(measured: dict) -> None:
    levels, strengths, norms = measured["level_db"], measured["strength"], measured["token_norm"]
    assert measured["gains"] == [0.25, 0.5, 1.0, 2.0]
    for i in range(3):
        assert levels[i + 1] - levels[i] == pytest.approx(6.02, abs=0.15)  # as Encode Audio's notes say it
        assert strengths[i + 1] / strengths[i] == pytest.approx(STEP, rel=1e-3)
        # measured 1.518 every step: the tokens' length follows the strength, not a hair's breadth
        assert norms[i + 1] / norms[i] == pytest.approx(STEP, rel=0.05)
    off = measured["token_norm_loudness_off"]
    assert max(off) / min(off) < 1.01  # loudness off: the adapter's LayerNorm leaves every gain the same length


def test_conditioning_and_sample_move_away_from_gain_1_monotonically(measured: dict) -> None:
    tokens, samples = measured["token_distance"], measured["sample_distance"]
    assert tokens[2] == samples[2] == 0.0
    assert tokens[0] > 1.3 * tokens[1] > 0 and tokens[3] > 0.3 * tokens[0]  # measured 10.2, 6.2, 0, 9.4
    # measured 0.117, 0.071, 0, 0.107 on a sample of norm 66 (float rounding: ~1e-5), ordered by |log gain|
    assert samples[0] > 1.3 * samples[1] > 0 and samples[3] > 0.3 * samples[0]
    assert min(samples[0], samples[1], samples[3]) > 1e-4 * measured["sample_norm"]


def test_mixed_sounds_lean_towards_the_louder(measured: dict) -> None:
    """Stream at 0.25 with the bark at 1, and the other way round: each mix's tokens (per unit strength) lie
    nearer the louder source's own (measured 14.9 against 59.2, and 23.3 against 50.1)."""
    bark_loud, stream_loud = measured["mix"]["bark_loud"], measured["mix"]["stream_loud"]
    assert 2 * bark_loud["bark"] < bark_loud["stream"]
    assert 1.5 * stream_loud["stream"] < stream_loud["bark"]
    assert bark_loud["bark"] < stream_loud["bark"] and stream_loud["stream"] < bark_loud["stream"]
