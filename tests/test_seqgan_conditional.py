"""The SeqGAN conditioned on a work (claim 22) and the LSTM discriminator voting over time steps (claim 23):
lower held-out NLL than the unconditioned generator where the text depends on the features, the catalogue format,
unconditioned models and files unchanged, and conditioned ones saved and loaded."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atelier.core.story import seqgan_model as sg
from atelier.core.story.catalogue import read_catalogue
from atelier.core.story.text_generator import FORMAT, FORMAT_EXTENDED, load_text_generator
from atelier.training.story.seqgan_trainer import SeqGANTrainConfig, TextModelSpec, train_text_generator

ROOT = Path(__file__).resolve().parents[1]


def synthetic_catalogue(path: Path, per_class: int = 50, seed: int = 0) -> Path:
    """Four kinds of work (one-hot features); each text is four words drawn from its kind's own three words, so
    the features tell every word's kind, while without them only the first word's kind is unknown (log 4)."""
    rng = torch.Generator().manual_seed(seed)
    lines = []
    for k in range(4):
        for _ in range(per_class):
            words = [f"w{k}{int(torch.randint(0, 3, (1,), generator=rng))}" for _ in range(4)]
            lines.append(json.dumps({"features": [float(k == j) for j in range(4)], "text": " ".join(words)}))
    order = torch.randperm(len(lines), generator=rng).tolist()
    path.write_text("\n".join(lines[i] for i in order) + "\n", encoding="utf-8")
    return path


CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from atelier_cli import load_pack
load_pack()
from atelier.core.story.catalogue import read_catalogue
from atelier.training.story.seqgan_trainer import SeqGANTrainConfig, TextModelSpec, conditioning_gain
from pathlib import Path
catalogue = read_catalogue(Path(sys.argv[2]))
spec = TextModelSpec(max_len=8, emb_dim=16, hidden_dim=32)
config = SeqGANTrainConfig(batch_size=16, mle_epochs=40, dis_rounds=0, adversarial_epochs=0, seed=5)
print(json.dumps(conditioning_gain(catalogue.texts, catalogue.features, spec, config)))
"""


def test_the_conditioned_generator_has_lower_heldout_nll(tmp_path: Path) -> None:
    path = synthetic_catalogue(tmp_path / "catalogue.jsonl")
    # a fresh process: nothing seeded elsewhere in the test session reaches the training
    done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(path)], capture_output=True, text=True,
                          check=True, timeout=900)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heldout_texts"] == 40 and report["train_texts"] == 160
    # the unconditioned one pays log 4 / 5 = 0.28 nats per token for the first word's kind
    assert report["conditional_nll"] < report["unconditional_nll"] - 0.12, report


def test_lstm_discriminator_averages_its_votes_over_the_counted_steps() -> None:
    torch.manual_seed(0)
    config = sg.SeqGANConfig(vocab_size=9, max_len=5, emb_dim=4, hidden_dim=6, dis_emb_dim=4, eos_id=2,
                             discriminator="lstm", dropout=0.0)
    d = sg.make_discriminator(config).eval()
    assert isinstance(d, sg.LSTMDiscriminator)
    sequences = torch.tensor([[3, 4, 2, 0, 0], [5, 6, 7, 8, 3]])
    hidden, _ = d.lstm(d.embedding(sequences))
    votes = d.output(hidden).squeeze(-1)
    expected = torch.stack([votes[0, :3].mean(), votes[1].mean()])
    torch.testing.assert_close(d(sequences), expected)
    assert isinstance(sg.make_discriminator(sg.SeqGANConfig(vocab_size=9, max_len=5)), sg.Discriminator)


