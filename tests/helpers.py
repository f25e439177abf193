"""Test helpers: real photographs from the shipped samples, IMAGE batches, 8-bit views."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "originals"


def photo(name: str = "chelsea.jpg", size: tuple[int, int] | None = None) -> np.ndarray:
    """A real photograph from the shipped samples as ``[H, W, 3]`` uint8 (alpha dropped)."""
    with Image.open(SAMPLES / name) as img:
        img = img.convert("RGB")
        if size is not None:
            img = img.resize(size, Image.BICUBIC)
        return np.asarray(img).copy()


def as_batch(*arrays: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` arrays to a float IMAGE batch."""
    return torch.from_numpy(np.stack(arrays)).float() / 255.0


def to_u8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()


def node_defaults(cls: type, **overrides: object) -> dict[str, object]:
    """Every widget input at its declared default, as a fresh node in the UI has them."""
    values = {}
    for name, spec in cls.INPUT_TYPES()["required"].items():
        kind, options = spec[0], spec[1] if len(spec) > 1 else {}
        if isinstance(kind, list):
            values[name] = options.get("default", kind[0])
        elif kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
            values[name] = options["default"]
    values.update(overrides)
    return values


def tiny_sd15_folder(root: Path) -> Path:
    """A diffusers SD 1.5 folder with SD 1.5's signature (768-d text, 4 latent channels) but tiny layers
    and random weights, and a byte-level BPE tokenizer made from scratch."""
    import json

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    chars = sorted(ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (root / "tokenizer").mkdir(parents=True)
    vocab_file, merges_file = root / "tokenizer" / "vocab.json", root / "tokenizer" / "merges.txt"
    vocab_file.write_text(json.dumps(vocab))
    merges_file.write_text("#version: 0.2\n")
    try:  # transformers 5 builds from the vocabulary itself, 4 from the files
        tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    except TypeError:
        tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)
    tokenizer.save_pretrained(root / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=768, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=77, eos_token_id=len(vocab) - 1,
                                 bos_token_id=len(vocab) - 2)).save_pretrained(root / "text_encoder")
    UNet2DConditionModel(sample_size=8, layers_per_block=1, block_out_channels=(8, 16),
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=768,
                         attention_head_dim=4, norm_num_groups=4).save_pretrained(root / "unet")
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                  sample_size=32).save_pretrained(root / "vae")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(root / "scheduler")
    return root


def tiny_sd15_parts():
    """SD 1.5-shaped diffusers parts small enough for the CPU, with SD 1.5's fixed hyper-parameters
    (8 attention heads, 32 norm groups, 64-d CLIP heads) so they survive a round trip through the
    original checkpoint layout."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from atelier.core.sd15.pipeline import SD15Parts
    from atelier.core.sd15.tokenizer import sd15_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, layers_per_block=1, block_out_channels=(32, 64),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=768,
                                attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1,
                        sample_size=32)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                        bos_token_id=49406, eos_token_id=49407))
    return SD15Parts(unet=unet, vae=vae, text_encoder=text, tokenizer=sd15_tokenizer())


_RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                  "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


def _unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    """The diffusers UNet's weights under the original (CompVis) names, written from the two layouts."""
    per_level = unet.config.layers_per_block
    keys = unet.state_dict()
    fixed = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
             "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}

    def block(kind: str, rest: str) -> str:
        if kind == "attentions":
            return "1." + rest
        name, _, tail = rest.partition(".")
        return f"0.{_RESNET_TO_LDM[name]}.{tail}"

    out = {}
    for key, value in keys.items():
        new = next((repl + key[len(src):] for src, repl in fixed.items() if key.startswith(src)), key)
        if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            new = f"input_blocks.{1 + int(m[1]) * (per_level + 1) + int(m[3])}.{block(m[2], m[4])}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"input_blocks.{(int(m[1]) + 1) * (per_level + 1)}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
            new = f"middle_block.{1 if m[1] == 'attentions' else 2 * int(m[2])}.{block(m[1], m[3])[2:]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            new = f"output_blocks.{int(m[1]) * (per_level + 1) + int(m[3])}.{block(m[2], m[4])}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            has_attention = any(k.startswith(f"up_blocks.{m[1]}.attentions.") for k in keys)
            new = f"output_blocks.{int(m[1]) * (per_level + 1) + per_level}.{2 if has_attention else 1}.conv.{m[2]}"
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in vae.state_dict().items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.",
                     lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                     lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample.", new)
        new = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", new)
        if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)$", key):
            new = f"{m[1]}.mid.attn_1.{attn[m[2]]}.{m[3]}"
            if m[3] == "weight" and m[2] != "group_norm":
                value = value[:, :, None, None]  # the original VAE attention uses 1x1 convolutions
        out["first_stage_model." + new] = value
    return out


