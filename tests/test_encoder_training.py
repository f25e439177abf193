"""Fine-tuning an image-text encoder on caption-picture pairs: on six picture classes whose English and Korean
captions name the class, tiny random towers learn to retrieve held-out pictures by their captions; the loss and
accuracy equal a reference written as transformers' contrastive example trains (model(..., return_loss=True));
runs are seeded and resume exactly in fresh processes; bad input is listed, counted or refused clearly."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from atelier.core.curator.clip_model import ClipModel, load_clip
from atelier.core.dataset.augment import derive_seed
from atelier.core.dataset.image_files import ImageFolderError, read_captions
from atelier.training.curator import encoder_job, encoder_trainer
from atelier.training.curator.encoder_trainer import Captions, Encoder, EncoderTrainConfig, Plan, contrastive
from atelier.training.curator.pairs import decode
from atelier.training.loop import seeded

from helpers import (
    TINY_VISION,
    _write_processor,
    synthetic_picture,
    tiny_clip_folder,
    tiny_korean_clip_folder,
    tiny_wordpiece_tokenizer,
)

CHILD = Path(__file__).with_name("encoder_training_child.py")
ENGLISH = ["cat", "dog", "house", "sea", "village", "window"]
KOREAN = ["고양이", "개", "집", "바다", "마을", "창"]
PER_CLASS = 4


def dual_encoder(root: Path, layers: int = 1, init_range: float = 0.3, dropout: float = 0.1) -> Path:
    """A tiny random dual encoder (cased BERT with English and Korean word pieces, CLIP vision tower) whose
    weights are drawn wide enough (``init_range``) that different captions start apart: with BERT's own 0.02
    every tiny random text embedding is the same vector and nothing can be learnt in a few steps. ``dropout``:
    BERT's (0.1 is its default); the CLIP vision tower has none."""
    from transformers import BertConfig, CLIPVisionConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel

    tokenizer = tiny_wordpiece_tokenizer(root)
    text = BertConfig(vocab_size=len(tokenizer), hidden_size=24, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=37, max_position_embeddings=64, initializer_range=init_range,
                      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    vision = CLIPVisionConfig(**{**TINY_VISION, "num_hidden_layers": layers})
    torch.manual_seed(0)
    VisionTextDualEncoderModel(VisionTextDualEncoderConfig.from_vision_text_configs(
        vision, text, projection_dim=16)).save_pretrained(root)
    _write_processor(root)
    return root


def class_pictures(folder: Path, sidecars: bool = True) -> Path:
    """Six classes of four pictures; each has an English and a Korean caption naming its class."""
    folder.mkdir(parents=True)
    for kind in range(6):
        for i in range(PER_CLASS):
            stem = f"{kind}_{i}"
            Image.fromarray(synthetic_picture(kind, seed=kind * 10 + i)).save(folder / f"{stem}.png")
            if sidecars:
                (folder / f"{stem}.en.txt").write_text(f"a photo of the {ENGLISH[kind]}", encoding="utf-8")
                (folder / f"{stem}.ko.txt").write_text(f"{KOREAN[kind]} 사진", encoding="utf-8")
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: threads only add waiting on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    return {"root": root, "model": dual_encoder(root / "dual"), "pictures": class_pictures(root / "pictures")}


FAST = EncoderTrainConfig(epochs=40, batch_size=8, lr=3e-3, weight_decay=0.0, train="all", val_fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def trained(world: dict[str, Path]) -> encoder_job.EncoderJobResult:
    job = encoder_job.EncoderJob(str(world["pictures"]), name="tuned", config=FAST)
    return encoder_job.run(job, load_clip(world["model"]), world["root"] / "models", world["root"] / "runs")


def test_captions_come_one_per_line_and_per_language(tmp_path: Path) -> None:
    picture = tmp_path / "고양이.png"
    Image.fromarray(synthetic_picture(0)).save(picture)
    (tmp_path / "고양이.txt").write_text("a cat\n\n  a grey cat  \n", encoding="utf-8")
    (tmp_path / "고양이.ko.txt").write_text("고양이 사진\n", encoding="utf-8")
    (tmp_path / "고양이.en.txt").write_text("a photo of the cat", encoding="utf-8")
    (tmp_path / "고양이.old.txt").write_text("not a language", encoding="utf-8")
    assert read_captions(picture) == [("a cat", ""), ("a grey cat", ""), ("a photo of the cat", "en"),
                                      ("고양이 사진", "ko")]


def test_held_out_retrieval_rises_clearly_and_the_saved_folder_loads(world, trained) -> None:
    before, after = trained.train.before, trained.train.after
    for scores in (before, after):
        assert scores["mrr@1"] <= scores["mrr@5"] <= scores["mrr@10"]
        assert scores["recall@1"] <= scores["recall@5"] <= scores["recall@10"]
    held_out = 6  # a quarter of 24 pictures, each with its English and Korean caption as queries
    chance = encoder_trainer.chance_mrr(held_out, 10)
    assert after["queries"] == 2 * held_out
    assert before["mrr@10"] < chance + 0.15 and after["mrr@10"] > before["mrr@10"] + 0.3
    assert after["mrr@1"] > before["mrr@1"] + 0.3
    for language in ("korean", "other"):  # English and Korean queries both learn their pictures
        assert after[f"mrr@10 {language}"] > before[f"mrr@10 {language}"] + 0.2
    history = trained.train.history
    assert len(history) == FAST.epochs and history[-1]["val_loss"] < history[0]["val_loss"] - 0.3
    loaded = load_clip(trained.path)
    assert isinstance(trained.clip, ClipModel) and loaded.kind == "vision-text-dual-encoder"
    assert loaded.languages == ("en", "ko")
    texts = ["a photo of the sea", "바다 사진"]
    assert torch.allclose(loaded.embed_texts(texts), trained.clip.embed_texts(texts))
    assert torch.allclose(torch.tensor(loaded.logit_scale), torch.tensor(trained.clip.logit_scale))
    report = trained.report()
    assert "text tower 24-d, vision tower 32-d, joined at 16-d by the projections" in report
    assert "48 (caption, picture) pairs over 24 pictures" in report and "before: MRR@1/5/10" in report
    assert trained.plot.size == (640, 720) and (trained.run_dir / "curves.png").is_file()


def _reference_step(model, pixels, ids, mask, seed: int):
    """One forward as transformers' contrastive example trains: the model's own loss and logits."""
    with seeded(seed):
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True)
    labels = torch.arange(len(ids))
    return (out.loss, (out.logits_per_image.argmax(dim=1) == labels).float().mean(),
            (out.logits_per_text.argmax(dim=1) == labels).float().mean())


@pytest.mark.parametrize("kind", ["dual", "clip", "korean_clip"])
def test_loss_and_accuracy_equal_the_models_own_contrastive_loss(world, tmp_path, kind) -> None:
    folder = {"dual": lambda: world["model"], "clip": lambda: tiny_clip_folder(tmp_path / "clip"),
              "korean_clip": lambda: tiny_korean_clip_folder(tmp_path / "korean")}[kind]()
    clip = load_clip(folder)
    pairs = encoder_job.read_job_pairs(encoder_job.EncoderJob(str(world["pictures"])))
    pixels = decode(pairs, clip.pixels)
    captions = Captions(clip.tokenizer, pairs.captions, clip.max_tokens)
    model = clip.model.train()
    encoder = Encoder(model, pixels, captions, torch.device("cpu"), "fp32", False, 8)
    rows = torch.tensor([0, 5, 9, 13, 17, 22])
    flat = captions.first[rows] + torch.tensor([0, 1, 1, 0, 1, 0])
    with torch.no_grad(), seeded(7):  # dropout (BERT's 0.1) draws alike in both
        ours = contrastive(encoder.images(rows), encoder.texts(flat), model.logit_scale)
    ids, mask = captions.batch(flat, torch.device("cpu"))
    with torch.no_grad():
        reference = _reference_step(model, pixels[rows].float(), ids, mask, 7)
    for mine, theirs in zip(ours, reference):
        assert torch.allclose(mine, theirs, atol=1e-6), (mine, theirs)
    assert 0.0 < float(ours[0])


def test_training_equals_a_reference_loop_as_in_the_contrastive_example(world, tmp_path) -> None:
    """AdamW, transformers' cosine schedule with warm-up, the model's own loss, logit_scale clamped as CLIP does:
    the same batches give the same losses, accuracies and weights."""
    from transformers import get_scheduler

    config = EncoderTrainConfig(epochs=2, batch_size=6, lr=2e-3, weight_decay=0.1, warmup_steps=2, schedule="cosine",
                                train="all", val_fraction=0.25, seed=5)
    clip = load_clip(world["model"])
    pairs = encoder_job.read_job_pairs(encoder_job.EncoderJob(str(world["pictures"])))
    pixels = decode(pairs, clip.pixels)
    ours = encoder_trainer.train_encoder(clip.model, clip.tokenizer, clip.max_tokens, pixels, pairs.captions, config,
                                         tmp_path / "run")

    model = load_clip(world["model"]).model.requires_grad_(True).train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}],
                                  lr=config.lr)
    train_rows, _ = encoder_trainer.split(len(pairs.pictures), config.val_fraction, config.seed)
    captions = Captions(clip.tokenizer, pairs.captions, clip.max_tokens)
    plan = Plan(train_rows, config.batch_size, captions, config.seed)
    total = config.epochs * plan.per_epoch
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total)
    per_step = []
    for step in range(total):
        rows, flat = plan.batch(step)
        ids, mask = captions.batch(flat, torch.device("cpu"))
        loss, i2t, t2i = _reference_step(model, pixels[rows].float(), ids, mask, derive_seed(config.seed, "step", step))
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        with torch.no_grad():
            model.logit_scale.clamp_(0, encoder_trainer.MAX_LOGIT_SCALE)
        per_step.append([loss.item(), i2t.item(), t2i.item()])
    means = torch.tensor(per_step).view(config.epochs, plan.per_epoch, 3).mean(dim=1)
    mine = torch.tensor([[h["train_loss"], h["train_acc_i2t"], h["train_acc_t2i"]] for h in ours.history])
    assert torch.allclose(mine, means, atol=1e-5), (mine, means)
    for (name, trained), reference in zip(ours.model.named_parameters(), model.parameters()):
        assert torch.allclose(trained, reference, atol=1e-5), name