def test_the_condition_reaches_every_step_and_is_required() -> None:
    torch.manual_seed(0)
    config = sg.SeqGANConfig(vocab_size=9, max_len=5, emb_dim=4, hidden_dim=6, dis_emb_dim=4, cond_dim=3,
                             filter_sizes=(1, 2), num_filters=(3, 3))
    generator, d = sg.Generator(config), sg.Discriminator(config).eval()
    sequences = torch.randint(0, 9, (2, 5))
    a, b = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]), torch.tensor([[0, 0, 1.0], [0, 0, 1.0]])
    differs = (generator.log_probs(sequences, a) - generator.log_probs(sequences, b)).abs() > 1e-6
    assert bool(differs.all())  # every step, not only the first
    assert not torch.equal(d(sequences, a), d(sequences, b))
    with pytest.raises(ValueError, match="conditioned on a work's 3 features"):
        generator.log_probs(sequences)
    with pytest.raises(ValueError, match="takes no condition"):
        sg.Generator(sg.SeqGANConfig(vocab_size=9, max_len=5)).log_probs(sequences, a)
    rewards = sg.rollout_rewards(generator, d, generator.sample(2, torch.Generator().manual_seed(0), condition=a), 2,
                                 torch.Generator().manual_seed(1), a)
    assert rewards.shape == (2, 5)


def test_unconditioned_descriptions_are_as_before() -> None:
    old = {"vocab_size": 9, "max_len": 5, "emb_dim": 4, "hidden_dim": 6, "dis_emb_dim": 64, "filter_sizes": [1],
           "num_filters": [2], "dropout": 0.25, "bos_id": 1, "eos_id": 2, "pad_id": 0}
    config = sg.SeqGANConfig.from_dict(old)
    assert config.cond_dim == 0 and config.discriminator == "cnn" and not config.extended
    assert config.to_dict() == {**old, "filter_sizes": (1,), "num_filters": (2,)}
    assert set(sg.Generator(config).state_dict()) == {"embedding.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0",
                                                      "lstm.bias_ih_l0", "lstm.bias_hh_l0", "output.weight",
                                                      "output.bias"}


def test_a_conditioned_model_trains_adversarially_saves_and_loads(tmp_path: Path) -> None:
    from safetensors import safe_open

    catalogue = read_catalogue(synthetic_catalogue(tmp_path / "catalogue.jsonl", per_class=4))
    spec = TextModelSpec(max_len=6, emb_dim=8, hidden_dim=8, discriminator="lstm")
    config = SeqGANTrainConfig(batch_size=4, mle_epochs=1, dis_rounds=1, adversarial_epochs=1, d_steps=1,
                               d_epochs=1, rollouts=2, negatives=8, seed=1)
    model, models, history = train_text_generator(catalogue.texts, spec, config, tmp_path / "run",
                                                  features=catalogue.features)
    assert isinstance(models.discriminator, sg.LSTMDiscriminator) and len(history.reward) == 1
    path = model.save(tmp_path / "models", "conditioned", models.discriminator)
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata()["format"] == FORMAT_EXTENDED
    loaded = load_text_generator(path)
    assert loaded.config.cond_dim == 4 and loaded.config.discriminator == "lstm"
    work = catalogue.features[0].tolist()
    texts = loaded.generate(3, condition=[work]).texts
    assert texts == model.generate(3, condition=[work]).texts and len(texts) == 3
    with pytest.raises(ValueError, match="conditioned on a work's 4 features"):
        loaded.generate(1)
    plain, plain_models, _ = train_text_generator(catalogue.texts, TextModelSpec(max_len=6, emb_dim=8, hidden_dim=8),
                                                  SeqGANTrainConfig(batch_size=4, mle_epochs=1, dis_rounds=0,
                                                                    adversarial_epochs=0), tmp_path / "plain")
    with safe_open(str(plain.save(tmp_path / "models", "plain")), "pt") as handle:
        assert handle.metadata()["format"] == FORMAT and "cond_dim" not in handle.metadata()["config"]


@pytest.mark.parametrize(("text", "message"), [
    ('{"features": [1, 2], "text": "a"}\n{"features": [1], "text": "b"}\n', "line 2: 1 features, where the lines"),
    ('{"features": [1, 2]}\n', "line 1: no 'text'"),
    ('{"features": ["x"], "text": "a"}\n', "line 1: 'features' must be a non-empty list of finite numbers"),
    ("not json\n", "line 1: not valid JSON"),
])
def test_a_damaged_catalogue_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_catalogue(path)


