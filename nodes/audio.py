"""Pictures from sound: the audio encoder and the image-embedding adapter, their training, and the nodes
that turn an AUDIO into SD 1.5 conditioning (plus mixing, thumbnails and image-plus-sound edits)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.audio import thumbnails as audio_thumbnails
from ..core.audio.encoder import AudioEmbedder, AudioEmbedding, blend, load_audio_encoder
from ..core.audio.features import MelSpec
from ..core.audio.image_embedding import ImageEmbedder, clip_embedder
from ..core.audio.loudness import DEFAULT_REFERENCE_DB, loudness_strength, strength_for
from ..core.audio.mix import mix
from ..core.audio.position import measure_position, position_mask
from ..core.curator.pixels import check_image_batch
from ..core.dataset.image_files import ImageFolderError, folder_fingerprint, list_images
from ..core.sd15.embedding_adapter import LoadedAdapter, load_adapter
from ..core.shared import plots
from ..core.shared.state_dicts import state_dict_sha256
from ..training.audio.aligner import LOSSES, AlignConfig
from ..training.sd15.adapter_trainer import AdapterTrainConfig
from ..training.sd15.lora_trainer import PRECISIONS
from . import bridge
from .curator import CLIP
from .declare import AtelierNode, ModelFileLoader, float_input, int_input, seed_input
from .lora import CHECKPOINT_CLIP_VAE


class AudioNode(AtelierNode):
    CATEGORY = "Atelier/Audio"


ENCODER = "ATELIER_AUDIO_ENCODER"
ADAPTER = "ATELIER_EMBED_ADAPTER"
EMBEDDING = "ATELIER_AUDIO_EMBEDDING"
ENCODER_KIND, ADAPTER_KIND = "audio_encoders", "embedding_adapters"
RUNS_SUBFOLDER = "atelier/audio_runs"


def encoder_key() -> str:
    return bridge.register_model_folder(ENCODER_KIND, {".safetensors"})


def adapter_key() -> str:
    return bridge.register_model_folder(ADAPTER_KIND, {".safetensors"})


DEFAULT_ENCODER, DEFAULT_ADAPTER = "atelier_audio.safetensors", "atelier_adapter.safetensors"  # the trainings' names


def _image_encoder_inputs() -> dict[str, Any]:
    return {
        "clip_vision": ("CLIP_VISION", {"tooltip": "The frozen image encoder, from Load CLIP Vision (a CLIP "
                        "ViT-L/14 or ViT-H/14 with its projection). Give this or 'clip_model'."}),
        "clip_model": (CLIP, {"tooltip": "The frozen image encoder as a whole CLIP from Atelier Load CLIP "
                       "(instead of 'clip_vision')."}),
    }


def image_embedder(clip_vision: Any = None, clip_model: Any = None) -> ImageEmbedder:
    if (clip_vision is None) == (clip_model is None):
        raise ValueError("wire exactly one image encoder: 'clip_vision' (Load CLIP Vision) or 'clip_model' "
                         "(Atelier Load CLIP)")
    return bridge.clip_vision_embedder(clip_vision) if clip_vision is not None else clip_embedder(clip_model)


def _waveforms(audio: Any) -> tuple[list[np.ndarray], int]:
    """ComfyUI's AUDIO (``{"waveform": [B, C, T], "sample_rate": int}``) as ``B`` arrays ``[C, T]``."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError("'audio' must be an AUDIO from Load Audio: {'waveform': [batch, channels, samples], "
                         "'sample_rate': int}")
    wave = torch.as_tensor(audio["waveform"])
    if wave.ndim != 3 or wave.shape[0] < 1:
        raise ValueError(f"the AUDIO waveform must be [batch, channels, samples], not {tuple(wave.shape)}")
    return [w.float().cpu().numpy() for w in wave], int(audio["sample_rate"])


def _sound(embedding: AudioEmbedding) -> str:
    return f"the sound's embedding (in the space of {embedding.image_encoder!r})"


def _say(notes: list[str]) -> str:
    unique = list(dict.fromkeys(notes))
    for note in unique:
        print(f"[Atelier] {note}")
    return "\n".join(unique)


