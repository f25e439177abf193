"""Contrastive fine-tuning of an image-text encoder (CLIPModel or VisionTextDualEncoderModel) on caption-picture
pairs.

The loss is CLIP's: unit image and text embeddings, logits ``exp(logit_scale) * text @ image.T`` over the
batch, cross-entropy text-to-image and image-to-text, averaged; ``logit_scale`` (the learnable inverse
temperature) is clamped to ``[0, ln 100]`` after every update, as CLIP training does. A batch holds distinct
pictures with one caption each, rotating through a picture's captions epoch by epoch: so another caption
of the same picture is never a negative, and the loss is exactly transformers' ``image_text_contrastive_loss``
(the in-batch diagonal is the only positive).

Which parts train: ``projections`` (both projections and ``logit_scale``; the towers stay frozen and in eval
mode, so their outputs are computed once and reused), ``last_n`` (plus the last N layers of each tower and
what follows them: final norm, pooler), or ``all``. AdamW (no decay on biases, norms and ``logit_scale``),
linear warm-up, then constant or cosine. Step ``s`` draws everything from ``derive_seed(seed, ...)`` (picture
order per epoch, dropout per step), and a checkpoint holds the trained weights, the optimizer, the step and
the curves, so a resumed run equals one that never stopped. The held-out split is by picture.

Data-parallel as the other trainers are (training/distributed.py), with one difference: the loss's negatives
are the whole global batch. Each rank encodes only its share of the step's pictures and captions, the ranks
gather every embedding with autograd (``torch.distributed.nn.functional.all_gather``, whose backward sums
each row's gradient back to the rank that encoded it), and every rank computes the same full-batch loss.
As all W ranks backpropagate that loss, each row's gathered gradient counts it W times: each rank
backpropagates ``loss / W``, and ``reduce_gradients`` sums the ranks' parameter gradients into the
one-process gradient. Held-out scores are computed by every rank alike (frozen, eval mode). Dropout where
weights train (``train`` all or last_n) draws its masks per rank, so those runs differ from one process's
by the masks alone, as LoRA dropout does; without dropout they agree up to the order of float additions.
"""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.curator.retrieval import evaluate, ranks
from ...core.dataset.augment import derive_seed
from ...core.shared import plots
from ...core.shared.progress import Progress, SilentProgress
from .. import checkpoints, distributed
from ..loop import batching, check_finite, run_steps, seeded, split

PARTS = ("projections", "last_n", "all")
SCHEDULES = ("constant", "cosine")
PRECISIONS = ("fp32", "bf16")
CUTOFFS = (1, 5, 10)
MAX_LOGIT_SCALE = math.log(100.0)
# what follows a tower's last layer on the way to its projection (CLIP's norms, ViT's norm, BERT's pooler)
HEADS = ("post_layernorm", "final_layer_norm", "layernorm", "pooler")


@dataclass(frozen=True)
class EncoderTrainConfig:
    epochs: int = 25
    batch_size: int = 128
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 0
    schedule: str = "constant"
    train: str = "all"
    last_n: int = 2
    val_fraction: float = 0.1
    seed: int = 0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        checkpoints.require([
            (self.epochs >= 1, "epochs must be at least 1"), (self.batch_size >= 2, "batch_size must be at least 2"),
            (self.lr > 0, "lr must be above 0"), (self.weight_decay >= 0, "weight_decay must not be negative"),
            (self.warmup_steps >= 0, "warmup_steps must not be negative"),
            (self.schedule in SCHEDULES, f"schedule: {SCHEDULES}"), (self.train in PARTS, f"train: {PARTS}"),
            (self.last_n >= 1, "last_n must be at least 1"),
            (0 < self.val_fraction < 1, "val_fraction must lie between 0 and 1"),
            (self.precision in PRECISIONS, f"precision: {PRECISIONS}"),
        ])

    def fingerprint(self) -> str:
        return checkpoints.fingerprint(self, free=())