def to_ldm_checkpoint(parts) -> dict[str, torch.Tensor]:
    """A single-file SD 1.5 checkpoint (original layout) of diffusers parts, written independently of
    the loader's converter so a round trip tests it."""
    text = {k if k.startswith("text_model.") else "text_model." + k: v
            for k, v in parts.text_encoder.state_dict().items() if not k.endswith("position_ids")}
    return {**_unet_to_ldm(parts.unet), **_vae_to_ldm(parts.vae),
            **{"cond_stage_model.transformer." + k: v.clone() for k, v in text.items()}}


def tiny_adain_state_dicts(base: int = 4, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random AdaIN weights in the public files' layout: the whole normalised VGG-19 (to relu5_4, indices 0..51,
    as vgg_normalised.pth holds it) and the decoder (indices 1..28, as decoder.pth), ``base`` channels wide.

    The first 1x1 convolution is VGG's own normalisation (RGB 0..1 to mean-free BGR 0..255) and the rest is
    He-initialised, so features have the scale trained VGG features have.
    """
    from atelier.core.style.adain_model import build_decoder, build_encoder

    torch.manual_seed(seed)
    encoder, decoder = build_encoder(base), build_decoder(base)
    with torch.no_grad():
        encoder[0].weight.copy_(torch.eye(3).flip(0)[:, :, None, None] * 255)
        encoder[0].bias.copy_(-torch.tensor([103.939, 116.779, 123.68]))
    for net in (encoder, decoder):
        for layer in net:
            if isinstance(layer, torch.nn.Conv2d) and layer.kernel_size == (3, 3):
                torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                torch.nn.init.uniform_(layer.bias, -0.05, 0.05)
    vgg = dict(encoder.state_dict())
    deep = base * 8
    for index in (31, 34, 37, 41, 44, 47, 50):  # the public file's layers past relu4_1 (conv indices + 1)
        vgg[f"{index + 1}.weight"] = torch.randn(deep, deep, 3, 3) * 0.01
        vgg[f"{index + 1}.bias"] = torch.zeros(deep)
    return vgg, dict(decoder.state_dict())


def tiny_adain_files(folder: Path, base: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """``vgg_normalised.pth`` and ``decoder.pth`` as the public release saves them (plain torch.save)."""
    vgg, decoder = tiny_adain_state_dicts(base, seed)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(vgg, folder / "vgg_normalised.pth")
    torch.save(decoder, folder / "decoder.pth")
    return folder / "vgg_normalised.pth", folder / "decoder.pth"


class CancelAfter:
    """A progress whose cancel button is pressed once ``steps`` steps are done."""

    def __init__(self, steps: int) -> None:
        self.steps, self.done = steps, 0

    def advance(self, steps: int = 1) -> None:
        self.done += steps

    def check_cancel(self) -> None:
        from atelier.core.shared.progress import Cancelled

        if self.done == self.steps:
            raise Cancelled("user pressed cancel")

    def status(self, text: str) -> None:
        return None

    def preview(self, image: object) -> None:
        return None


def tiny_clip_folder(root: Path, tokenizer_files: bool = True, projection_dim: int = 16) -> Path:
    """A transformers CLIP folder with OpenAI CLIP's vocabulary but tiny random towers, a 32 px processor
    config and (optionally) the tokenizer files."""
    from transformers import CLIPConfig, CLIPModel

    from atelier.core.sd15.tokenizer import sd15_tokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 49406,
                     "eos_token_id": 49407},
        vision_config=TINY_VISION, projection_dim=projection_dim)
    CLIPModel(config).save_pretrained(root)
    _write_processor(root)
    if tokenizer_files:
        sd15_tokenizer().save_pretrained(root)
    return root


TINY_WORDS = ("a photo of the cat dog house sea village window old in at looks out painting red blue green "
              "바닷가 마을의 오래된 집에서 고양이가 창밖을 바라본다 사진 그림 개 바다 빨간 파란 초록").split()


def tiny_wordpiece_tokenizer(root: Path):
    """A cased BERT word-piece tokenizer over English and Korean words and every Hangul syllable among them
    (as mBERT cuts unknown Korean words), saved in ``root``."""
    from transformers import BertTokenizer

    syllables = sorted({ch for word in TINY_WORDS for ch in word if "\uac00" <= ch <= "\ud7a3"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS, *syllables, *(f"##{s}" for s in syllables),
             *"abcdefghijklmnopqrstuvwxyz.,", *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(root / "vocab.txt"), do_lower_case=False, model_max_length=32)
    tokenizer.save_pretrained(root)
    return tokenizer


def _write_processor(root: Path, size: int = 32) -> None:
    import json

    (root / "preprocessor_config.json").write_text(json.dumps({
        "size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}, "do_center_crop": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))


TINY_VISION = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2,
               "image_size": 32, "patch_size": 8}


def tiny_dual_encoder_folder(root: Path, projection_dim: int = 16, text_width: int = 24, seed: int = 0) -> Path:
    """A transformers VisionTextDualEncoderModel folder: a tiny cased BERT (English and Korean word pieces,
    ``text_width`` wide) and a tiny CLIP vision tower (32 wide), joined by ``projection_dim`` projections."""
    from transformers import BertConfig, CLIPVisionConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel

    tokenizer = tiny_wordpiece_tokenizer(root)
    text = BertConfig(vocab_size=len(tokenizer), hidden_size=text_width, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=37, max_position_embeddings=64)
    config = VisionTextDualEncoderConfig.from_vision_text_configs(CLIPVisionConfig(**TINY_VISION), text,
                                                                   projection_dim=projection_dim)
    torch.manual_seed(seed)
    VisionTextDualEncoderModel(config).save_pretrained(root)
    _write_processor(root)
    return root


def tiny_text_tower_folder(root: Path, width: int = 24, seed: int = 1) -> Path:
    """A tiny cased BERT (English and Korean word pieces) with its tokenizer: a text tower to build from."""
    from transformers import BertConfig, BertModel

    tokenizer = tiny_wordpiece_tokenizer(root)
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64)).save_pretrained(root)
    return root


def tiny_korean_clip_folder(root: Path, projection_dim: int = 16) -> Path:
    """A transformers CLIPModel folder whose text tower reads the Korean word pieces of a BERT tokenizer (as the
    Korean CLIPs on the Hub do), ending every text at ``[SEP]``."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = tiny_wordpiece_tokenizer(root)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "bos_token_id": tokenizer.cls_token_id,
                     "eos_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config=TINY_VISION, projection_dim=projection_dim)
    CLIPModel(config).save_pretrained(root)
    _write_processor(root)
    return root