def _child(world: dict[str, Path], work: Path, host_seed: int, *extra: str) -> dict:
    done = subprocess.run([sys.executable, str(CHILD), str(world["model"]), str(world["pictures"]),
                           str(work / "models"), str(work / "runs"), "--host-seed", str(host_seed), *extra],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_seeded_runs_agree_and_a_stopped_run_resumes_to_the_same_encoder(world, tmp_path) -> None:
    """Fresh processes with the host's generator in different states: a whole run, and one cancelled after 4
    of its 9 steps (mid-epoch, dropout on) then run again, write the same weights and curves."""
    whole = _child(world, tmp_path / "whole", 1)
    assert _child(world, tmp_path / "cut", 2, "--stop-after", "4") == {"ended": "cancelled"}
    resumed = _child(world, tmp_path / "cut", 3)
    assert whole["ended"] == resumed["ended"] == "finished" and resumed["resumed_from"] == 4
    for key in ("history", "before", "after"):
        assert whole[key] == resumed[key], key
    a, b = (load_file(str(Path(r["path"]) / "model.safetensors")) for r in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_pairs_are_listed_counted_and_said(world, tmp_path) -> None:
    pairs = tmp_path / "pairs.csv"
    long = " ".join(["a photo of the old house in the village"] * 6)  # about 50 word pieces; the tower takes 32
    with pairs.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "image"])
        for kind in range(6):
            for i in range(PER_CLASS):
                writer.writerow([f"a photo of the {ENGLISH[kind]}", f"{kind}_{i}.png"])
                writer.writerow([f"{KOREAN[kind]} 사진", f"{kind}_{i}.png"])
        writer.writerow([long, "0_0.png"])
        writer.writerow(["바닷가 마을", "없는 그림.png"])
        writer.writerow(["a dog", "elsewhere/dog.png"])
    config = EncoderTrainConfig(epochs=1, batch_size=128, lr=1e-3, train="projections", val_fraction=0.25)
    job = encoder_job.EncoderJob(str(world["pictures"]), str(pairs), "from_pairs", config)
    result = encoder_job.run(job, load_clip(world["model"]), tmp_path / "models", tmp_path / "runs")
    report = result.report()
    assert "49 (caption, picture) pairs over 24 pictures" in report
    assert "2 picture(s) named in the pairs file are not in" in report
    assert "없는 그림.png, elsewhere/dog.png" in report
    assert "1 caption(s) are longer than the text tower's 32 tokens and were cut to it" in report
    assert "the batch shrinks from 128 to 18" in report
    assert "text tower 24-d, vision tower 32-d, joined at 16-d" in report
    assert "training projections: 897 of" in report  # projections 32x16 and 24x16 without bias, logit_scale
    assert result.path.name == "from_pairs"
    again = encoder_job.run(job, load_clip(world["model"]), tmp_path / "models", tmp_path / "runs")
    assert again.path.name == "from_pairs_2" and again.train.resumed_from == 1  # never replaced; resumed at the end