class AtelierLoadAudioEncoder(ModelFileLoader, AudioNode):
    DESCRIPTION = "Load an audio encoder trained by Atelier Train Audio Encoder (models/atelier/audio_encoders)."
    EXAMPLE = ("Choose an encoder trained by Atelier Train Audio Encoder (in models/atelier/audio_encoders) and wire "
               "it into Atelier Encode Audio or Atelier Audio Thumbnails.")
    OUTPUTS = (
        (ENCODER, "audio_encoder", "The encoder, for Encode Audio and Audio Thumbnails."),
    )
    KEY, DEFAULT, WIDGET = staticmethod(encoder_key), DEFAULT_ENCODER, "encoder"
    TOOLTIP = "An audio encoder .safetensors in models/atelier/audio_encoders."
    WHAT, HOW = "audio encoder", "train one with Atelier Train Audio Encoder"

    def load(self, encoder: str) -> tuple[Any]:
        return (load_audio_encoder(self.find(encoder), bridge.compute_device()),)


class AtelierLoadEmbeddingAdapter(ModelFileLoader, AudioNode):
    DESCRIPTION = ("Load an image-embedding adapter trained by Atelier Train Embedding Adapter "
                   "(models/atelier/embedding_adapters).")
    EXAMPLE = ("Choose an adapter trained by Atelier Train Embedding Adapter (in models/atelier/embedding_adapters) "
               "and wire it into Atelier Image to Conditioning, Atelier Virtual Data (SD 1.5), Atelier Audio to "
               "Conditioning or Atelier Image + Sound Conditioning.")
    OUTPUTS = (
        (ADAPTER, "adapter", "The adapter, for Image to Conditioning, Virtual Data, Audio to Conditioning and Image + "
                             "Sound Conditioning."),
    )
    KEY, DEFAULT, WIDGET = staticmethod(adapter_key), DEFAULT_ADAPTER, "adapter"
    TOOLTIP = "An adapter .safetensors in models/atelier/embedding_adapters."
    WHAT, HOW = "adapter", "train one with Atelier Train Embedding Adapter"

    def load(self, adapter: str) -> tuple[Any]:
        return (load_adapter(self.find(adapter)),)