@dataclass
class EncoderTrainResult:
    model: Any  # the fine-tuned transformers model (on the training device, eval mode)
    history: list[dict[str, float]]  # per epoch: train/held-out loss and in-batch accuracy both ways
    before: dict[str, float]  # held-out text-to-image MRR@K and recall@K before training
    after: dict[str, float]
    resumed_from: int
    notes: list[str] = field(default_factory=list)
    resumed: str = ""  # distributed.resume_note


def contrastive(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                logit_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CLIP's symmetric loss over a batch whose row ``i`` of each side is a pair, and the in-batch accuracy
    ``(image->text, text->image)``: the share of rows whose own pair scores highest."""
    image = image_embeds.float() / image_embeds.float().norm(dim=-1, keepdim=True)
    text = text_embeds.float() / text_embeds.float().norm(dim=-1, keepdim=True)
    logits_per_text = text @ image.T * logit_scale.float().exp()
    labels = torch.arange(len(text), device=text.device)
    loss = (F.cross_entropy(logits_per_text, labels) + F.cross_entropy(logits_per_text.T, labels)) / 2
    with torch.no_grad():
        text_to_image = (logits_per_text.argmax(dim=1) == labels).float().mean()
        image_to_text = (logits_per_text.argmax(dim=0) == labels).float().mean()
    return loss, image_to_text, text_to_image


def learning_rate(config: EncoderTrainConfig, step: int, total: int) -> float:
    """Linear warm-up from 0, then constant or cosine down to 0 (transformers' schedules of those names)."""
    if step < config.warmup_steps:
        return config.lr * step / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _layers(tower: nn.Module) -> nn.ModuleList:
    """A tower's stack of transformer layers: its longest ``layer``/``layers`` module list."""
    stacks = [m for name, m in tower.named_modules() if isinstance(m, nn.ModuleList)
              and name.rsplit(".", 1)[-1] in ("layer", "layers")]
    if not stacks:
        raise ValueError(f"cannot find the layers of the {type(tower).__name__} tower; train 'projections' or 'all'")
    return max(stacks, key=len)


def trainable_modules(model: nn.Module, train: str, last_n: int) -> list[nn.Module]:
    """The modules whose weights train (``logit_scale`` always does)."""
    chosen: list[nn.Module] = [model.visual_projection, model.text_projection]
    if train == "all":
        return [model]
    if train == "last_n":
        for what, tower in (("vision", model.vision_model), ("text", model.text_model)):
            layers = _layers(tower)
            if last_n > len(layers):
                raise ValueError(f"last_n is {last_n} but the {what} tower has {len(layers)} layer(s): train at "
                                 f"most {len(layers)}, or train 'all'")
            chosen += list(layers[-last_n:])
            chosen += [m for name, m in tower.named_children() if name in HEADS]
    return chosen


def check_settings(model: nn.Module, config: EncoderTrainConfig, pictures: int) -> None:
    """What would stop a run, said before any picture is decoded: too few pictures, too deep a ``last_n``."""
    if pictures < 4:
        raise ValueError(f"{pictures} captioned picture(s): at least 4 are needed (2 to train on, 2 held out to "
                         "measure retrieval); add pictures with captions")
    trainable_modules(model, config.train, config.last_n)


def widths_note(model: nn.Module) -> str:
    config = model.config
    return (f"text tower {config.text_config.hidden_size}-d, vision tower {config.vision_config.hidden_size}-d, "
            f"joined at {config.projection_dim}-d by the projections")


class Captions:
    """Every caption tokenized once (cut to the text tower's limit), padded into batches on demand."""

    def __init__(self, tokenizer: Any, captions: list[list[str]], limit: int) -> None:
        flat = [text for texts in captions for text in texts]
        self.tokenizer = tokenizer
        self.count = torch.tensor([len(t) for t in captions])
        self.first = self.count.cumsum(0) - self.count  # picture i's captions are rows first[i] .. first[i] + count[i]
        lengths = [len(ids) for ids in tokenizer(flat)["input_ids"]]
        self.truncated = sum(1 for n in lengths if n > limit)
        self.ids = tokenizer(flat, truncation=True, max_length=limit)["input_ids"]
        self.korean = torch.tensor([any("\uac00" <= ch <= "\ud7a3" for ch in text) for text in flat])
        self.limit = limit

    def batch(self, flat_rows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        padded = self.tokenizer.pad({"input_ids": [self.ids[i] for i in flat_rows.tolist()]}, padding=True,
                                    return_tensors="pt")
        return padded["input_ids"].to(device), padded["attention_mask"].to(device)


class Encoder:
    """Image and text embeddings (projected, not yet unit-length) of pictures and captions by row; with frozen
    towers the towers' outputs are computed once and reused."""

    def __init__(self, model: nn.Module, pixels: torch.Tensor, captions: Captions, device: torch.device,
                 precision: str, cache: bool, batch: int, progress: Progress | None = None) -> None:
        self.model, self.pixels, self.captions, self.device = model, pixels, captions, device
        self.autocast = precision == "bf16"
        self.cached: tuple[torch.Tensor, torch.Tensor] | None = None
        if cache:
            self.cached = (self._run_once(self._image_tower, len(pixels), batch, progress),
                           self._run_once(self._text_tower, len(captions.ids), batch, progress))

    def _run_once(self, tower: Any, count: int, batch: int, progress: Progress | None) -> torch.Tensor:
        """A frozen tower over every row, before the first step (so a cancel may stop it between batches)."""
        out = []
        with torch.no_grad(), self.precision():
            for rows in torch.arange(count).split(batch):
                if progress is not None:
                    progress.check_cancel()
                out.append(tower(rows).float())
        return torch.cat(out)

    @contextlib.contextmanager
    def precision(self) -> Iterator[None]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            yield

    def _image_tower(self, rows: torch.Tensor) -> torch.Tensor:
        return self.model.vision_model(pixel_values=self.pixels[rows].to(self.device, torch.float32)).pooler_output

    def _text_tower(self, flat_rows: torch.Tensor) -> torch.Tensor:
        ids, mask = self.captions.batch(flat_rows, self.device)
        return self.model.text_model(input_ids=ids, attention_mask=mask).pooler_output

    def images(self, rows: torch.Tensor) -> torch.Tensor:
        pooled = self.cached[0][rows].to(self.device) if self.cached else self._image_tower(rows)
        return self.model.visual_projection(pooled)

    def texts(self, flat_rows: torch.Tensor) -> torch.Tensor:
        pooled = self.cached[1][flat_rows].to(self.device) if self.cached else self._text_tower(flat_rows)
        return self.model.text_projection(pooled)


class Plan:
    """Which pictures and captions step ``s`` trains on: a seeded permutation of the training pictures per
    epoch, cut into batches (a partial last batch is dropped), and for each picture its captions in turn from
    a seeded start."""

    def __init__(self, train_rows: torch.Tensor, batch: int, captions: Captions, seed: int) -> None:
        self.train_rows, self.batch_size, self.captions, self.seed = train_rows, batch, captions, seed
        self.per_epoch = len(train_rows) // batch
        self.starts = torch.cat([torch.randint(0, int(k), (1,), generator=torch.Generator().manual_seed(
            derive_seed(seed, "caption", i))) for i, k in enumerate(captions.count.tolist())])

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(picture rows, caption rows)`` of step ``step``."""
        epoch, within = divmod(step, self.per_epoch)
        order = torch.randperm(len(self.train_rows), generator=torch.Generator().manual_seed(
            derive_seed(self.seed, "epoch", epoch)))
        rows = self.train_rows[order[within * self.batch_size:(within + 1) * self.batch_size]]
        return rows, self.captions.first[rows] + (self.starts[rows] + epoch) % self.captions.count[rows]


def gathered(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """Every rank's ``rows`` (its ``take_share`` of a global batch of ``batch``) in rank order, with autograd: a
    row's gradient goes back, summed over the ranks, to the rank that computed it. ``rows`` itself in one
    process. Shares differ by one row when ``batch`` does not split evenly, so each is padded to the largest."""
    if not distributed.active():
        return rows
    from torch.distributed.nn.functional import all_gather

    world = distributed.world_size()
    largest = math.ceil(batch / world)
    padded = F.pad(rows, (0, 0, 0, largest - len(rows)))
    with warnings.catch_warnings():  # deprecated in favour of the private torch.distributed._functional_collectives
        warnings.simplefilter("ignore", FutureWarning)
        with distributed.collective():
            parts = all_gather(padded)
    return torch.cat([part[:len(range(r, batch, world))] for r, part in enumerate(parts)])


def _modes(model: nn.Module, trainable: list[nn.Module]) -> None:
    """Dropout only where weights train: frozen parts give the same output every time."""
    model.eval()
    for module in trainable:
        module.train()


def _param_groups(model: nn.Module, config: EncoderTrainConfig) -> list[dict[str, Any]]:
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for _, p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0}]


@torch.no_grad()
def held_out_scores(encoder: Encoder, rows: torch.Tensor, batch: int, rounds: int) -> dict[str, float]:
    """In-batch loss and accuracy both ways over the held-out pictures (batches of about ``batch``, each
    picture with its caption ``r`` for every round ``r``), and text-to-image MRR@K / recall@K of all their
    captions against all of them."""
    model, captions = encoder.model, encoder.captions
    sums = torch.zeros(3)
    chunks = rows.tensor_split(max(1, math.ceil(len(rows) / batch)))
    with encoder.precision():
        for r in range(rounds):
            for chunk in chunks:
                flat = captions.first[chunk] + r % captions.count[chunk]
                loss, i2t, t2i = contrastive(encoder.images(chunk), encoder.texts(flat), model.logit_scale)
                sums += torch.tensor([loss.item(), i2t.item(), t2i.item()])
        images = F.normalize(torch.cat([encoder.images(c).float() for c in rows.split(batch)]), dim=-1).cpu()
        flat = torch.cat([captions.first[p] + torch.arange(int(captions.count[p])) for p in rows.tolist()])
        texts = F.normalize(torch.cat([encoder.texts(c).float() for c in flat.split(batch)]), dim=-1).cpu()
    targets = [i for i, p in enumerate(rows.tolist()) for _ in range(int(captions.count[p]))]
    rank_list = ranks(texts, images, targets)
    scores = {"loss": float(sums[0]) / (rounds * len(chunks)), "acc_i2t": float(sums[1]) / (rounds * len(chunks)),
              "acc_t2i": float(sums[2]) / (rounds * len(chunks)), "queries": len(targets)}
    for k in CUTOFFS:
        measured = evaluate(rank_list, k)
        scores[f"mrr@{k}"], scores[f"recall@{k}"] = measured.mrr, measured.recall
    korean = captions.korean[flat].tolist()
    if any(korean) and not all(korean):  # both kinds of query: how each fares
        for name, wanted in (("korean", True), ("other", False)):
            scores[f"mrr@10 {name}"] = evaluate([r for r, k in zip(rank_list, korean) if k == wanted], 10).mrr
    return scores


def chance_mrr(pictures: int, k: int) -> float:
    """MRR@K of a random ranking of ``pictures``: each rank 1..N equally likely."""
    return sum(1.0 / r for r in range(1, min(k, pictures) + 1)) / pictures


def train_encoder(model: nn.Module, tokenizer: Any, text_limit: int, pixels: torch.Tensor,
                  captions: list[list[str]], config: EncoderTrainConfig, run_dir: Path,
                  device: torch.device | str = "cpu", progress: Progress | None = None) -> EncoderTrainResult:
    """Fine-tune a copy of ``model`` (or resume from ``run_dir/checkpoint``) on pictures ``pixels`` (normalised
    ``[N, 3, S, S]``) whose captions are ``captions[i]``; ``model`` itself is left as it was."""
    device = torch.device(device)
    n = len(captions)
    check_settings(model, config, n)
    train_rows, val_rows = split(n, config.val_fraction, config.seed)
    batch, per_epoch = batching(len(train_rows), config.batch_size)
    distributed.check_batch(batch)
    total = config.epochs * per_epoch
    notes = [widths_note(model),
             f"{len(train_rows)} pictures train, {len(val_rows)} held out (split by picture, seed {config.seed})",
             "each step takes distinct pictures with one caption each, rotating through every picture's captions "
             "epoch by epoch, so no caption of the same picture is a negative"]
    if batch < config.batch_size:
        notes.append(f"only {len(train_rows)} training pictures: the batch shrinks from {config.batch_size} to "
                     f"{batch} (in-batch accuracy is then out of {batch} candidates)")
    model = copy.deepcopy(model).to(device, torch.float32)
    model.requires_grad_(False)
    trainable = trainable_modules(model, config.train, config.last_n)
    for module in trainable:
        module.requires_grad_(True)
    model.logit_scale.requires_grad_(True)
    text = Captions(tokenizer, captions, text_limit)
    if text.truncated:
        notes.append(f"{text.truncated} caption(s) are longer than the text tower's {text_limit} tokens and were "
                     "cut to it (the rest of each is not seen)")
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    notes.append(f"training {config.train}{f' (last {config.last_n} layers)' if config.train == 'last_n' else ''}: "
                 f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} of "
                 f"{sum(p.numel() for p in model.parameters()):,} weights")
    optimizer = torch.optim.AdamW(_param_groups(model, config), lr=config.lr)
    checkpoint = run_dir / "checkpoint"
    state = distributed.load_checkpoint(checkpoint, config.fingerprint())
    _modes(model, [])
    encoder = Encoder(model, pixels, text, device, config.precision, config.train == "projections", batch, progress)
    rounds = int(text.count[val_rows].max())
    first, history, sums, resumed = 0, [], [0.0, 0.0, 0.0], ""
    if state is not None:
        own = dict(model.named_parameters())
        with torch.no_grad():
            for name in names:
                own[name].copy_(state["trainable"][name])
        optimizer.load_state_dict(state["optimizer"])
        first, history, sums, before = int(state["step"]), list(state["history"]), list(state["sums"]), \
            dict(state["before"])
        resumed = distributed.resume_note(first, state.get("world_size", 1))
    else:
        before = held_out_scores(encoder, val_rows, batch, rounds)
    params = [p for p in model.parameters() if p.requires_grad]
    distributed.broadcast_parameters(params)
    plan = Plan(train_rows, batch, text, config.seed)

    def save(step: int) -> None:
        if not distributed.is_main():  # every rank holds the same weights and optimizer
            return
        own = dict(model.named_parameters())
        checkpoints.save(checkpoint, {"fingerprint": config.fingerprint(), "step": step, "history": history,
                                      "sums": sums, "before": before, "optimizer": optimizer.state_dict(),
                                      "trainable": {name: own[name] for name in names},
                                      "world_size": distributed.world_size()})

    def step(index: int) -> float:
        epoch, within = divmod(index, per_epoch)
        rows, flat = distributed.take_share(batch, *plan.batch(index))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, index, total)
        _modes(model, trainable)
        with seeded(derive_seed(config.seed, "step", index)), encoder.precision():
            # gathered in fp32 (what the loss computes in): gloo's collectives need not know bf16
            loss, i2t, t2i = contrastive(gathered(encoder.images(rows).float(), batch),
                                         gathered(encoder.texts(flat).float(), batch), model.logit_scale)
        check_finite(loss.item())
        optimizer.zero_grad(set_to_none=True)
        # every rank backpropagates the same loss: 1/W of it each, summed by reduce_gradients (module docstring)
        share = loss / distributed.world_size()
        share.backward()
        distributed.reduce_gradients(params, share.detach())
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
        for i, value in enumerate((loss.item(), i2t.item(), t2i.item())):
            sums[i] += value
        if within == per_epoch - 1:  # the epoch is over: measure before the checkpoint is written
            _modes(model, [])
            held = held_out_scores(encoder, val_rows, batch, rounds)
            history.append({"epoch": epoch + 1, "train_loss": sums[0] / per_epoch, "train_acc_i2t": sums[1] / per_epoch,
                            "train_acc_t2i": sums[2] / per_epoch, "val_loss": held["loss"],
                            "val_acc_i2t": held["acc_i2t"], "val_acc_t2i": held["acc_t2i"],
                            "val_mrr@10": held["mrr@10"]})
            sums[:] = [0.0, 0.0, 0.0]
        return loss.item()

    def report(done: int, loss: float) -> None:
        if done % per_epoch == 0:
            h = history[-1]
            progress.status(f"epoch {h['epoch']}: loss {h['train_loss']:.3f}/{h['val_loss']:.3f}, "
                            f"held-out MRR@10 {h['val_mrr@10']:.3f}")
        else:
            progress.status(f"loss {loss:.4f}")

    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    progress = progress or SilentProgress(total)
    run_steps(first, total, step, save, per_epoch, progress, checkpoint, report,
              advice="Lower the learning rate, or train fewer parts.")
    _modes(model, [])
    after = held_out_scores(encoder, val_rows, batch, rounds)
    notes.append(f"chance MRR@10 among {len(val_rows)} held-out pictures: {chance_mrr(len(val_rows), 10):.3f}")
    return EncoderTrainResult(model, history, before, after, first, notes, resumed)


def retrieval_lines(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """Held-out text-to-image MRR@K and recall@K, before and after."""
    def row(scores: dict[str, float]) -> str:
        return (" / ".join(f"{scores[f'mrr@{k}']:.3f}" for k in CUTOFFS) + ", recall@1/5/10 "
                + " / ".join(f"{scores[f'recall@{k}']:.3f}" for k in CUTOFFS))

    lines = [f"held-out text-to-image retrieval over {int(after['queries'])} captions:",
             f"  before: MRR@1/5/10 {row(before)}", f"  after:  MRR@1/5/10 {row(after)}"]
    if "mrr@10 korean" in after:
        lines.append(f"  MRR@10 of the Korean captions {before['mrr@10 korean']:.3f} -> {after['mrr@10 korean']:.3f}, "
                     f"of the others {before['mrr@10 other']:.3f} -> {after['mrr@10 other']:.3f}")
    return lines


def epoch_lines(history: list[dict[str, float]]) -> list[str]:
    return [f"epoch {h['epoch']}: loss {h['train_loss']:.4f} train / {h['val_loss']:.4f} held out; in-batch accuracy "
            f"image->text {h['train_acc_i2t']:.3f} / {h['val_acc_i2t']:.3f}, text->image {h['train_acc_t2i']:.3f} / "
            f"{h['val_acc_t2i']:.3f}" for h in history]


def curves(history: list[dict[str, float]]):  # -> PIL.Image.Image
    """Loss and in-batch accuracy per epoch, train and held out, and held-out MRR@10."""
    def series(key: str) -> list[float]:
        return [h[key] for h in history]

    return plots.line_charts([
        ("contrastive loss", {"train": series("train_loss"), "held out": series("val_loss")}),
        ("in-batch accuracy", {"train image->text": series("train_acc_i2t"), "train text->image":
                               series("train_acc_t2i"), "held-out image->text": series("val_acc_i2t"),
                               "held-out text->image": series("val_acc_t2i")}),
        ("held-out text-to-image MRR@10", {"held out": series("val_mrr@10")}),
    ])