def test_inputs_that_cannot_train_are_refused_before_any_work(world, tmp_path) -> None:
    clip = load_clip(world["model"])
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_picture(i)).save(few / f"{i}.png")
        (few / f"{i}.txt").write_text("a cat\n고양이", encoding="utf-8")
    with pytest.raises(ValueError, match="3 captioned picture.s.: at least 4 are needed .2 to train on, 2 held out"):
        encoder_job.run(encoder_job.EncoderJob(str(few)), clip, tmp_path / "models", tmp_path / "runs")
    with pytest.raises(ImageFolderError, match="no picture in .* has a caption: write <stem>.txt"):
        encoder_job.read_job_pairs(encoder_job.EncoderJob(str(class_pictures(tmp_path / "bare", sidecars=False))))
    nowhere = tmp_path / "nowhere.jsonl"
    nowhere.write_text(json.dumps({"text": "a cat", "image": "cat.png"}) + "\n", encoding="utf-8")
    with pytest.raises(ImageFolderError, match="none of the 1 pictures named in"):
        encoder_job.read_job_pairs(encoder_job.EncoderJob(str(world["pictures"]), str(nowhere)))
    deep = EncoderTrainConfig(train="last_n", last_n=2, epochs=1)
    with pytest.raises(ValueError, match="last_n is 2 but the vision tower has 1 layer.s.: train at most 1"):
        encoder_job.run(encoder_job.EncoderJob(str(world["pictures"]), config=deep), clip, tmp_path / "models",
                        tmp_path / "runs")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "models").exists()  # refused before any work