class AtelierTrainAudioEncoder(AudioNode):
    DESCRIPTION = ("Train an audio encoder whose embeddings land where the image encoder puts the paired pictures, "
                   "from a folder of <stem>.wav/.flac/.mp3 beside <stem>.png/.jpg, or a folder of videos (frames are "
                   "scored by how well their sound matches them and the best kept). Held-out R@1 and R@10 (audio to "
                   "image) are measured every epoch. Reruns resume from output/atelier/audio_runs.")
    EXAMPLE = ("Put pairs such as rain.wav beside rain.png in ComfyUI/input/atelier/pairs, wire Load CLIP Vision "
               "(CLIP ViT-L/14) into clip_vision and set folder 'atelier/pairs': the report gives held-out R@1 and "
               "R@10 every epoch and the encoder is saved into models/atelier/audio_encoders.")
    FUNCTION = "train"
    OUTPUT_NODE = True
    OUTPUTS = (
        (ENCODER, "audio_encoder", "The trained encoder."),
        ("STRING", "path", "Its file in models/atelier/audio_encoders."),
        ("IMAGE", "retrieval_curve", "Held-out R@1 per epoch."),
        ("STRING", "report", "R@1/R@10 per epoch, notes and the frames kept."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        d, m = AlignConfig(), MelSpec()
        return {
            "required": {
                "folder": ("STRING", {"default": "", "tooltip": "Paired sounds and pictures, or videos (absolute, or "
                                      "relative to ComfyUI's input folder)."}),
                "name": ("STRING", {"default": DEFAULT_ENCODER.removesuffix(".safetensors"), "tooltip": "File name in "
                                    "models/atelier/audio_encoders; never overwrites (name_2, name_3...)."}),
                "epochs": int_input(d.epochs, 1, 10_000, "Passes over the training pairs."),
                "batch_size": int_input(d.batch_size, 2, 4096, "Pairs per step; InfoNCE contrasts each with the rest."),
                "learning_rate": float_input(d.lr, 1e-6, 1.0, "AdamW learning rate.", 1e-4),
                "loss": (list(LOSSES), {"default": d.loss, "tooltip": "infonce: contrastive, logits = -distance / "
                         "temperature; l2: plain regression onto the image embedding."}),
                "temperature": float_input(d.temperature, 0.001, 10.0, "InfoNCE temperature (on unit image "
                                           "embeddings).",
                                      0.005),
                "symmetric": ("BOOLEAN", {"default": d.symmetric, "tooltip": "Also image-to-audio InfoNCE."}),
                "learn_scale": ("BOOLEAN", {"default": d.learn_scale, "tooltip": "Train the temperature too."}),
                "val_fraction": float_input(d.val_fraction, 0.01, 0.9, "Share of pairs held out for R@1/R@10."),
                "seed": seed_input("Seeds the split, the initial weights and the batches."),
                "sample_rate": int_input(m.sample_rate, 8000, 48000, "Rate every sound is resampled to.", 1000),
                "window_seconds": float_input(m.window_seconds, 0.25, 30.0, "Seconds of sound per embedding (shorter "
                                         "clips are padded, longer ones averaged over windows).", 0.25),
                "n_mels": int_input(m.n_mels, 16, 256, "Mel bands of the features."),
                "frames_per_second": float_input(1.0, 0.05, 30.0, "Videos: candidate frames per second.", 0.05),
                "top_k": int_input(8, 1, 10_000, "Videos: frames kept per video (the best-matching)."),
                "threshold": float_input(0.0, -1.0, 1.0, "Videos: lowest audio-image cosine a kept frame may have."),
                "warmup_epochs": int_input(3, 1, 1000, "Videos without 'scorer': epochs on all frames before scoring."),
            },
            "optional": {
                **_image_encoder_inputs(),
                "scorer": (ENCODER, {"tooltip": "Videos: an encoder already trained for this image encoder, to "
                                     "score frames with (instead of a warm-up)."}),
            },
        }

    def train(self, folder: str, name: str, epochs: int, batch_size: int, learning_rate: float, loss: str,
              temperature: float, symmetric: bool, learn_scale: bool, val_fraction: float, seed: int,
              sample_rate: int, window_seconds: float, n_mels: int, frames_per_second: float, top_k: int,
              threshold: float, warmup_epochs: int, clip_vision: Any = None, clip_model: Any = None,
              scorer: AudioEmbedder | None = None) -> tuple[Any, ...]:
        from ..training.audio import job as audio_job

        mel = MelSpec(sample_rate=sample_rate, window_seconds=window_seconds, n_mels=n_mels)
        align = AlignConfig(loss=loss, symmetric=symmetric, learn_scale=learn_scale, temperature=temperature,
                            epochs=epochs, batch_size=batch_size, lr=learning_rate, val_fraction=val_fraction,
                            seed=seed, mel=mel)
        if not folder.strip():
            raise ValueError("set 'folder' to paired sounds and pictures, or to videos")
        job = audio_job.AudioJob(str(bridge.resolve_input_folder(folder)), name, align, frames_per_second, top_k,
                                 threshold, warmup_epochs)
        images = image_embedder(clip_vision, clip_model)
        if scorer is not None:
            scorer.check_image_dim(images.dim, images.name)
        with bridge.training_mode():
            result = audio_job.run(job, images, bridge.model_folders(encoder_key())[0],
                                   bridge.output_directory() / RUNS_SUBFOLDER, bridge.compute_device(),
                                   bridge.progress(audio_job.estimated_steps(job), "training audio encoder"),
                                   scorer)
        lines = audio_job.epoch_lines(result.align.history) + result.notes
        lines += [f"frames kept: {', '.join(result.selected)}"] if result.selected else []
        return (result.align.embedder, str(result.path), plots.to_image_tensor(result.plot), _say(lines))


class AtelierTrainEmbeddingAdapter(AudioNode):
    DESCRIPTION = ("Train the adapter that lets SD 1.5 draw an image embedding: pictures alone (optional <stem>.txt "
                   "captions), the frozen image encoder, and the frozen SD 1.5 from Load Checkpoint. The adapter "
                   "turns an embedding into extra prompt tokens, so anything in that embedding space, sound included, "
                   "can steer core samplers. Reruns resume from output/atelier/audio_runs.")
    EXAMPLE = ("Load Checkpoint (SD 1.5) into model, clip and vae, the image encoder your audio encoder was trained "
               "for (Load CLIP Vision) into clip_vision, and a folder of a few hundred pictures into folder; then "
               "load the adapter with Atelier Load Embedding Adapter.")
    FUNCTION = "train"
    OUTPUT_NODE = True
    OUTPUTS = (
        (ADAPTER, "adapter", "The trained adapter."),
        ("STRING", "path", "Its file in models/atelier/embedding_adapters."),
        ("IMAGE", "loss_curve", "Loss per step (light) and smoothed (dark)."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        d = AdapterTrainConfig()
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "SD 1.5 from Load Checkpoint; it stays frozen."}),
                **CHECKPOINT_CLIP_VAE,
                "folder": ("STRING", {"default": "", "tooltip": "Training pictures with optional <stem>.txt captions "
                                      "(absolute, or relative to ComfyUI's input folder)."}),
                "name": ("STRING", {"default": DEFAULT_ADAPTER.removesuffix(".safetensors"), "tooltip": "File name in "
                                    "models/atelier/embedding_adapters; never overwrites."}),
                "steps": int_input(d.steps, 1, 1_000_000, "Optimizer steps."),
                "tokens": int_input(d.tokens, 1, 77, "Extra tokens per embedding (IP-Adapter uses 4)."),
                "batch_size": int_input(d.batch_size, 1, 64, "Pictures per step."),
                "learning_rate": float_input(d.lr, 1e-7, 1.0, "AdamW learning rate.", 1e-5),
                "text_dropout": float_input(d.text_dropout, 0.0, 1.0, "Share of steps with the empty prompt, so the "
                                       "tokens learn to carry the picture alone."),
                "embed_dropout": float_input(d.embed_dropout, 0.0, 0.9, "Share of steps with no embedding."),
                "resolution": int_input(512, 64, 2048, "Training size (aspect-ratio buckets of about this area).", 64),
                "mixed_precision": (list(PRECISIONS), {"default": "fp16", "tooltip": "fp16 or bf16 autocast with the "
                                    "frozen UNet in that precision; 'no': fp32."}),
                "gradient_checkpointing": ("BOOLEAN", {"default": True, "tooltip": "Trade compute for memory."}),
                "use_captions": ("BOOLEAN", {"default": True, "tooltip": "Train with the <stem>.txt captions."}),
                "checkpoint_every": int_input(d.checkpoint_every, 1, 100_000, "Steps between resumable checkpoints."),
                "seed": seed_input("Seeds everything."),
            },
            "optional": _image_encoder_inputs(),
        }

    def train(self, model: Any, clip: Any, vae: Any, folder: str, name: str, steps: int, tokens: int,
              batch_size: int, learning_rate: float, text_dropout: float, embed_dropout: float, resolution: int,
              mixed_precision: str, gradient_checkpointing: bool, use_captions: bool, checkpoint_every: int,
              seed: int, clip_vision: Any = None, clip_model: Any = None) -> tuple[Any, ...]:
        from ..core.dataset.folder_dataset import load_folder
        from ..core.sd15 import checkpoint as sd15_checkpoint
        from ..training.sd15 import adapter_job

        config = AdapterTrainConfig(tokens=tokens, steps=steps, batch_size=batch_size, lr=learning_rate,
                                    text_dropout=text_dropout, embed_dropout=embed_dropout,
                                    mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing,
                                    seed=seed, checkpoint_every=checkpoint_every)
        if not folder.strip():
            raise ValueError("set 'folder' to the training pictures")
        try:
            path = bridge.resolve_input_folder(folder)
            digest = folder_fingerprint(list_images(path))
            dataset = load_folder(path)
        except ImageFolderError as exc:
            raise ValueError(str(exc)) from exc
        images = image_embedder(clip_vision, clip_model)
        with bridge.training_mode():
            weights = bridge.sd15_weights(model, clip, vae)
            parts = sd15_checkpoint.parts_from_state_dict(weights, source="the MODEL/CLIP/VAE")
            base_hash = state_dict_sha256(weights)
            del weights
            run = adapter_job.run_name(name, config, digest, base_hash, images.name, resolution)
            result = adapter_job.run(parts, dataset, images, config, name, bridge.model_folders(adapter_key())[0],
                                     bridge.output_directory() / RUNS_SUBFOLDER / run, resolution, use_captions,
                                     bridge.compute_device(),
                                     bridge.progress(2 * len(dataset.images) + steps, "training adapter"))
        _say(result.warnings)
        return load_adapter(result.path), str(result.path), plots.to_image_tensor(result.plot)


