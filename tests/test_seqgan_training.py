"""SeqGAN training and the text generator: MLE learns, resume equals an uninterrupted run, seeds, save and load,
prefixes, stories, bad input, and the story nodes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.core.shared.progress import Cancelled
from atelier.core.story.text_generator import SamplingOptions, TextGenerator, load_text_generator
from atelier.training.story.seqgan_trainer import SeqGANTrainConfig, TextModelSpec, run_name, train_text_generator

from helpers import CancelAfter, node_defaults

STORIES = [
    "a small boat leaves the harbour at dawn. the sea is calm and grey.",
    "the old man watches the boats. he waves to his son.",
    "a cat sleeps in the sun. the children laugh in the street.",
    "the moon rises over the quiet village. the lights go out one by one.",
] * 6
SPEC = TextModelSpec(tokenizer="word", max_vocab=200, max_len=20, emb_dim=16, hidden_dim=24)
QUICK = SeqGANTrainConfig(batch_size=8, mle_epochs=3, dis_rounds=2, adversarial_epochs=2, d_steps=1, d_epochs=1,
                          rollouts=3, negatives=16, checkpoint_every=1, seed=3)


def _train(tmp: Path, config: SeqGANTrainConfig = QUICK, progress: object = None) -> tuple[TextGenerator, ...]:
    return train_text_generator(STORIES, SPEC, config, tmp, "cpu", progress)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TextGenerator, object]:
    model, models, _ = _train(tmp_path_factory.mktemp("run"))
    return model, models


def test_maximum_likelihood_lowers_the_nll_of_the_corpus(tmp_path: Path) -> None:
    config = SeqGANTrainConfig(batch_size=8, mle_epochs=25, dis_rounds=0, adversarial_epochs=0, seed=1,
                               checkpoint_every=25)
    _, _, history = _train(tmp_path, config)
    first, last = history.nll[0][1], history.nll[-1][1]
    assert len(history.nll) == 25 and last < 0.3 * first


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    whole, _, whole_history = _train(tmp_path / "whole")
    with pytest.raises(Cancelled):  # stopped in the discriminator phase, then in the adversarial one
        _train(tmp_path / "cut", progress=CancelAfter(4))
    with pytest.raises(Cancelled):
        _train(tmp_path / "cut", progress=CancelAfter(6))
    resumed, _, history = _train(tmp_path / "cut")
    for key, value in whole.generator.state_dict().items():
        assert torch.equal(value, resumed.generator.state_dict()[key]), key
    assert history.nll == whole_history.nll and history.reward == whole_history.reward


def test_more_adversarial_epochs_extend_a_finished_run(tmp_path: Path) -> None:
    _train(tmp_path)
    longer = SeqGANTrainConfig(**{**QUICK.__dict__, "adversarial_epochs": 3})
    _, _, history = _train(tmp_path, longer)
    assert [step for step, _ in history.reward] == [6, 7, 8]
    other = SeqGANTrainConfig(**{**QUICK.__dict__, "g_lr": 0.02})
    with pytest.raises(ValueError, match="other settings"):
        _train(tmp_path, other)


def test_same_seed_same_text_and_save_load_reproduces_samples(trained: tuple, tmp_path: Path) -> None:
    model, models = trained
    options = SamplingOptions(temperature=0.9, seed=11)
    first = model.generate(5, options).texts
    assert model.generate(5, options).texts == first
    assert model.generate(5, SamplingOptions(temperature=0.9, seed=12)).texts != first
    weights = model.save(tmp_path / "models", "story", models.discriminator)
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["story.safetensors"]  # one file, no temporaries
    loaded = load_text_generator(weights)
    assert loaded.generate(5, options).texts == first
    assert loaded.tokenizer.vocab == model.tokenizer.vocab


def test_a_second_model_of_one_name_is_new_and_weights_carry_their_vocabulary(trained: tuple,
                                                                              tmp_path: Path) -> None:
    from safetensors import safe_open

    model, _ = trained
    first = model.save(tmp_path, "이야기")
    before = first.read_bytes()
    second = model.save(tmp_path, "이야기")
    assert (first.name, second.name) == ("이야기.safetensors", "이야기_2.safetensors")
    assert first.read_bytes() == before  # never overwritten
    with safe_open(str(second), "pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "atelier-seqgan-v2" and "vocab" in meta["tokenizer"]
    assert load_text_generator(second).tokenizer.vocab == model.tokenizer.vocab


def test_a_two_file_model_of_an_older_version_still_loads(trained: tuple, tmp_path: Path) -> None:
    import json

    from atelier.core.shared.state_dicts import write_safetensors

    model, _ = trained
    tensors = {f"generator.{k}": v.contiguous() for k, v in model.generator.state_dict().items()}
    write_safetensors(tmp_path / "old.safetensors", tensors, {"format": "atelier-seqgan-v1"})
    description = {"format": "atelier-seqgan-v1", "config": model.config.to_dict(),
                   "tokenizer": model.tokenizer.to_dict()}
    (tmp_path / "old.json").write_text(json.dumps(description), encoding="utf-8")
    options = SamplingOptions(seed=4)
    assert load_text_generator(tmp_path / "old.safetensors").generate(3, options).texts == \
        model.generate(3, options).texts
    (tmp_path / "old.json").unlink()
    with pytest.raises(FileNotFoundError, match="old.json beside it, which is missing"):
        load_text_generator(tmp_path / "old.safetensors")


def test_prefix_and_unknown_words(trained: tuple) -> None:
    model, _ = trained
    result = model.generate(3, SamplingOptions(seed=2), prefix="the zebra", stop_at_sentence_end=True)
    assert all(text.startswith("the zebra") for text in result.texts)
    assert result.notes == ["not in the vocabulary, written as <unk>: zebra"]
    assert model.generate(1, SamplingOptions(seed=2), prefix="the boat").notes == []


def test_a_story_has_one_sentence_per_line(trained: tuple) -> None:
    model, _ = trained
    story = model.continue_story("a small boat leaves the harbour at dawn.", 4, SamplingOptions(seed=5))
    assert len(story.texts) == 4 and story.texts[0] == "a small boat leaves the harbour at dawn."
    assert all(line.strip() for line in story.texts)
    assert story.texts == model.continue_story("a small boat leaves the harbour at dawn.", 4,
                                               SamplingOptions(seed=5)).texts


@pytest.mark.parametrize("call, message", [
    (lambda m: m.generate(0), "count must be at least 1"),
    (lambda m: m.continue_story("a boat.", 0), "sentences must be at least 1"),
    (lambda m: m.continue_story("  ", 3), "the first sentence is empty"),
    (lambda m: m.generate(1, SamplingOptions(temperature=0)), "temperature must be above 0"),
    (lambda m: m.generate(1, SamplingOptions(max_len=3), prefix="the old man watches"), "raise max_len"),
])
def test_bad_requests_are_clear_errors(trained: tuple, call: object, message: str) -> None:
    model, _ = trained
    with pytest.raises(ValueError, match=message):
        call(model)  # type: ignore[operator]


def test_a_corpus_shorter_than_one_batch_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fewer than one batch of 64"):
        train_text_generator(STORIES[:5], SPEC, SeqGANTrainConfig(), tmp_path)
    assert not (tmp_path / "checkpoint").exists()


def test_run_names_follow_corpus_and_settings() -> None:
    name = run_name("story", SPEC, QUICK, STORIES)
    assert name == run_name("story", SPEC, SeqGANTrainConfig(**{**QUICK.__dict__, "adversarial_epochs": 9}), STORIES)
    assert name != run_name("story", SPEC, QUICK, STORIES[:-1])


# --------------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------------


def test_story_nodes_train_load_generate_continue_and_stack(tmp_path: Path, output_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier.nodes import story

    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "models"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(STORIES), encoding="utf-8")
    values = node_defaults(story.AtelierTrainTextGenerator, corpus=str(corpus), name="harbour", max_len=20,
                           emb_dim=16, hidden_dim=24, batch_size=8, mle_epochs=3, dis_rounds=1,
                           adversarial_epochs=1, d_steps=1, d_epochs=1, rollouts=2, checkpoint_every=5)
    model, path, samples, curve = story.AtelierTrainTextGenerator().train(**values)
    assert Path(path) == tmp_path / "models" / "atelier" / "seqgan" / "harbour.safetensors"
    assert len(samples.splitlines()) == 4 and curve.shape[0] == 1 and curve.shape[-1] == 3
    listed = story.AtelierLoadTextGenerator.INPUT_TYPES()["required"]["model"][0]
    assert listed == ["atelier_story.safetensors", "harbour.safetensors"]  # the default name always offered
    with pytest.raises(FileNotFoundError, match="train one with Atelier Train Text Generator"):
        story.AtelierLoadTextGenerator().load("atelier_story.safetensors")
    (loaded,) = story.AtelierLoadTextGenerator().load("harbour.safetensors")
    texts, notes = story.AtelierGenerateText().generate(loaded, 3, "the", True, 1.0, 0, 1.0, 0, 4)
    assert len(texts.splitlines()) == 3 and notes == ""
    lines, whole, _ = story.AtelierContinueStory().continue_story(loaded, "the sea is calm.", 3, 1.0, 0, 1.0, 0, 1)
    assert story.AtelierContinueStory.OUTPUT_IS_LIST == (True, False, False)
    assert len(lines) == 3 and whole == " ".join(lines)
    panels = [torch.rand(1, 30, 60, 3), torch.rand(2, 50, 50, 3)]  # a list of IMAGEs, one of them a batch of two
    (strip,) = story.AtelierStoryStrip().stack(panels, [120], [4], [10], ["#ffffff"], [0], ["#000000"], [""])
    assert strip.shape == (1, 10 + 50 + 4 + 100 + 4 + 100 + 10, 120, 3)
    with pytest.raises(ValueError, match="caption"):  # one caption for three panels
        story.AtelierStoryStrip().stack(panels, [120], [4], [10], ["#ffffff"], [12], ["#000000"], [""], ["one"])
    (captioned,) = story.AtelierStoryStrip().stack(panels, [120], [4], [10], ["#ffffff"], [12], ["#000000"], [""],
                                                   ["one\ntwo\nthree"])  # one text: a line per panel
    assert captioned.shape[1] > strip.shape[1]


def test_the_command_line_trains_samples_and_continues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atelier.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(STORIES), encoding="utf-8")
    train = ["text-train", str(corpus), "--out-dir", str(tmp_path / "models"), "--run", str(tmp_path / "run"),
             "--name", "harbour", "--max-len", "20", "--emb-dim", "16", "--hidden-dim", "24", "--batch-size", "8",
             "--mle-epochs", "3", "--dis-rounds", "1", "--adversarial-epochs", "1", "--d-steps", "1",
             "--d-epochs", "1", "--rollouts", "2", "--negatives", "16", "--device", "cpu"]
    assert main(train) == 0
    model = tmp_path / "models" / "harbour.safetensors"
    assert model.is_file() and (tmp_path / "run" / "curve.png").is_file()
    capsys.readouterr()
    assert main(["text-sample", str(model), "--count", "3", "--prefix", "the zebra", "--seed", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "note: not in the vocabulary, written as <unk>: zebra" and len(out) == 4
    assert main(["text-story", str(model), "the sea is calm.", "--sentences", "3"]) == 0
    story = capsys.readouterr().out.splitlines()
    assert len(story) == 3 and story[0] == "the sea is calm."
    assert main(train[:2] + ["--out-dir", str(tmp_path), "--run", str(tmp_path / "r2"), "--batch-size", "500"]) == 2
    assert "fewer than one batch of 500" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["[1, 2]", "{not json", '{"format": "atelier-seqgan-v1", "config": 3}'])
def test_a_text_model_whose_json_is_not_an_object_is_named(trained: tuple, tmp_path: Path, damage: str) -> None:
    from atelier.core.shared.state_dicts import write_safetensors

    model, _ = trained
    tensors = {f"generator.{k}": v.contiguous() for k, v in model.generator.state_dict().items()}
    write_safetensors(tmp_path / "old.safetensors", tensors, {"format": "atelier-seqgan-v1"})
    (tmp_path / "old.json").write_text(damage, encoding="utf-8")
    with pytest.raises(ValueError, match="old.json"):
        load_text_generator(tmp_path / "old.safetensors")


@pytest.mark.parametrize(("key", "value"), [("config", "[]"), ("tokenizer", "{broken"), ("config", '{"vocab": 1}')])
def test_a_text_model_with_damaged_metadata_is_named(trained: tuple, tmp_path: Path, key: str, value: str) -> None:
    from safetensors import safe_open

    from atelier.core.shared.state_dicts import write_safetensors

    model, _ = trained
    saved = model.save(tmp_path, "story")
    with safe_open(str(saved), "pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    write_safetensors(tmp_path / "damaged.safetensors", tensors, {**meta, key: value})
    with pytest.raises(ValueError, match=r"damaged\.safetensors"):
        load_text_generator(tmp_path / "damaged.safetensors")
