"""One fresh process that trains a tiny audio encoder and a tiny adapter through the pack, then plays one sound at
several gains and two sounds mixed both ways through the nodes, for test_loudness_reaches_the_picture.py (no pytest,
no fixture seeding).

    python loudness_child.py WORK --host-seed S

Before any work the global generator is put in a state of its own (``--host-seed``), as the host's other work
leaves it, so only the pack's own seeding can make two runs agree. Prints one JSON line of measures:
for each gain, the sound's level and strength (Encode Audio), the norm of the tokens Audio to Conditioning
appends and their distance from the gain-1 tokens, and the distance of a seeded 4-step DDIM sample from the
gain-1 sample; the same norms with loudness off; and for the two mixes, the distance of their tokens (per unit
strength) from each source's own.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from atelier_cli import load_pack  # noqa: E402

load_pack()

import numpy as np  # noqa: E402
import torch  # noqa: E402

GAINS = (0.25, 0.5, 1.0, 2.0)
BASE = 0.1  # the peak of each sound at gain 1: the noise band reads -31.6 dBFS, the tone -23.0
STREAM, BARK = 4, 1  # synthetic_sound's low noise band and high tone


def _audio(wave: np.ndarray, rate: int = 8000) -> dict:
    return {"waveform": torch.from_numpy(wave)[None, None], "sample_rate": rate}


def _encoder(work: Path, clip):
    from atelier.nodes import audio as nodes
    from atelier.nodes import bridge

    from helpers import node_defaults, synthetic_paired_folder

    pairs = synthetic_paired_folder(work / "pairs", per_class=6)
    os.environ["ATELIER_MODELS_DIR"] = str(work / "models")  # the encoder is written here, not into the pack
    bridge._output_override = work / "output"
    node = nodes.AtelierTrainAudioEncoder()
    args = node_defaults(nodes.AtelierTrainAudioEncoder, folder=str(pairs), name="sounds", epochs=25, batch_size=12,
                         learning_rate=1e-3, temperature=0.05, val_fraction=0.25, sample_rate=8000,
                         window_seconds=0.5, n_mels=32)
    return node.train(**args, clip_model=clip)[0]


def _adapter(work: Path, clip, unet):
    from atelier.core.audio.image_embedding import clip_embedder, embed_pictures
    from atelier.core.sd15.embedding_adapter import LoadedAdapter
    from atelier.training.sd15.adapter_trainer import AdapterTrainConfig, train_adapter

    from helpers import synthetic_picture, tiny_data

    pictures = torch.from_numpy(np.stack([synthetic_picture(k) for k in range(4)]).astype(np.float32) / 255)
    embeds = embed_pictures(clip_embedder(clip), pictures).unit
    config = AdapterTrainConfig(tokens=2, steps=12, batch_size=2, lr=1e-2, checkpoint_every=100, seed=4)
    result = train_adapter(unet, tiny_data(dim=768), embeds, config, work / "adapter_run")
    return LoadedAdapter(result.adapter.eval(), "tiny")


def _sample(unet, cond: torch.Tensor) -> torch.Tensor:
    """Four DDIM steps (SD 1.5's schedule) from one seeded noise: what a sampler draws with ``cond``."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    scheduler.set_timesteps(4)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        for t in scheduler.timesteps:
            latents = scheduler.step(unet(latents, t, encoder_hidden_states=cond).sample, t, latents).prev_sample
    return latents


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--host-seed", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.host_seed)
    torch.rand(args.host_seed % 7 + 1)

    from atelier.core.curator.clip_model import load_clip
    from atelier.nodes import audio as nodes

    from helpers import synthetic_sound, tiny_clip_folder, tiny_unet

    clip = load_clip(tiny_clip_folder(args.work / "clip"))
    encoder = _encoder(args.work, clip)
    unet = tiny_unet(cross_attention_dim=768)
    adapter = _adapter(args.work, clip, unet)
    text = [[torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(3)), {}]]
    encode, condition, mixer = (nodes.AtelierEncodeAudio().encode, nodes.AtelierAudioConditioning().apply,
                                nodes.AtelierMixSounds().mix)

    def tokens(audio: dict, loudness: bool = True) -> tuple[torch.Tensor, float, float, str]:
        embedding, _, notes = encode(encoder, audio, loudness)
        cond = condition(text, adapter, embedding, 1.0)[0][0][0]
        return cond, float(embedding.row_strengths()[0]), float(cond[0, 77:].norm()), notes

    base = BASE * synthetic_sound(STREAM, seconds=1.0, gain=1.0)
    by_gain = {g: tokens(mixer(_audio(base), g, 1.0, 1.0, 1.0)[0]) for g in GAINS}
    samples = {g: _sample(unet, cond) for g, (cond, *_) in by_gain.items()}
    off = [tokens(mixer(_audio(base), g, 1.0, 1.0, 1.0)[0], loudness=False)[2] for g in GAINS]

    def unit_tokens(audio: dict) -> torch.Tensor:
        cond, strength, _, _ = tokens(audio)
        return cond[0, 77:] / strength

    stream, bark = (BASE * synthetic_sound(kind, seconds=1.0, gain=1.0) for kind in (STREAM, BARK))
    alone = {"stream": unit_tokens(_audio(stream)), "bark": unit_tokens(_audio(bark))}
    mixes = {"bark_loud": (0.25, 1.0), "stream_loud": (1.0, 0.25)}
    mixed = {name: unit_tokens(mixer(_audio(stream), g_stream, g_bark, 1.0, 1.0, audio_2=_audio(bark))[0])
             for name, (g_stream, g_bark) in mixes.items()}
    print(json.dumps({
        "gains": list(GAINS),
        "level_db": [float(by_gain[g][3].split("level ")[1].split(" dBFS")[0]) for g in GAINS],
        "strength": [by_gain[g][1] for g in GAINS],
        "token_norm": [by_gain[g][2] for g in GAINS],
        "token_distance": [float((by_gain[g][0] - by_gain[1.0][0]).norm()) for g in GAINS],
        "sample_distance": [float((samples[g] - samples[1.0]).norm()) for g in GAINS],
        "sample_norm": float(samples[1.0].norm()),
        "token_norm_loudness_off": off,
        "mix": {name: {source: float((tokens_ - alone[source]).norm()) for source in alone}
                for name, tokens_ in mixed.items()},
    }), flush=True)


if __name__ == "__main__":
    main()