class AtelierEncodeAudio(AudioNode):
    DESCRIPTION = ("Embed sound (Load Audio's AUDIO) with a trained audio encoder: any channel layout is downmixed, "
                   "any sample rate resampled, a clip shorter than the encoder's window padded and a longer one "
                   "averaged over its windows. Silence is an error. Each clip's level (gated RMS, dBFS) sets the "
                   "strength its tokens draw with: x1 at 'reference_dbfs', doubled every 10 dB louder, halved every "
                   "10 dB quieter (x1/16..x4). Also given as a CLIP_VISION_OUTPUT (image_embeds only) for image-"
                   "embedding nodes elsewhere.")
    EXAMPLE = ("Wire Load Audio (a .wav or .mp3) and Atelier Load Audio Encoder: audio_embedding goes into Atelier "
               "Audio to Conditioning, and notes says whether the sound was downmixed, resampled or padded, its level "
               "and the strength it draws with (a sound at -26 dBFS: x0.66 at the reference -20).")
    FUNCTION = "encode"
    OUTPUTS = (
        (EMBEDDING, "audio_embedding", "One embedding per clip of the batch, with its loudness strength."),
        ("CLIP_VISION_OUTPUT", "clip_vision_output", "The same, scaled as the image encoder's image_embeds."),
        ("STRING", "notes", "What was done to the sound (downmixed, resampled, padded), its level and strength."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "audio_encoder": (ENCODER, {"tooltip": "From Load or Train Audio Encoder."}),
                "audio": ("AUDIO", {"tooltip": "Sound from Load Audio (or Mix Sounds)."}),
            },
            "optional": {  # optional, so prompts saved before they existed still run (at their defaults)
                "loudness": ("BOOLEAN", {"default": True, "tooltip": "Let each clip's level set the strength of its "
                             "tokens (louder: stronger). Off: every clip draws at strength 1."}),
                "reference_dbfs": float_input(DEFAULT_REFERENCE_DB, -80.0, 0.0, "The level (gated RMS, dBFS) drawn "
                                              "at strength 1; each 10 dB above doubles the strength.", 0.5),
            },
        }

    def encode(self, audio_encoder: AudioEmbedder, audio: Any, loudness: bool = True,
               reference_dbfs: float = DEFAULT_REFERENCE_DB) -> tuple[Any, ...]:
        clips, rate = _waveforms(audio)
        embeds, strengths, notes = [], [], []
        for i, clip in enumerate(clips):
            what = f"clip {i + 1} of the AUDIO"
            embedding, said = audio_encoder.embed_clip(clip, rate, what)
            embeds.append(embedding)
            notes += said
            if loudness:
                measured = loudness_strength(clip, rate, reference_dbfs, what)
                strengths.append(measured.strength)
                notes.append(measured.note(what))
        if not loudness:
            notes.append("loudness off: every clip draws at strength 1")
        out = AudioEmbedding(torch.stack(embeds), audio_encoder.image_encoder, audio_encoder.image_embed_norm,
                             torch.tensor(strengths) if loudness else None)
        return out, bridge.clip_vision_output(out.raw_image_embeds()), _say(notes)


