"""Nodes of the text generator and the story strip: train, load, generate, continue a story, stack panels."""
from __future__ import annotations

from typing import Any

import torch

from ..core.shared import plots
from ..core.shared.colors import parse_color
from ..core.shared.output_paths import safe_name
from ..core.story.panel_guides import panel_guides
from ..core.story.strip import StripLayout, make_strip
from ..core.story.text_generator import SamplingOptions, TextGenerator, load_text_generator
from . import bridge
from .curator import CLIP_INPUT, _files, clip_cache_dir
from .declare import AtelierNode, ModelFileLoader, color_input, float_input, int_input, seed_input


class StoryNode(AtelierNode):
    CATEGORY = "Atelier/Story"


TEXT_MODEL = "ATELIER_TEXT_MODEL"
KIND = "seqgan"
RUNS_SUBFOLDER = "atelier/seqgan_runs"
DEFAULT_NAME = "atelier_story"
DEFAULT_MODEL = f"{DEFAULT_NAME}.safetensors"  # what Train Text Generator writes by default


def seqgan_key() -> str:
    return bridge.register_model_folder(KIND, {".safetensors"})


SAMPLING_INPUTS: dict[str, tuple[Any, ...]] = {
    "temperature": float_input(1.0, 0.05, 5.0, "Below 1: safer, more repetitive text; above 1: more surprising."),
    "top_k": int_input(0, 0, 100_000, "Sample only among the k likeliest tokens; 0: all."),
    "top_p": float_input(1.0, 0.05, 1.0, "Sample only among the likeliest tokens holding this probability; 1: all."),
    "max_len": int_input(0, 0, 1024, "Longest text in tokens; 0: the model's length."),
    "seed": seed_input("Seed of the sampling; the same seed gives the same text."),
}


def _options(temperature: float, top_k: int, top_p: float, max_len: int, seed: int) -> SamplingOptions:
    options = SamplingOptions(temperature, top_k, top_p, max_len, seed)
    options.check()
    return options