def test_last_n_trains_the_last_layers_and_what_follows_them_only(tmp_path) -> None:
    model = load_clip(dual_encoder(tmp_path / "deeper", layers=2)).model
    chosen = encoder_trainer.trainable_modules(model, "last_n", 1)
    names = {name for name, module in model.named_modules() if any(module is c for c in chosen)}
    assert names == {"visual_projection", "text_projection", "vision_model.encoder.layers.1",
                     "vision_model.post_layernorm", "text_model.encoder.layer.1", "text_model.pooler"}


def test_the_node_fine_tunes_a_clip_loaded_as_comfyui_loads_it(world, tmp_path, output_dir, monkeypatch) -> None:
    from atelier.nodes.dual_encoder import AtelierFineTuneImageTextEncoder

    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "models"))
    with torch.inference_mode():  # ComfyUI runs every node so, Load CLIP too
        clip = load_clip(world["model"])
        tuned, curves, report = AtelierFineTuneImageTextEncoder().train(
            clip, str(world["pictures"]), "tuned", 2, 8, 1e-3, "last_n", 1, 0, "constant", 0.25, 0)
    assert isinstance(tuned, ClipModel) and curves.shape == (1, 720, 640, 3)
    assert (tmp_path / "models" / "atelier" / "clip" / "tuned" / "model.safetensors").is_file()
    assert "training last_n (last 1 layers)" in report and "after:  MRR@1/5/10" in report
    assert any((output_dir / "atelier" / "encoder_runs").glob("tuned-*/checkpoint"))


