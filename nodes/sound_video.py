"""Video from sound: a sound drawn frame by frame (one conditioning per frame, smoothed over time), and a video
edited by its sound; both give IMAGE frames, the sound and the frame rate for core CreateVideo and SaveVideo.
The arithmetic is core/audio/sound_video.py; the sampler and VAE are ComfyUI's own, through the bridge."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..core.audio import sound_video as sv
from ..core.audio.encoder import AudioEmbedder
from ..core.audio.loudness import DEFAULT_REFERENCE_DB
from ..core.curator.pixels import check_image_batch
from ..core.sd15.embedding_adapter import LoadedAdapter
from . import bridge
from .audio import ADAPTER, ENCODER, AudioNode, _image_encoder_inputs, _say, _waveforms, image_embedder
from .declare import float_input, int_input, seed_input

OUTPUTS = (
    ("IMAGE", "frames", "The frames, one per 1/fps seconds of the sound, for CreateVideo's images."),
    ("AUDIO", "audio", "The sound, cut to the frames' length, for CreateVideo's audio."),
    ("FLOAT", "fps", "The frame rate, for CreateVideo's fps."),
    ("STRING", "report", "Frames, seconds, the token strength per frame and the flicker measured."),
)


def _sound_inputs() -> dict[str, Any]:
    return {
        "audio": ("AUDIO", {"tooltip": "The sound (its first clip), from Load Audio or a video's audio."}),
        "audio_encoder": (ENCODER, {"tooltip": "From Load or Train Audio Encoder."}),
        "adapter": (ADAPTER, {"tooltip": "From Load or Train Embedding Adapter."}),
        "model": ("MODEL", {"tooltip": "SD 1.5 from Load Checkpoint."}),
        "positive": ("CONDITIONING", {"tooltip": "CLIP Text Encode of the prompt (even an empty one); each frame's "
                                      "sound tokens are appended to it."}),
        "negative": ("CONDITIONING", {"tooltip": "CLIP Text Encode of the negative prompt; the adapter's 'no "
                                      "picture' tokens are appended to it."}),
        "vae": ("VAE", {"tooltip": "The checkpoint's VAE."}),
    }


def _sampling_inputs() -> dict[str, Any]:
    samplers, schedulers = bridge.sampler_choices()
    return {
        "fps": float_input(10.0, 1.0, 60.0, "Frames per second of the video (8-12 is usual; each frame shows the "
                           "sound around its time).", 0.5),
        "max_seconds": float_input(10.0, 0.0, 3600.0, "The longest video drawn, in seconds of sound from its "
                                   "start; 0: the whole sound.", 0.5),
        "seed": seed_input("The noise seed, the same for every frame, so consecutive frames stay alike."),
        "steps": int_input(20, 1, 150, "KSampler steps per frame."),
        "cfg": float_input(7.0, 0.0, 30.0, "Classifier-free guidance scale.", 0.1),
        "sampler_name": (samplers, {"default": "euler", "tooltip": "KSampler's sampler."}),
        "scheduler": (schedulers, {"default": "normal", "tooltip": "KSampler's scheduler."}),
        "strength": float_input(1.0, 0.0, 5.0, "Scale of the sound's tokens (at reference_dbfs when "
                                "follow_loudness is on)."),
        "smoothing_seconds": float_input(0.5, 0.0, 10.0, "Standard deviation of the centred Gaussian that smooths "
                                         "the sound's embeddings over time, so frames do not flicker; 0: none.",
                                         0.05),
        "follow_loudness": ("BOOLEAN", {"default": True, "tooltip": "Each frame's token strength follows the "
                            "sound's loudness there, as Encode Audio's does for a still picture: doubled every 10 "
                            "dB of its stretch of sound over reference_dbfs, within x1/16..x4."}),
        "reference_dbfs": float_input(DEFAULT_REFERENCE_DB, -80.0, 0.0, "The RMS level (dBFS) drawn at 'strength' "
                                      "when follow_loudness is on.", 1.0),
    }


def _trimmed(audio: dict, plan: sv.FramePlan) -> dict:
    """The AUDIO's first clip, cut to the frames' length (its own rate and channels)."""
    wave = torch.as_tensor(audio["waveform"])[:1]
    rate = int(audio["sample_rate"])
    return {"waveform": wave[..., :plan.samples(rate)].contiguous(), "sample_rate": rate}


def _draw(model: Any, vae: Any, adapter: LoadedAdapter, negative: list, frames: sv.SoundFrames, seed: int,
          steps: int, cfg: float, sampler_name: str, scheduler: str, strength: float, empty: torch.Tensor | None,
          chain_denoise: float = 1.0, starts: Callable[[int], torch.Tensor] | None = None,
          edit_denoise: float = 1.0) -> torch.Tensor:
    """Every frame through ComfyUI's KSampler and VAE Decode, with one seed (``empty``: the latent a frame drawn
    from noise starts from); progress and cancel per frame."""
    negative = adapter.condition(negative, adapter.no_picture(), strength)

    def sample(positive: list, start: torch.Tensor | None, denoise: float) -> torch.Tensor:
        start = empty if start is None else start
        return bridge.ksample(model, start, positive, negative, seed, steps, cfg, sampler_name, scheduler, denoise)

    return sv.render_frames(frames.conditionings, sample, lambda latent: bridge.vae_decode(vae, latent),
                            bridge.progress(frames.plan.count, "drawing frames"), chain_denoise, starts, edit_denoise)


def _report(frames: sv.SoundFrames, smoothing_seconds: float) -> str:
    s = frames.strengths
    return _say([*frames.notes, f"{frames.plan.count} frames at {frames.plan.fps:g} fps ({frames.plan.seconds:.2f} s "
                 f"of sound); token strength per frame {float(s.min()):.2f}..{float(s.max()):.2f}; flicker (mean "
                 f"change of the conditioning between frames) {sv.flicker(frames.conditionings):.3f} with "
                 f"{smoothing_seconds:g} s smoothing"])


class AtelierSoundToVideoFrames(AudioNode):
    DESCRIPTION = ("Video from sound: the sound cut at the frame rate (frame i shows the sound around i/fps s), each "
                   "frame's window embedded, the embeddings smoothed over time by a centred Gaussian so frames do not "
                   "flicker, and one conditioning per frame drawn by KSampler with one fixed seed, optionally each "
                   "frame from the previous one's latent (chain_denoise below 1). Louder passages steer harder. "
                   "Gives the frames, the sound cut to their length and the frame rate for CreateVideo and "
                   "SaveVideo. Progress per frame; cancel between frames.")
    EXAMPLE = ("Wire Load Audio, Atelier Load Audio Encoder and Load Embedding Adapter, Load Checkpoint (SD 1.5) and "
               "two CLIP Text Encode; 512 x 512, fps 10, max_seconds 10, chain_denoise 0.6: 100 frames, then frames, "
               "audio and fps into CreateVideo and SaveVideo for an mp4 with the sound.")
    FUNCTION = "draw"
    OUTPUTS = OUTPUTS

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            **_sound_inputs(),
            "width": int_input(512, 64, 2048, "Frame width.", 8),
            "height": int_input(512, 64, 2048, "Frame height.", 8),
            **_sampling_inputs(),
            "chain_denoise": float_input(0.6, 0.05, 1.0, "Each frame after the first starts from the previous "
                                         "frame's latent, re-noised this much (lower: steadier video); 1: every "
                                         "frame from fresh noise."),
        }}

    def draw(self, audio: Any, audio_encoder: AudioEmbedder, adapter: LoadedAdapter, model: Any, positive: list,
             negative: list, vae: Any, width: int, height: int, fps: float, max_seconds: float, seed: int,
             steps: int, cfg: float, sampler_name: str, scheduler: str, strength: float, smoothing_seconds: float,
             follow_loudness: bool, reference_dbfs: float, chain_denoise: float) -> tuple[Any, ...]:
        clips, rate = _waveforms(audio)
        frames = sv.sound_conditionings(audio_encoder, adapter, positive, clips[0], rate, fps, max_seconds,
                                        smoothing_seconds, strength, follow_loudness, "the AUDIO",
                                        reference_db=reference_dbfs)
        empty = torch.zeros([1, 4, height // 8, width // 8])
        images = _draw(model, vae, adapter, negative, frames, seed, steps, cfg, sampler_name, scheduler, strength,
                       empty, chain_denoise)
        return images, _trimmed(audio, frames.plan), frames.plan.fps, _report(frames, smoothing_seconds)


class AtelierVideoSoundEdit(AudioNode):
    DESCRIPTION = ("Video + sound edit: each frame of a video (core LoadVideo then GetVideoComponents, or a folder of "
                   "frames) is redrawn from its own latent (VAE Encode) at a denoise below 1, steered by its own "
                   "image embedding blended with the sound's embedding at that frame's time (as Image + Sound "
                   "Conditioning does for one picture), one seed for all frames. Gives the edited frames, the sound "
                   "cut to their length and the frame rate for CreateVideo and SaveVideo.")
    EXAMPLE = ("LoadVideo, GetVideoComponents: images into images, audio into audio (or another sound), fps into "
               "video_fps; fps 10 takes every third frame of a 30 fps video; sound_weight 0.5, denoise 0.5, and the "
               "image encoder the adapter was trained with; then CreateVideo and SaveVideo.")
    FUNCTION = "edit"
    OUTPUTS = (("IMAGE", "frames", "The edited frames, for CreateVideo's images."), *OUTPUTS[1:])

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The video's frames (GetVideoComponents' images, or Load Image "
                                     "Folder's), at video_fps."}),
                **_sound_inputs(),
                **_sampling_inputs(),
                "sound_weight": float_input(0.5, 0.0, 1.0, "0: each frame's own embedding alone; 1: the sound's "
                                            "alone."),
                "denoise": float_input(0.6, 0.05, 1.0, "How much of each frame is redrawn (lower keeps more of "
                                       "the video)."),
            },
            "optional": {
                **_image_encoder_inputs(),
                "video_fps": ("FLOAT", {"forceInput": True, "tooltip": "The frame rate of 'images' "
                              "(GetVideoComponents' fps); frames are taken at 'fps' from it. Unwired: the "
                              "images are taken as 'fps' frames per second."}),
            },
        }

    def edit(self, images: torch.Tensor, audio: Any, audio_encoder: AudioEmbedder, adapter: LoadedAdapter,
             model: Any, positive: list, negative: list, vae: Any, fps: float, max_seconds: float, seed: int,
             steps: int, cfg: float, sampler_name: str, scheduler: str, strength: float, smoothing_seconds: float,
             follow_loudness: bool, reference_dbfs: float, sound_weight: float, denoise: float,
             clip_vision: Any = None,
             clip_model: Any = None, video_fps: float | None = None) -> tuple[Any, ...]:
        check_image_batch(images)
        source_fps = float(video_fps) if video_fps else float(fps)
        clips, rate = _waveforms(audio)
        plan = sv.plan_frames(clips[0].shape[-1], rate, fps, max_seconds, "the AUDIO")  # errors before any model
        frames = images[sv.pick_frames(len(images), source_fps, fps)[:plan.count]]
        embedder = image_embedder(clip_vision, clip_model)
        pictures = adapter.embed_images(embedder, frames)
        edited = sv.sound_conditionings(audio_encoder, adapter, positive, clips[0], rate, fps, max_seconds,
                                        smoothing_seconds, strength, follow_loudness, "the AUDIO", pictures,
                                        sound_weight, reference_dbfs)
        out = _draw(model, vae, adapter, negative, edited, seed, steps, cfg, sampler_name, scheduler, strength, None,
                    starts=lambda i: bridge.vae_encode(vae, frames[i:i + 1]), edit_denoise=denoise)
        return out, _trimmed(audio, edited.plan), edited.plan.fps, _report(edited, smoothing_seconds)


NODE_CLASS_MAPPINGS = {
    "AtelierSoundToVideoFrames": AtelierSoundToVideoFrames,
    "AtelierVideoSoundEdit": AtelierVideoSoundEdit,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AtelierSoundToVideoFrames": "Atelier Sound to Video Frames",
    "AtelierVideoSoundEdit": "Atelier Video + Sound Edit",
}