class AtelierTrainTextGenerator(StoryNode):
    DESCRIPTION = ("Train a SeqGAN text generator on your own corpus (a text file, a folder of .txt files, or lines "
                   "from other nodes such as captions): maximum-likelihood pretraining, then adversarial training "
                   "with Monte Carlo rollouts. Resumes after a cancel when queued again; saves to "
                   "models/atelier/seqgan. With a conditioning file (a catalogue of works' feature vectors and "
                   "their curator texts) the generator and discriminator are conditioned on each work, so it "
                   "writes a work's text from its analyses; the discriminator may be the CNN or an LSTM voting "
                   "over time steps.")
    EXAMPLE = ("Put one text per line in ComfyUI/input/atelier/corpus.txt (at least batch_size lines; a few hundred "
               "or more), choose tokenizer 'char' for Korean, and queue: the model is saved into "
               "models/atelier/seqgan under 'name' and samples shows four texts it writes. For a quick try lower "
               "mle_epochs to 20 and adversarial_epochs to 10.")
    FUNCTION = "train"
    OUTPUT_NODE = True
    OUTPUTS = (
        (TEXT_MODEL, "text_model", "The trained generator, for Generate Text and Continue Story."),
        ("STRING", "model_path", "Its .safetensors file in models/atelier/seqgan."),
        ("STRING", "samples", "Four texts the trained model writes."),
        ("IMAGE", "curve", "Training curves: likelihood, reward and the discriminator's accuracy."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from ..core.story.text_tokens import KINDS
        from ..training.story.seqgan_trainer import SeqGANTrainConfig, TextModelSpec

        d, m = SeqGANTrainConfig(), TextModelSpec()
        return {
            "required": {
                "corpus": ("STRING", {"default": "atelier/corpus.txt", "tooltip": "A .txt file (one text per line) "
                           "or a folder of .txt files, absolute or inside ComfyUI's input folder; ignored when "
                           "'lines' is wired."}),
                "name": ("STRING", {"default": DEFAULT_NAME, "tooltip": "File name of the trained model; never "
                                    "overwrites (name_2, name_3...)."}),
                "tokenizer": (list(KINDS), {"default": m.tokenizer, "tooltip": "word: English words; char: "
                              "characters of any script (Korean too); sentencepiece: subwords learnt from the "
                              "corpus."}),
                "max_vocab": int_input(m.max_vocab, 8, 100_000, "Largest vocabulary (rarer tokens become <unk>)."),
                "max_len": int_input(m.max_len, 4, 512, "Tokens per text; longer lines are cut."),
                "emb_dim": int_input(m.emb_dim, 4, 1024, "Token embedding size."),
                "hidden_dim": int_input(m.hidden_dim, 4, 2048, "LSTM state size."),
                "batch_size": int_input(d.batch_size, 1, 4096, "Texts per batch; the corpus needs at least this many."),
                "mle_epochs": int_input(d.mle_epochs, 0, 100_000, "Maximum-likelihood pretraining epochs."),
                "dis_rounds": int_input(d.dis_rounds, 0, 100_000, "Discriminator pretraining rounds."),
                "adversarial_epochs": int_input(d.adversarial_epochs, 0, 100_000, "Adversarial epochs (raise it and "
                                           "queue again to train on)."),
                "g_steps": int_input(d.g_steps, 1, 100, "Generator updates per adversarial epoch."),
                "d_steps": int_input(d.d_steps, 0, 100, "Discriminator rounds per adversarial epoch."),
                "d_epochs": int_input(d.d_epochs, 1, 100, "Epochs of each discriminator round."),
                "rollouts": int_input(d.rollouts, 1, 256, "Monte Carlo completions per prefix for its reward."),
                "rollout_policy": (["trailing", "generator"], {"default": "generator", "tooltip": "generator: the "
                                   "generator itself completes the rollouts (the paper and, in effect, its reference "
                                   "code); trailing: a copy that follows the generator at rate 0.8 (an option of "
                                   "this pack)."}),
                "seed": seed_input("Seeds initialisation, batches, samples and rollouts."),
                "checkpoint_every": int_input(d.checkpoint_every, 1, 100_000, "Steps (epochs or rounds) between "
                                         "resumable checkpoints."),
            },
            "optional": {
                "lines": ("STRING", {"forceInput": True, "tooltip": "Corpus lines from another node (one text per "
                          "line), such as Caption Images' captions."}),
                "conditioning_file": ("STRING", {"default": "", "tooltip": "A catalogue of (work, text) pairs that "
                                      "conditions the model on each work: a JSON-lines file of {\"features\": "
                                      "[numbers], \"text\": \"...\"} or a folder of curation.jsonl records with "
                                      "features; its texts are the corpus (corpus and lines are then not read). "
                                      "Empty: an unconditioned model."}),
                "discriminator": (["cnn", "lstm"], {"default": "cnn", "tooltip": "cnn: the paper's convolutional "
                                  "discriminator; lstm: a recurrent one whose logits at every step are averaged."}),
            },
        }

    def train(self, corpus: str, name: str, tokenizer: str, max_vocab: int, max_len: int, emb_dim: int,
              hidden_dim: int, batch_size: int, mle_epochs: int, dis_rounds: int, adversarial_epochs: int,
              g_steps: int, d_steps: int, d_epochs: int, rollouts: int, rollout_policy: str, seed: int,
              checkpoint_every: int, lines: str | None = None, conditioning_file: str = "",
              discriminator: str = "cnn") -> tuple[Any, ...]:
        from ..core.shared.progress import WeightedSteps
        from ..core.story.catalogue import read_catalogue
        from ..core.story.text_tokens import read_corpus
        from ..training.story import seqgan_trainer as trainer

        stem = safe_name(name, "model name")
        catalogue = read_catalogue(bridge.resolve_input_folder(conditioning_file)) if conditioning_file.strip() \
            else None
        features = None if catalogue is None else catalogue.features
        texts = catalogue.texts if catalogue else read_corpus([lines] if lines else bridge.resolve_input_folder(corpus))
        spec = trainer.TextModelSpec(tokenizer, max_vocab, max_len, emb_dim, hidden_dim, discriminator)
        config = trainer.SeqGANTrainConfig(batch_size, mle_epochs, dis_rounds, adversarial_epochs, g_steps, d_steps,
                                           d_epochs, rollouts, trail_rollout=rollout_policy == "trailing", seed=seed,
                                           checkpoint_every=checkpoint_every)
        config.check(len(texts))  # the exact count (after tokenising) is checked again before training
        run_dir = bridge.output_directory() / RUNS_SUBFOLDER / trainer.run_name(stem, spec, config, texts, features)
        costs = config.step_costs(len(texts), max_len)  # one bar over every phase, each step at its cost
        with bridge.training_mode():
            model, models, history = trainer.train_text_generator(
                texts, spec, config, run_dir, bridge.compute_device(),
                WeightedSteps(bridge.progress(sum(costs), "training text generator"), costs), features)
        models.to("cpu")
        path = model.save(bridge.model_folders(seqgan_key())[0], stem, models.discriminator)
        works = None if features is None else features[:4].repeat(4, 1)[:4].tolist()  # the first works' texts
        samples = model.generate(4, SamplingOptions(seed=seed), condition=works).texts
        curve = trainer.history_plot(history, max_len)
        curve.save(run_dir / "curve.png")
        return model, str(path), "\n".join(samples), plots.to_image_tensor(curve)


class AtelierLoadTextGenerator(ModelFileLoader, StoryNode):
    DESCRIPTION = "Load a text generator trained by Atelier Train Text Generator (models/atelier/seqgan)."
    EXAMPLE = ("Choose a model trained by Atelier Train Text Generator (in models/atelier/seqgan) and wire text_model "
               "into Atelier Generate Text or Atelier Continue Story.")
    OUTPUTS = (
        (TEXT_MODEL, "text_model", "The generator, for Generate Text and Continue Story."),
    )
    KEY, DEFAULT, WIDGET = staticmethod(seqgan_key), DEFAULT_MODEL, "model"
    TOOLTIP = "A .safetensors text model in models/atelier/seqgan (an older one with its .json beside it)."
    WHAT, HOW = "text model", "train one with Atelier Train Text Generator"

    def load(self, model: str) -> tuple[Any]:
        return (load_text_generator(self.find(model)),)


class AtelierGenerateText(StoryNode):
    DESCRIPTION = "Write texts with a trained generator, optionally continuing a prefix; one text per line."
    EXAMPLE = ("Wire Atelier Load Text Generator, set count 5, prefix 'the sea' and temperature 0.8: texts holds five "
               "lines beginning 'the sea', and notes says when a prefix word is not in the model's vocabulary.")
    FUNCTION = "generate"
    OUTPUTS = (
        ("STRING", "texts", "One text per line."),
        ("STRING", "notes", "What you should know, such as prefix words the model does not know."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "text_model": (TEXT_MODEL, {"tooltip": "From Load or Train Text Generator."}),
            "count": int_input(1, 1, 1000, "How many texts."),
            "prefix": ("STRING", {"default": "", "multiline": True, "tooltip": "Words every text starts with."}),
            "stop_at_sentence_end": ("BOOLEAN", {"default": True, "tooltip": "Cut each text after its first "
                                     "sentence."}),
            **SAMPLING_INPUTS,
        }}

    def generate(self, text_model: TextGenerator, count: int, prefix: str, stop_at_sentence_end: bool,
                 temperature: float, top_k: int, top_p: float, max_len: int, seed: int) -> tuple[str, str]:
        result = text_model.generate(count, _options(temperature, top_k, top_p, max_len, seed), prefix,
                                     stop_at_sentence_end)
        return "\n".join(t.replace("\n", " ") for t in result.texts), "\n".join(result.notes)


class AtelierContinueStory(StoryNode):
    DESCRIPTION = ("Continue a first sentence into a short story of N sentences. 'lines' is a list, so each "
                   "sentence drives one run of the nodes after it (one panel each); 'story' is the whole text.")
    EXAMPLE = ("Wire Atelier Load Text Generator and keep sentences 4: wire lines into CLIP Text Encode's text, so "
               "KSampler runs once per sentence (one panel each), and into Atelier Story Strip's captions.")
    FUNCTION = "continue_story"
    OUTPUTS = (
        ("STRING", "lines", "The sentences as a list: each drives one run of the nodes after it."),
        ("STRING", "story", "The whole story as one text."),
        ("STRING", "notes", "What you should know, such as words of the first sentence the model does not know."),
    )
    OUTPUT_IS_LIST = (True, False, False)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "text_model": (TEXT_MODEL, {"tooltip": "From Load or Train Text Generator."}),
            "first_sentence": ("STRING", {"default": "a small boat leaves the harbour at dawn.", "multiline": True,
                               "tooltip": "How the story begins; the first panel's line."}),
            "sentences": int_input(4, 1, 64, "Lines in the story, the first sentence included."),
            **SAMPLING_INPUTS,
        }}

    def continue_story(self, text_model: TextGenerator, first_sentence: str, sentences: int, temperature: float,
                       top_k: int, top_p: float, max_len: int, seed: int) -> tuple[list[str], str, str]:
        result = text_model.continue_story(first_sentence, sentences,
                                           _options(temperature, top_k, top_p, max_len, seed))
        return result.texts, " ".join(result.texts), "\n".join(result.notes)