def test_the_node_runs_again_when_a_caption_changes(world, tmp_path) -> None:
    from atelier.nodes.dual_encoder import AtelierFineTuneImageTextEncoder as Node

    pictures = class_pictures(tmp_path / "pictures")
    first = Node.IS_CHANGED(folder=str(pictures), pairs_file="")
    assert first == Node.IS_CHANGED(folder=str(pictures), pairs_file="")
    (pictures / "0_0.ko.txt").write_text("고양이 그림", encoding="utf-8")
    assert Node.IS_CHANGED(folder=str(pictures), pairs_file="") != first
    assert Node.IS_CHANGED(folder=str(tmp_path / "absent"), pairs_file="") == "missing"
    linked = Node.IS_CHANGED(folder=None, pairs_file="")
    assert linked != linked  # NaN: a linked folder is unknown here, so the node runs


def test_the_command_line_fine_tunes_and_writes_a_folder_load_clip_reads(world, tmp_path, capsys) -> None:
    from atelier.cli import main

    out = tmp_path / "encoders"
    assert main(["encoder-train", str(world["pictures"]), "--clip", str(world["model"]), "--device", "cpu",
                 "--out-dir", str(out), "--run", str(tmp_path / "runs"), "--train", "projections", "--epochs", "2",
                 "--batch-size", "8", "--lr", "1e-3", "--val-fraction", "0.25", "--name", "한국어_인코더"]) == 0
    printed = capsys.readouterr().out
    assert "before: MRR@1/5/10" in printed and f"saved as {out / '한국어_인코더'}" in printed
    assert load_clip(out / "한국어_인코더").languages == ("en", "ko")
    assert main(["encoder-train", str(world["pictures"]), "--clip", str(world["model"]), "--pairs",
                 str(tmp_path / "absent.csv")]) == 2
    assert "cannot read pairs file" in capsys.readouterr().err


def test_mrr_at_1_5_10_never_decrease_whatever_the_ranks() -> None:
    from atelier.core.curator.retrieval import evaluate

    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        ranks = torch.randint(1, 30, (int(torch.randint(1, 12, (1,), generator=gen)),), generator=gen).tolist()
        scores = [evaluate(ranks, k) for k in (1, 5, 10)]
        assert scores[0].mrr == scores[0].recall <= scores[1].mrr <= scores[2].mrr
        assert scores[0].recall <= scores[1].recall <= scores[2].recall


def test_a_cancel_while_the_frozen_towers_run_once_stops_before_any_step(world, tmp_path) -> None:
    from atelier.core.shared.progress import Cancelled, SilentProgress

    class Cancelling(SilentProgress):
        def check_cancel(self) -> None:
            raise Cancelled("stopped by the test")

    clip = load_clip(world["model"])
    pairs = encoder_job.read_job_pairs(encoder_job.EncoderJob(str(world["pictures"])))
    config = EncoderTrainConfig(epochs=1, batch_size=8, train="projections", val_fraction=0.25)
    with pytest.raises(Cancelled):
        encoder_trainer.train_encoder(clip.model, clip.tokenizer, clip.max_tokens, decode(pairs, clip.pixels),
                                      pairs.captions, config, tmp_path / "run", progress=Cancelling())
    assert not (tmp_path / "run" / "checkpoint").exists()