class AtelierAudioConditioning(AudioNode):
    DESCRIPTION = ("Append the adapter's tokens for an audio embedding to a CONDITIONING (a prompt's, even an empty "
                   "one), so core KSampler draws the sound. One embedding steers every image; a batch of embeddings "
                   "gives one conditioning per embedding (use a latent batch of the same size).")
    EXAMPLE = ("Wire CLIP Text Encode (an SD 1.5 prompt, even an empty one), Atelier Load Embedding Adapter and "
               "Atelier Encode Audio's audio_embedding, strength 1, into KSampler's positive: the picture follows the "
               "sound, and a louder or mixed sound (Atelier Mix Sounds) changes it: Encode Audio's loudness strength "
               "multiplies this strength.")
    FUNCTION = "apply"
    OUTPUTS = (
        ("CONDITIONING", "conditioning", "The conditioning with the sound's tokens appended, for KSampler's positive."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning": ("CONDITIONING", {"tooltip": "From CLIP Text Encode (SD 1.5)."}),
            "adapter": (ADAPTER, {"tooltip": "From Load or Train Embedding Adapter."}),
            "audio_embedding": (EMBEDDING, {"tooltip": "From Encode Audio or Audio Thumbnails."}),
            "strength": float_input(1.0, 0.0, 5.0, "Scale of the appended tokens, times each sound's loudness "
                                    "strength from Encode Audio; 0 appends nothing."),
        }}

    def apply(self, conditioning: list, adapter: LoadedAdapter, audio_embedding: AudioEmbedding,
              strength: float) -> tuple[list]:
        scale = strength * audio_embedding.row_strengths() if strength else 0.0
        return (adapter.condition(conditioning, audio_embedding.embeds, scale, _sound(audio_embedding)),)