def test_a_folder_of_curation_records_is_a_catalogue(tmp_path: Path) -> None:
    (tmp_path / "v001").mkdir()
    (tmp_path / "v001" / "curation.jsonl").write_text(
        json.dumps({"file": "a.png", "paragraph": "A calm sea.", "features": [0.5, 1]}) + "\n", encoding="utf-8")
    catalogue = read_catalogue(tmp_path)
    assert catalogue.texts == ["A calm sea."] and catalogue.features.tolist() == [[0.5, 1.0]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no curation.jsonl in"):
        read_catalogue(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no catalogue"):
        read_catalogue(tmp_path / "missing.jsonl")


def test_the_node_and_the_command_line_train_a_conditioned_model(tmp_path: Path, output_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier.cli import main
    from atelier.nodes.story import AtelierTrainTextGenerator

    from helpers import node_defaults

    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "models"))
    path = synthetic_catalogue(tmp_path / "catalogue.jsonl", per_class=2)
    small = {"max_len": 6, "emb_dim": 8, "hidden_dim": 8, "batch_size": 4, "mle_epochs": 1, "dis_rounds": 1,
             "adversarial_epochs": 1, "d_steps": 1, "d_epochs": 1, "rollouts": 2}
    values = node_defaults(AtelierTrainTextGenerator, corpus="not/read.txt", conditioning_file=str(path),
                           discriminator="lstm", **small)
    model, saved, samples, _ = AtelierTrainTextGenerator().train(**values)
    assert model.config.cond_dim == 4 and model.config.discriminator == "lstm" and len(samples.splitlines()) == 4
    assert load_text_generator(Path(saved)).config.cond_dim == 4
    args = ["text-train", "--conditioning", str(path), "--discriminator", "lstm", "--out-dir", str(tmp_path / "cli"),
            "--run", str(tmp_path / "run"), "--device", "cpu", "--negatives", "8",
            *[f"--{k.replace('_', '-')}={v}" for k, v in small.items()]]
    assert main(args) == 0
    assert load_text_generator(next((tmp_path / "cli").glob("*.safetensors"))).config.discriminator == "lstm"
    assert main(["text-train", "--out-dir", str(tmp_path / "cli"), "--run", str(tmp_path / "run2")]) != 0


def test_the_command_reports_the_heldout_nll_against_the_unconditioned_generator(tmp_path: Path, capsys) -> None:
    from atelier.cli import main
    from atelier.core.story.catalogue import read_catalogue
    from atelier.training.story.seqgan_trainer import SeqGANTrainConfig, TextModelSpec, conditioning_gain

    path = synthetic_catalogue(tmp_path / "catalogue.jsonl", per_class=4)
    args = ["text-train", "--conditioning", str(path), "--out-dir", str(tmp_path / "cli"), "--run",
            str(tmp_path / "run"), "--device", "cpu", "--max-len", "6", "--emb-dim", "8", "--hidden-dim", "8",
            "--batch-size", "4", "--mle-epochs", "2", "--dis-rounds", "0", "--adversarial-epochs", "0", "--seed", "3"]
    assert main([*args, "--compare-unconditioned"]) == 0
    printed = capsys.readouterr().out.splitlines()[-1]
    catalogue = read_catalogue(path)
    gain = conditioning_gain(catalogue.texts, catalogue.features, TextModelSpec(max_len=6, emb_dim=8, hidden_dim=8),
                             SeqGANTrainConfig(batch_size=4, mle_epochs=2, dis_rounds=0, adversarial_epochs=0,
                                               seed=3))
    assert printed == (f"held-out NLL per token: {gain['conditional_nll']:.4f} conditioned on the works' features, "
                       f"{gain['unconditional_nll']:.4f} without (13 texts trained, 3 held out)")
    with pytest.raises(SystemExit):
        main(["text-train", "corpus.txt", "--out-dir", str(tmp_path / "o"), "--run", str(tmp_path / "r"),
              "--compare-unconditioned"])
    assert "give --conditioning" in capsys.readouterr().err