def tiny_blip2_folder(root: Path, num_query_tokens: int = 4, width: int = 32, layers: int = 1,
                      image_size: int = 32, patch_size: int = 8, inner: int | None = None) -> Path:
    """A transformers BLIP-2 folder (OPT language model) with small random towers (``width`` wide, ``layers``
    deep, feed-forward layers ``inner`` wide, by default an odd ``width + 5``), a byte-level BPE tokenizer made
    from scratch with an ``<image>`` token, and a processor config."""
    import json

    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Blip2Config, Blip2ForConditionalGeneration, GPT2Tokenizer

    torch.manual_seed(0)
    chars = sorted(ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>", *chars])}
    try:  # transformers 5 builds from the tables, 4 from files
        tokenizer = GPT2Tokenizer(vocab=vocab, merges=[], bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    except TypeError:
        (root / "vocab.json").write_text(json.dumps(vocab))
        (root / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = GPT2Tokenizer(str(root / "vocab.json"), str(root / "merges.txt"), bos_token="</s>",
                                  eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.save_pretrained(root)
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    inner = inner or width + 5
    config = Blip2Config(
        vision_config={"hidden_size": width, "intermediate_size": inner, "num_hidden_layers": layers,
                       "num_attention_heads": 2, "image_size": image_size, "patch_size": patch_size},
        qformer_config={"hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": 2,
                        "intermediate_size": inner, "encoder_hidden_size": width, "vocab_size": 100},
        text_config={"model_type": "opt", "vocab_size": len(tokenizer), "hidden_size": width,
                     "num_hidden_layers": layers, "num_attention_heads": 2, "ffn_dim": inner,
                     "word_embed_proj_dim": width, "max_position_embeddings": 128, "bos_token_id": 1,
                     "eos_token_id": 1, "pad_token_id": 0},
        num_query_tokens=num_query_tokens, image_token_index=image_token)
    Blip2ForConditionalGeneration(config).save_pretrained(root)
    (root / "preprocessor_config.json").write_text(json.dumps({
        "size": {"height": image_size, "width": image_size}, "do_center_crop": False,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    return root


def synthetic_sound(kind: int, seconds: float = 0.5, rate: int = 8000, gain: float = 0.5, seed: int = 0):
    """One of six sound classes: two steady tones, a rising and a falling chirp, a low and a high noise band;
    ``seed`` jitters the pitch and phase so no two clips are the same."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    jitter = 1 + 0.03 * rng.standard_normal()
    if kind in (0, 1):
        wave = np.sin(2 * np.pi * (440 if kind == 0 else 1500) * jitter * t + rng.uniform(0, 6.28))
    elif kind in (2, 3):
        f0, f1 = (300, 3000) if kind == 2 else (3000, 300)
        wave = np.sin(2 * np.pi * jitter * (f0 * t + (f1 - f0) * t * t / (2 * seconds)))
    else:
        spectrum = np.fft.rfft(rng.standard_normal(t.size))
        freqs = np.fft.rfftfreq(t.size, 1 / rate)
        low, high = (150, 500) if kind == 4 else (2500, 3500)
        spectrum[(freqs < low) | (freqs > high)] = 0
        wave = np.fft.irfft(spectrum, t.size)
        wave /= np.abs(wave).max()
    return (gain * wave).astype(np.float32)


def synthetic_picture(kind: int, seed: int = 0, size: int = 32) -> np.ndarray:
    """A distinct pattern per class (colour and stripes), with a little seeded noise, uint8 [H, W, 3]."""
    rng = np.random.default_rng(1000 + seed)
    colours = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 200, 30), (150, 40, 180), (30, 190, 200)]
    yy, xx = np.mgrid[:size, :size]
    stripes = ((xx + yy * (kind % 3)) // (2 + kind)) % 2
    img = np.array(colours[kind % 6], dtype=np.float32) * (0.5 + 0.5 * stripes[..., None])
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_paired_folder(folder: Path, per_class: int = 4, classes: int = 6, rate: int = 8000) -> Path:
    """``<stem>.wav`` beside ``<stem>.png`` for every class and sample."""
    import soundfile
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for kind in range(classes):
        for i in range(per_class):
            stem = f"c{kind}_{i:02d}"
            soundfile.write(folder / f"{stem}.wav", synthetic_sound(kind, rate=rate, seed=kind * 100 + i), rate)
            Image.fromarray(synthetic_picture(kind, kind * 100 + i)).save(folder / f"{stem}.png")
    return folder


def write_video(path: Path, frames: list[np.ndarray], fps: int, audio: np.ndarray | None, rate: int) -> Path:
    """A small MKV (MPEG-4 video, 16-bit PCM mono audio unless ``audio`` is None) written with PyAV."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        sound = out.add_stream("pcm_s16le", rate=rate, layout="mono") if audio is not None else None
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            chunk = av.AudioFrame.from_ndarray((np.clip(audio, -1, 1) * 32767).astype(np.int16)[None], format="s16",
                                               layout="mono")
            chunk.sample_rate = rate
            for packet in [*sound.encode(chunk), *sound.encode()]:
                out.mux(packet)
    return path


def tiny_unet(seed: int = 0, cross_attention_dim: int = 16):
    """A few-layer SD-shaped UNet whose random weights come from ``seed`` alone (the global generator is
    given back untouched)."""
    from diffusers import UNet2DConditionModel

    from atelier.training.loop import seeded

    with seeded(seed):
        return UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_attention_dim,
            attention_head_dim=4, norm_num_groups=4)


def tiny_data(n: int = 4, caption_dropout: float = 0.0, dim: int = 16):  # -> training.data.TrainData
    """Cached 'latents' and prompt embeddings of ``n`` pictures for ``tiny_unet(cross_attention_dim=dim)``."""
    from atelier.training.sd15.latents import Bucket, TrainData

    g = torch.Generator().manual_seed(1)
    return TrainData([Bucket(torch.randn(n, 4, 8, 8, generator=g), torch.randn(n, 5, dim, generator=g),
                             torch.arange(n))],
                     torch.zeros(5, dim), caption_dropout)


def many_labels(n: int) -> str:
    """``n`` labels in one chain of parents (the deepest hierarchy), with synonyms, one in ten folded into
    another label that lists it as a synonym."""
    lines = ["groups:", "  g:", "    labels:"]
    for i in range(n):
        parent = f", parent: l{i - 1}" if i else ""
        alias = f", alias{i}" if i % 10 == 0 else ""
        lines.append(f"      l{i}: {{prompts: [p{i}], synonyms: [s{i}{alias}]{parent}}}")
        if i % 10 == 0:
            lines.append(f"      alias{i}: {{prompts: [q{i}]}}")
    return "\n".join(lines) + "\n"


def tiny_seq2seq_folder(root: Path, width: int = 16) -> Path:
    """A transformers BART folder (a summariser's shape) with one tiny random layer each side and a byte-level BPE
    tokenizer made from scratch, saved offline."""
    import json

    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import BartConfig, BartForConditionalGeneration, BartTokenizer

    torch.manual_seed(0)
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", *sorted(ByteLevel.alphabet()), "<mask>"])}
    try:  # transformers 5 builds from the tables, 4 from files
        tokenizer = BartTokenizer(vocab=vocab, merges=[])
    except TypeError:
        (root / "vocab.json").write_text(json.dumps(vocab))
        (root / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = BartTokenizer(str(root / "vocab.json"), str(root / "merges.txt"))
    tokenizer.save_pretrained(root)
    config = BartConfig(vocab_size=len(tokenizer), d_model=width, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=width,
                        decoder_ffn_dim=width, max_position_embeddings=256, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2)
    BartForConditionalGeneration(config).save_pretrained(root)
    return root


def tiny_owl_folder(root, kind: str = "owlv2"):
    """A transformers OWLv2 or OWL-ViT folder with tiny random towers (32 px pictures, 8 px patches: 16 boxes),
    OpenAI CLIP's tokenizer and a 32 px image processor."""
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessor,
        OwlViTProcessor,
    )

    from atelier.core.sd15.tokenizer import sd15_tokenizer

    config_class, model_class, image_class, processor_class = (
        (Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor) if kind == "owlv2"
        else (OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor))
    torch.manual_seed(0)
    config = config_class(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 49406,
                     "eos_token_id": 49407},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=32)  # the class head compares image features with text embeddings of the text width
    model_class(config).save_pretrained(root)
    tokenizer = sd15_tokenizer()
    tokenizer.model_max_length = 16
    size = {"size": {"height": 32, "width": 32}}
    if kind == "owlvit":
        size.update(crop_size={"height": 32, "width": 32}, do_center_crop=False)
    processor_class(image_processor=image_class(**size), tokenizer=tokenizer).save_pretrained(root)
    return root