class AtelierStoryStrip(StoryNode):
    DESCRIPTION = ("Stack pictures (one per story line, any sizes) into one vertical, webtoon-style strip at a chosen "
                   "width, with gutters, margins and an optional caption under each panel. Takes a list of IMAGEs "
                   "(such as one KSampler result per line) or one batch.")
    EXAMPLE = ("Wire the pictures made once per line of Atelier Continue Story (VAE Decode) into images and its lines "
               "into captions, width 800: one tall strip with each sentence under its panel, for Save Image.")
    FUNCTION = "stack"
    INPUT_IS_LIST = True
    OUTPUTS = (
        ("IMAGE", "strip", "The strip as one tall picture."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        layout = StripLayout()
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The panels, in order: a list of IMAGEs or one batch."}),
                "width": int_input(layout.width, 64, 16384, "Strip width in pixels; panels are scaled "
                                   "to fit it, aspect kept."),
                "gutter": int_input(layout.gutter, 0, 4096, "Pixels between panels."),
                "margin": int_input(layout.margin, 0, 4096, "Pixels around everything."),
                "background": color_input("#ffffff", "Colour of gutters and margins"),
                "caption_size": int_input(layout.caption_size, 0, 512, "Caption font size in pixels; 0: no captions."),
                "caption_color": color_input("#000000", "Caption colour"),
                "font": ("STRING", {"default": "", "tooltip": "A .ttf/.otf file for captions; empty: a system font "
                         "that covers the captions' script (for Korean install Noto Sans CJK or Nanum)."}),
            },
            "optional": {
                "captions": ("STRING", {"forceInput": True, "tooltip": "One caption per panel (a list, such as "
                             "Continue Story's lines, or one line per panel)."}),
            },
        }

    def stack(self, images: list[torch.Tensor], width: list[int], gutter: list[int], margin: list[int],
              background: list[str], caption_size: list[int], caption_color: list[str], font: list[str],
              captions: list[str] | None = None) -> tuple[torch.Tensor]:
        panels = [picture for batch in images for picture in (batch if batch.dim() == 4 else batch[None])]
        texts = None
        if captions:
            texts = [line for item in captions for line in item.splitlines()] if len(captions) == 1 else captions
        layout = StripLayout(width[0], gutter[0], margin[0], parse_color(background[0]), caption_size[0],
                             parse_color(caption_color[0]), font=font[0].strip())
        return (make_strip(panels, texts, layout)[None],)