class AtelierImageSoundConditioning(AudioNode):
    DESCRIPTION = ("An image-plus-sound edit: the source picture's embedding and the sound's, blended by 'sound_"
                   "weight' times the sound's loudness strength from Encode Audio (at most 1: a louder sound pulls "
                   "the edit further), become the adapter's tokens on the CONDITIONING. Sample from the source "
                   "picture's latent (VAE Encode) with denoise below 1 for img2img.")
    EXAMPLE = ("Wire a picture from Load Image, Atelier Encode Audio's embedding, the adapter and the image encoder "
               "it was trained with; VAE Encode the same picture as KSampler's latent, denoise 0.6, sound_weight 0.5: "
               "the picture edited towards the sound.")
    FUNCTION = "apply"
    OUTPUTS = (
        ("CONDITIONING", "conditioning", "The conditioning with the picture-and-sound tokens appended, for "
                                         "KSampler's positive."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning": ("CONDITIONING", {"tooltip": "From CLIP Text Encode (SD 1.5)."}),
                "adapter": (ADAPTER, {"tooltip": "From Load or Train Embedding Adapter."}),
                "image": ("IMAGE", {"tooltip": "The source picture (one, or one per sound)."}),
                "audio_embedding": (EMBEDDING, {"tooltip": "From Encode Audio."}),
                "sound_weight": float_input(0.5, 0.0, 1.0, "0: the picture's embedding alone; 1: the sound's alone. "
                                            "Multiplied by the sound's loudness strength (at most 1)."),
                "strength": float_input(1.0, 0.0, 5.0, "Scale of the appended tokens; 0 appends nothing."),
            },
            "optional": _image_encoder_inputs(),
        }

    def apply(self, conditioning: list, adapter: LoadedAdapter, image: torch.Tensor,
              audio_embedding: AudioEmbedding, sound_weight: float, strength: float, clip_vision: Any = None,
              clip_model: Any = None) -> tuple[list]:
        check_image_batch(image)
        picture = adapter.embed_images(image_embedder(clip_vision, clip_model), image)
        weights = audio_embedding.blend_weights(sound_weight)
        return (adapter.condition(conditioning, blend(picture, audio_embedding.embeds, weights), strength,
                                  _sound(audio_embedding)),)


_MIX_SLOTS = 4


