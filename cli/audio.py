"""Headless commands of audio-embedding conditioning: the two trainings, and embedding sounds.

    python atelier_cli.py audio-train FOLDER --clip CLIP --out-dir ENCODERS --run RUNS [--epochs 30] [--loss infonce]
    python atelier_cli.py adapter-train FOLDER --model SD15 --clip CLIP --out-dir ADAPTERS --run RUN [--steps 2000]
    python atelier_cli.py audio-encode ENCODER.safetensors SOUND [SOUND ...] --out embeddings.safetensors \
        [--reference-dbfs -20]
    python atelier_cli.py sound-video SOUND --encoder ENCODER --adapter ADAPTER --model SD15 [--fps 10] \
        [--max-seconds 10] [--prompt TEXT] [--chain-denoise 0.6] --output OUT

FOLDER for audio-train holds <stem>.wav/.flac/.mp3 beside <stem>.png/.jpg, or videos. Both trainings resume when
the same command runs again with the same --run folder. Drawing a picture from a sound needs a diffusion sampler:
that part runs in ComfyUI (workflows/audio_to_image.json), with the encoder and adapter trained here. sound-video
draws a video from a sound with diffusers (DDIM) on an SD 1.5 file: frame_00001.png..., sound.wav (cut to the
frames' length) and video.mp4 (through PyAV) into a new vNNN folder under OUT/atelier/sound_video; inside ComfyUI
the node Atelier Sound to Video Frames does the same with ComfyUI's own sampler (workflows/sound_to_video.json).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

_PRECISIONS = ["auto", "fp16", "bf16", "fp32"]


def _image_encoder(args: argparse.Namespace):  # -> core.image_embedding.ImageEmbedder
    from ..core.audio.image_embedding import clip_embedder
    from .collection import load_clip_option

    return clip_embedder(load_clip_option(args))


def _common(p: argparse.ArgumentParser, folder_help: str) -> None:
    from .common import declared

    p.add_argument("folder", help=folder_help)
    p.add_argument("--clip", default=declared("core.curator.clip_model", "DEFAULT_CLIP"),
                   help="the frozen image encoder: a CLIP folder, name or cached HF id")
    p.add_argument("--precision", default="auto", choices=_PRECISIONS, help="the image encoder's precision")
    p.add_argument("--out-dir", required=True, help="where the trained file goes")
    p.add_argument("--run", required=True, help="run folder for checkpoints; rerun to resume")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def add_parsers(sub: Any) -> None:
    from .common import add_launch_options, add_numbers, declared

    a = sub.add_parser("audio-train", help="train an audio encoder into a CLIP image-embedding space")
    _common(a, "<stem>.wav/.flac/.mp3/.ogg beside <stem>.png/.jpg pairs, or videos")
    a.add_argument("--name", default="atelier_audio", help="file name of the encoder (name_2 if taken)")
    d, m = declared("training.audio.aligner", "AlignConfig"), declared("core.audio.features", "MelSpec")
    j = declared("training.audio.job", "AudioJob")
    a.add_argument("--loss", choices=declared("training.audio.aligner", "LOSSES"), default=d.loss,
                   help="infonce (negative L2 distance logits) or l2 regression")
    a.add_argument("--symmetric", action="store_true", help="InfoNCE both ways (audio to image and back)")
    a.add_argument("--learn-scale", action="store_true", help="learn the InfoNCE temperature")
    add_numbers(a, int, 1, epochs=(d.epochs, "training epochs"), top_k=(j.top_k, "videos: frames kept per video"))
    add_numbers(a, int, 2, batch_size=(d.batch_size, "pairs per batch (InfoNCE contrasts within a batch)"))
    add_numbers(a, int, 0, seed=(d.seed, "seed of the weights, split and batches"),
                warmup_epochs=(j.warmup_epochs, "videos: epochs on all frames before scoring them"))
    add_numbers(a, int, 4000, sample_rate=(m.sample_rate, "sounds are resampled to this rate"))
    add_numbers(a, int, 8, n_mels=(m.n_mels, "mel bands"))
    add_numbers(a, float, above=0, temperature=(d.temperature, "InfoNCE temperature"), lr=(d.lr, "learning rate"),
                window_seconds=(m.window_seconds, "seconds of sound per window"),
                frames_per_second=(j.frames_per_second, "videos: candidate frames per second"))
    add_numbers(a, float, high=0.9, above=0,
                val_fraction=(d.val_fraction, "share of pairs held out for R@1 and R@10"))
    add_numbers(a, float, -1, 1, threshold=(j.threshold, "videos: lowest cosine score a kept frame may have"))
    t = sub.add_parser("adapter-train", help="train the image-embedding adapter on pictures and a frozen SD 1.5")
    _common(t, "folder of pictures (with optional <stem>.txt captions)")
    t.add_argument("--model", required=True, help="SD 1.5 checkpoint file or diffusers folder: a name in "
                   "models/checkpoints, or a path")
    t.add_argument("--name", default="atelier_adapter", help="file name of the adapter (name_2 if taken)")
    t.add_argument("--no-captions", action="store_true", help="train on empty prompts only")
    c = declared("training.sd15.adapter_trainer", "AdapterTrainConfig")
    t.add_argument("--mixed-precision", choices=declared("training.sd15.lora_trainer", "PRECISIONS"),
                   default=c.mixed_precision, help="fp16/bf16 autocast (CUDA)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="less memory, slower steps")
    add_numbers(t, int, 1, tokens=(c.tokens, "extra 768-d tokens per embedding"), steps=(c.steps, "training steps"),
                batch_size=(c.batch_size, "pictures per step"),
                checkpoint_every=(c.checkpoint_every, "steps between checkpoints"))
    add_numbers(t, int, 0, seed=(c.seed, "seed of the weights, noise and order"))
    add_numbers(t, int, 64, resolution=(512, "training resolution"))
    add_numbers(t, float, above=0, lr=(c.lr, "learning rate"))
    add_numbers(t, float, 0, 1, text_dropout=(c.text_dropout, "share of steps with the prompt dropped"),
                embed_dropout=(c.embed_dropout, "share of steps with the embedding dropped"))
    add_launch_options(t)
    e = sub.add_parser("audio-encode", help="embed sounds with a trained audio encoder into a .safetensors file")
    e.add_argument("encoder", help="an audio encoder .safetensors written by audio-train: a name in "
                   "models/atelier/audio_encoders, or a path")
    e.add_argument("sounds", nargs="+", help="sound files (.wav, .flac, .mp3, .ogg); any layout and sample rate")
    e.add_argument("--out", required=True, help="the .safetensors file of the embeddings (replaced if it exists)")
    add_numbers(e, float, -80.0, 0.0, reference_dbfs=(declared("core.audio.loudness", "DEFAULT_REFERENCE_DB"),
                "the level (gated RMS, dBFS) drawn at strength 1, as Encode Audio's reference_dbfs"))
    e.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    v = sub.add_parser("sound-video", help="a video from a sound: one SD 1.5 frame per 1/fps s, smoothed over time")
    v.add_argument("sound", help="a sound file (.wav, .flac, .mp3, .ogg, or a video's audio track)")
    v.add_argument("--encoder", required=True, help="an audio encoder written by audio-train: a name in "
                   "models/atelier/audio_encoders, or a path")
    v.add_argument("--adapter", required=True, help="an embedding adapter written by adapter-train for the same "
                   "image encoder: a name in models/atelier/embedding_adapters, or a path")
    v.add_argument("--model", required=True, help="SD 1.5 checkpoint file or diffusers folder: a name in "
                   "models/checkpoints, or a path")
    v.add_argument("--prompt", default="", help="the prompt each frame's sound tokens are appended to")
    v.add_argument("--negative", default="", help="negative prompt")
    add_numbers(v, float, 1, 60, fps=(10.0, "frames per second (8-12 is usual)"))
    add_numbers(v, float, 0, max_seconds=(10.0, "the longest video, in seconds of sound from its start; 0: all"),
                smoothing_seconds=(0.5, "standard deviation of the Gaussian over time; 0: none"))
    add_numbers(v, float, 0, 5, strength=(1.0, "scale of the sound's tokens"))
    add_numbers(v, float, 0.05, 1, chain_denoise=(0.6, "each frame from the previous one's latent at this denoise; "
                                                        "1: every frame from noise"))
    add_numbers(v, int, 64, width=(512, "frame width (multiple of 8)"), height=(512, "frame height (multiple of 8)"))
    add_numbers(v, int, 1, steps=(20, "DDIM steps per frame"))
    add_numbers(v, int, 0, seed=(0, "the noise seed, the same for every frame"))
    add_numbers(v, float, 0, 30, guidance=(7.0, "classifier-free guidance scale"))
    v.add_argument("--constant-strength", action="store_true", help="the same token strength on every frame "
                   "(default: it follows the sound's loudness, as audio-encode's strength does)")
    add_numbers(v, float, -80.0, 0.0, reference_dbfs=(declared("core.audio.loudness", "DEFAULT_REFERENCE_DB"),
                "the RMS level (dBFS) drawn at --strength when the strength follows the loudness"))
    v.add_argument("--output", default="output", help="output root folder")
    v.add_argument("--precision", default="auto", choices=_PRECISIONS, help="SD 1.5's: auto is fp16 on CUDA")
    v.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def run_audio(args: argparse.Namespace) -> int:
    from ..core.audio.features import MelSpec
    from ..nodes import bridge
    from ..training.audio import job as audio_job
    from ..training.audio.aligner import AlignConfig

    mel = MelSpec(sample_rate=args.sample_rate, window_seconds=args.window_seconds, n_mels=args.n_mels)
    align = AlignConfig(loss=args.loss, symmetric=args.symmetric, learn_scale=args.learn_scale,
                        temperature=args.temperature, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        val_fraction=args.val_fraction, seed=args.seed, mel=mel)
    job = audio_job.AudioJob(args.folder, args.name, align, args.frames_per_second, args.top_k, args.threshold,
                             args.warmup_epochs)
    result = audio_job.run(job, _image_encoder(args), Path(args.out_dir), Path(args.run),
                           bridge.compute_device(args.device),
                           bridge.progress(audio_job.estimated_steps(job), "training"))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for line in audio_job.epoch_lines(result.align.history):
        print(line)
    if result.selected:
        print(f"frames kept: {', '.join(result.selected)}")
    print(f"wrote {result.path}")
    return 0


def run_adapter(args: argparse.Namespace) -> int:
    from ..core.dataset.folder_dataset import load_folder
    from ..core.sd15 import checkpoint as sd15_checkpoint
    from ..training import distributed
    from ..training.sd15 import adapter_job
    from ..training.sd15.adapter_trainer import AdapterTrainConfig
    from .common import TrainingRun, model_file

    config = AdapterTrainConfig(tokens=args.tokens, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                text_dropout=args.text_dropout, embed_dropout=args.embed_dropout,
                                mixed_precision=args.mixed_precision,
                                gradient_checkpointing=args.gradient_checkpointing, seed=args.seed,
                                checkpoint_every=args.checkpoint_every)
    dataset = None

    def count() -> int:  # reads the folder once, its errors reported as events too
        nonlocal dataset
        dataset = load_folder(args.folder)
        return 2 * len(dataset.images) + config.steps

    run = TrainingRun(args, count, "training")
    with run:
        distributed.check_batch(config.batch_size, "--batch-size")
        images = _image_encoder(args)
        parts, _ = sd15_checkpoint.load(model_file(args.model, "checkpoints", "SD 1.5 checkpoint"))
        result = adapter_job.run(parts, dataset, images, config, args.name, Path(args.out_dir), Path(args.run),
                                 args.resolution, not args.no_captions, run.device, run.progress)
    losses = result.result.losses
    run.finished({"adapter": str(result.path), "steps": config.steps, "loss": losses[-1],
                  "resumed": result.result.resumed})
    if run.main:
        for warning in result.warnings:
            print(f"note: {warning}", file=sys.stderr)
        if result.result.resumed:
            print(result.result.resumed)
        print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps")
        print(f"wrote {result.path}")
    return 0


def run_encode(args: argparse.Namespace) -> int:
    """What Encode Audio does to each clip (embed_clip, and its loudness strength), for files: one row per sound, in
    the order given; with each sound's level, strength and pan (Sound Position's)."""
    import json

    import torch

    from ..core.audio.encoder import load_audio_encoder
    from ..core.audio.features import read_audio
    from ..core.audio.loudness import loudness_strength
    from ..core.audio.position import measure_position
    from ..core.shared.state_dicts import write_safetensors
    from ..nodes import bridge
    from .common import model_file

    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        raise ValueError(f"--out {str(out)!r}: give a .safetensors file name")
    missing = [path for path in args.sounds if not Path(path).is_file()]
    if missing:  # before the encoder loads
        raise FileNotFoundError(f"no sound file {', '.join(map(repr, missing))}")
    encoder = load_audio_encoder(model_file(args.encoder, "audio_encoders", "audio encoder"),
                                 bridge.compute_device(args.device))
    rows, measured = [], []
    progress = bridge.progress(len(args.sounds), "encoding")
    for path in args.sounds:
        waveform, rate = read_audio(path)
        embedding, notes = encoder.embed_clip(waveform, rate, repr(path))
        loud, where = loudness_strength(waveform, rate, args.reference_dbfs), measure_position(waveform, rate)
        rows.append(embedding)
        measured.append((loud.level_db, loud.strength, where.pan))
        for note in [*notes, loud.note("the sound"), where.note("the sound")]:
            print(f"note: {path}: {note}", file=sys.stderr)
        progress.advance()
    embeds = torch.stack(rows)
    level_db, strength, pan = torch.tensor(measured, dtype=torch.float32).T.contiguous()
    write_safetensors(out, {"audio_embeds": embeds.contiguous(),
                            "image_embeds": (embeds * encoder.image_embed_norm).contiguous(),
                            "level_db": level_db, "strength": strength, "pan": pan},
                      {"atelier_image_encoder": encoder.image_encoder, "atelier_sounds": json.dumps(args.sounds),
                       "atelier_image_embed_norm": json.dumps(encoder.image_embed_norm),
                       "atelier_reference_dbfs": json.dumps(args.reference_dbfs)})
    print(f"wrote {out}: {len(rows)} embedding(s) of {encoder.dim} values in the space of {encoder.image_encoder!r} "
          "(audio_embeds: unit length; image_embeds: at the image encoder's scale; level_db, strength, pan: one per "
          "sound)")
    return 0


def run_sound_video(args: argparse.Namespace) -> int:
    """What Atelier Sound to Video Frames does, with diffusers instead of ComfyUI's sampler, into files."""
    import numpy as np
    import soundfile
    import torch
    from PIL import Image

    from ..core.audio import sound_video as sv
    from ..core.audio.encoder import load_audio_encoder
    from ..core.audio.features import read_audio
    from ..core.sd15 import checkpoint as sd15_checkpoint
    from ..core.sd15.embedding_adapter import append_tokens, load_adapter
    from ..core.sd15.pipeline import encode_prompts
    from ..core.shared.output_paths import new_version_folder, safe_subfolder, write_atomic
    from ..nodes import bridge
    from .common import model_file

    if args.width % 8 or args.height % 8:
        raise ValueError(f"--width {args.width} --height {args.height}: give multiples of 8")
    waveform, rate = read_audio(args.sound)
    plan = sv.plan_frames(waveform.shape[-1], rate, args.fps, args.max_seconds, repr(args.sound))  # before models
    device = bridge.compute_device(args.device)
    encoder = load_audio_encoder(model_file(args.encoder, "audio_encoders", "audio encoder"), device)
    adapter = load_adapter(model_file(args.adapter, "embedding_adapters", "embedding adapter"))
    half = args.precision == "fp16" or (args.precision == "auto" and device.type == "cuda")
    dtype = {"bf16": torch.bfloat16}.get(args.precision, torch.float16 if half else torch.float32)
    parts, _ = sd15_checkpoint.load(model_file(args.model, "checkpoints", "SD 1.5 checkpoint"), dtype)
    text = encode_prompts(parts.text_encoder, parts.tokenizer, [args.prompt, args.negative])
    frames = sv.sound_conditionings(encoder, adapter, [[text[:1], {}]], waveform, rate, args.fps, args.max_seconds,
                                    args.smoothing_seconds, args.strength, not args.constant_strength,
                                    repr(args.sound), reference_db=args.reference_dbfs)
    negative = append_tokens(text[1:], adapter.tokens(adapter.no_picture()), args.strength)
    sample, decode = sv.diffusers_frames(parts, negative, (args.width, args.height), args.seed, args.steps,
                                         args.guidance, device)
    bridge.set_output_directory(args.output)
    folder = new_version_folder(safe_subfolder(bridge.output_directory(), "atelier/sound_video"))
    pictures = sv.render_frames(frames.conditionings, sample, decode, bridge.progress(plan.count, "frames"),
                                args.chain_denoise)
    pixels = (pictures.numpy() * 255).round().astype(np.uint8)
    for i, picture in enumerate(pixels):
        write_atomic(folder / f"frame_{i + 1:05d}.png", lambda tmp, p=picture: Image.fromarray(p).save(tmp, "PNG"))
    sound = waveform[:, :plan.samples(rate)]
    write_atomic(folder / "sound.wav", lambda tmp: soundfile.write(tmp, sound.T, rate, format="WAV"))
    for note in frames.notes:
        print(f"note: {note}", file=sys.stderr)
    try:
        from ..core.audio.video_frames import write_video

        write_video(folder / "video.mp4", pixels, args.fps, sound, rate)
        made = "video.mp4, "
    except ImportError:
        made = ""
        print("note: PyAV is not installed, so no video.mp4: join the frames and sound.wav with any video tool",
              file=sys.stderr)
    print(f"wrote {made}{plan.count} frames at {args.fps:g} fps and sound.wav ({plan.seconds:.2f} s) to {folder}; "
          f"flicker {sv.flicker(frames.conditionings):.3f}")
    return 0


JOBS = {"audio-train": run_audio, "adapter-train": run_adapter, "audio-encode": run_encode,
        "sound-video": run_sound_video}