class AtelierStoryPanelGuides(StoryNode):
    DESCRIPTION = ("Panels that follow the story: each line retrieves the closest picture of a folder in a CLIP's "
                   "image-text space (Atelier Load CLIP: an OpenAI-style CLIP, or a Korean or multilingual one for "
                   "Korean lines), cropped to the panel size. Wired into VAE Encode and a KSampler at a denoise below "
                   "1, each picture is the start of its line's panel. Folder embeddings are cached, so a folder "
                   "searched once answers later stories at once.")
    EXAMPLE = ("Wire Atelier Load CLIP and Continue Story's lines into story, keep folder 'atelier/originals', turn "
               "distinct on: guides holds one 512 x 512 picture per line, in story order; wire it into VAE Encode, "
               "then KSampler (denoise 0.6, the same seed for every panel) with the line's prompt, and report says "
               "which picture each line found and how close it is.")
    FUNCTION = "guide"
    INPUT_IS_LIST = True  # the story's lines arrive together, so distinct can see them all
    OUTPUTS = (
        ("IMAGE", "guides", "One guide picture per line as a list: each drives one run of the nodes after it "
                            "(VAE Encode, KSampler), in step with the line's prompt."),
        ("IMAGE", "batch", "The same guides as one batch [lines, height, width, 3], for Preview Image."),
        ("STRING", "report", "One row per panel: number, cosine similarity, picture file, line; then how many "
                             "pictures were embedded or read from the cache, and any skipped."),
    )
    OUTPUT_IS_LIST = (True, False, False)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip_model": CLIP_INPUT,
            "story": ("STRING", {"default": "a small boat leaves the harbour at dawn.\n작은 배가 새벽 바다로 나아간다.",
                      "multiline": True, "tooltip": "The story, one sentence per line: type it, or wire Continue "
                      "Story's lines (a list). Korean lines need a CLIP whose text tower reads Korean."}),
            "folder": ("STRING", {"default": "atelier/originals", "tooltip": "Folder of pictures to search (absolute, "
                       "or inside ComfyUI's input folder). Files that fail to decode are skipped and listed."}),
            "width": int_input(512, 64, 4096, "Panel width in pixels; each picture is scaled to cover the panel "
                               "and centre-cropped.", 8),
            "height": int_input(512, 64, 4096, "Panel height in pixels.", 8),
            "distinct": ("BOOLEAN", {"default": False, "tooltip": "Never use one picture for two panels: lines take "
                         "pictures in story order, each its closest one not yet taken (needs as many pictures as "
                         "lines)."}),
            "batch_size": int_input(32, 1, 1024, "Pictures per forward pass while the folder is embedded."),
        }}

    def guide(self, clip_model: list[Any], story: list[str], folder: list[str], width: list[int], height: list[int],
              distinct: list[bool], batch_size: list[int]) -> tuple[list[torch.Tensor], torch.Tensor, str]:
        files = _files(clip_model[0], folder[0], False)  # a wrong model or a missing folder fails here
        found = panel_guides(clip_model[0], story, files, clip_cache_dir(), (width[0], height[0]),
                             distinct[0], batch_size[0], progress=bridge.progress(len(files), "embedding pictures"))
        return [picture[None] for picture in found.pictures], found.pictures, found.report()


NODE_CLASS_MAPPINGS = {
    "AtelierTrainTextGenerator": AtelierTrainTextGenerator,
    "AtelierLoadTextGenerator": AtelierLoadTextGenerator,
    "AtelierGenerateText": AtelierGenerateText,
    "AtelierContinueStory": AtelierContinueStory,
    "AtelierStoryStrip": AtelierStoryStrip,
    "AtelierStoryPanelGuides": AtelierStoryPanelGuides,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AtelierTrainTextGenerator": "Atelier Train Text Generator",
    "AtelierLoadTextGenerator": "Atelier Load Text Generator",
    "AtelierGenerateText": "Atelier Generate Text",
    "AtelierContinueStory": "Atelier Continue Story",
    "AtelierStoryStrip": "Atelier Story Strip",
    "AtelierStoryPanelGuides": "Atelier Story Panel Guides",
}