class AtelierMixSounds(AudioNode):
    DESCRIPTION = ("Mix up to four sounds with a gain each (the first clip of each AUDIO), so their relative "
                   "loudness shows in the picture: a dog barking over a quiet stream, or the other way round. The mix "
                   "is mono at the highest sample rate among them and as long as the longest; nothing is "
                   "normalised.")
    EXAMPLE = ("Wire a dog barking (Load Audio) into audio_1 with gain_1 1.0 and a stream into audio_2 with gain_2 "
               "0.3, then into Atelier Encode Audio: the bark leads the picture; swap the gains and the stream leads.")
    FUNCTION = "mix"
    OUTPUTS = (
        ("AUDIO", "audio", "The mix: mono, at the highest sample rate, as long as the longest sound."),
        ("STRING", "notes", "What was done to the sounds, and warnings such as a mix above full scale."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        gains = {f"gain_{i}": float_input(1.0, 0.0, 10.0, f"Linear gain of sound {i} (0.5 is -6 dB, 2 is +6 dB).")
                 for i in range(1, _MIX_SLOTS + 1)}
        sounds = {f"audio_{i}": ("AUDIO", {"tooltip": f"Sound {i}."}) for i in range(2, _MIX_SLOTS + 1)}
        return {"required": {"audio_1": ("AUDIO", {"tooltip": "Sound 1."}), **gains}, "optional": sounds}

    def mix(self, audio_1: Any, gain_1: float, gain_2: float, gain_3: float, gain_4: float, **others: Any
            ) -> tuple[Any, str]:
        gains = [gain_1, gain_2, gain_3, gain_4]
        sources = []
        for i, audio in enumerate([audio_1, *(others.get(f"audio_{i}") for i in range(2, _MIX_SLOTS + 1))]):
            if audio is not None:
                clips, rate = _waveforms(audio)
                sources.append((clips[0], rate, gains[i]))
        wave, rate, notes = mix(sources)
        return {"waveform": torch.from_numpy(wave)[None], "sample_rate": rate}, _say(notes)


class AtelierSoundPosition(AudioNode):
    DESCRIPTION = ("Where a sound comes from: the left-right balance of each clip (the first two channels as left and "
                   "right; mono is centred) from the channels' level difference and, when clear, their time "
                   "difference, as a pan from -1 (hard left) to 1 (hard right); a soft MASK over that side of the "
                   "picture for core's ConditioningSetMask, and position words appended to a prompt.")
    EXAMPLE = ("Wire a stereo recording from Load Audio: with a bird on the left (left channel 7.7 dB louder) the "
               "pan is -0.50, the mask covers the left 0.5 of the width and fades over 0.2 more, and the prompt "
               "'a bird' becomes 'a bird, on the left'. Wire mask into ConditioningSetMask with Audio to "
               "Conditioning's output, and prompt into CLIP Text Encode's text.")
    FUNCTION = "place"
    OUTPUTS = (
        ("MASK", "mask", "Where the sound sits: 1 over its band, fading to 0; one per clip."),
        ("FLOAT", "pan", "The first clip's pan: -1 hard left, 0 centre, 1 hard right."),
        ("STRING", "prompt", "The prompt with the first clip's position words ('on the left', ...) appended."),
        ("STRING", "notes", "Each clip's pan, level and time differences."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "Sound from Load Audio (stereo or more channels keep their position)."}),
            "width": int_input(512, 8, 16384, "Mask width: the picture's width in pixels.", 8),
            "height": int_input(512, 8, 16384, "Mask height: the picture's height in pixels.", 8),
            "source_width": float_input(0.5, 0.05, 1.0, "Share of the picture's width the sound's band covers at "
                                        "full strength; hard left puts it against the left edge."),
            "softness": float_input(0.2, 0.0, 1.0, "Share of the width over which the band fades to 0 on each side."),
            "prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "Text the position words are "
                       "appended to (may be empty)."}),
        }}

    def place(self, audio: Any, width: int, height: int, source_width: float, softness: float,
              prompt: str) -> tuple[Any, ...]:
        clips, rate = _waveforms(audio)
        found = [measure_position(clip, rate, f"clip {i + 1} of the AUDIO") for i, clip in enumerate(clips)]
        masks = torch.stack([position_mask(p.pan, width, height, source_width, softness) for p in found])
        words = found[0].words()
        text = f"{prompt.strip().rstrip(',')}, {words}" if prompt.strip() else words
        return masks, found[0].pan, text, _say([p.note(f"clip {i + 1}") for i, p in enumerate(found)])


class AtelierAudioThumbnails(AudioNode):
    DESCRIPTION = ("Thumbnails for a long sound: cut into segments that overlap, embedded, grouped by K-means; one "
                   "representative embedding per cluster (largest cluster first) and the largest cluster's as the "
                   "thumbnail, each drawing with its segment's loudness strength (reference -20 dBFS). Wire them into "
                   "Audio Conditioning and a sampler to draw them.")
    EXAMPLE = ("Wire a long recording from Load Audio and Atelier Load Audio Encoder, segment_seconds 10, "
               "overlap_seconds 5, clusters 4: wire thumbnail into Atelier Audio to Conditioning for one picture of "
               "the recording, or representatives for four (with a latent batch of 4).")
    FUNCTION = "cluster"
    OUTPUTS = (
        (EMBEDDING, "representatives", "One embedding per cluster, largest cluster first (a batch of K)."),
        (EMBEDDING, "thumbnail", "The largest cluster's representative."),
        ("STRING", "report", "Cluster sizes and where each representative starts."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "audio_encoder": (ENCODER, {"tooltip": "From Load or Train Audio Encoder."}),
            "audio": ("AUDIO", {"tooltip": "A long sound (its first clip)."}),
            "segment_seconds": float_input(10.0, 0.5, 600.0, "Length of each segment.", 0.5),
            "overlap_seconds": float_input(5.0, 0.0, 599.0, "Overlap between neighbouring segments.", 0.5),
            "clusters": int_input(4, 1, 64, "K: how many kinds of sound to find."),
            "seed": seed_input("Seeds K-means."),
        }}

    def cluster(self, audio_encoder: AudioEmbedder, audio: Any, segment_seconds: float, overlap_seconds: float,
                clusters: int, seed: int) -> tuple[Any, ...]:
        clips, rate = _waveforms(audio)
        total = len(audio_thumbnails.segment_starts(clips[0].shape[-1], rate, segment_seconds, overlap_seconds))
        found = audio_thumbnails.thumbnails(audio_encoder, clips[0], rate, segment_seconds, overlap_seconds,
                                            clusters, seed, bridge.progress(total, "embedding segments"))

        strengths = torch.tensor([strength_for(level) for level in found.levels_db])

        def wrap(rows: slice) -> AudioEmbedding:
            return AudioEmbedding(found.representatives[rows], audio_encoder.image_encoder,
                                  audio_encoder.image_embed_norm, strengths[rows])

        return wrap(slice(None)), wrap(slice(0, 1)), _say([found.report()])


NODE_CLASS_MAPPINGS = {
    "AtelierLoadAudioEncoder": AtelierLoadAudioEncoder,
    "AtelierTrainAudioEncoder": AtelierTrainAudioEncoder,
    "AtelierLoadEmbeddingAdapter": AtelierLoadEmbeddingAdapter,
    "AtelierTrainEmbeddingAdapter": AtelierTrainEmbeddingAdapter,
    "AtelierEncodeAudio": AtelierEncodeAudio,
    "AtelierAudioConditioning": AtelierAudioConditioning,
    "AtelierImageSoundConditioning": AtelierImageSoundConditioning,
    "AtelierMixSounds": AtelierMixSounds,
    "AtelierSoundPosition": AtelierSoundPosition,
    "AtelierAudioThumbnails": AtelierAudioThumbnails,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AtelierLoadAudioEncoder": "Atelier Load Audio Encoder",
    "AtelierTrainAudioEncoder": "Atelier Train Audio Encoder",
    "AtelierLoadEmbeddingAdapter": "Atelier Load Embedding Adapter",
    "AtelierTrainEmbeddingAdapter": "Atelier Train Embedding Adapter (SD 1.5)",
    "AtelierEncodeAudio": "Atelier Encode Audio",
    "AtelierAudioConditioning": "Atelier Audio to Conditioning",
    "AtelierImageSoundConditioning": "Atelier Image + Sound Conditioning",
    "AtelierMixSounds": "Atelier Mix Sounds",
    "AtelierSoundPosition": "Atelier Sound Position",
    "AtelierAudioThumbnails": "Atelier Audio Thumbnails",
}
