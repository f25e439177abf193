"""SeqGAN training: maximum-likelihood pretraining, discriminator pretraining, then adversarial training.

The run is one sequence of steps on the shared loop (progress, cancel, checkpoints, a NaN stops it):
``mle_epochs`` generator epochs, ``dis_rounds`` discriminator rounds, then ``adversarial_epochs``
epochs of ``g_steps`` policy-gradient updates (rewards from ``rollouts`` Monte Carlo completions by the
generator, or by a copy trailing it when ``trail_rollout``) and ``d_steps`` discriminator rounds of ``d_epochs``
epochs each (fresh negatives every round, every positive once per round), as in the paper's reference code.
Every step draws its randomness from a seed derived from (seed, step), so a resumed run equals an
uninterrupted one.

Where this differs from the reference (LantaoYu/SeqGAN): the MLE loss sums each sequence's token NLLs and
averages over the batch (the reference averages over tokens too, a loss ``max_len`` times smaller), and the
policy-gradient loss averages over the batch (the reference sums over it, ``batch_size`` times larger). Adam
is blind to a constant scale of the loss; what the scale changes is where the gradient-norm clip of 5 bites,
which here clips the MLE gradient more often and the policy gradient less often than the reference. Batches
are reshuffled every epoch (the reference reads the positives in file order and shuffles the discriminator's
data once per round).
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ...core.dataset.augment import derive_seed
from ...core.shared import plots
from ...core.shared.progress import Progress, SilentProgress
from ...core.story.seqgan_model import (
    Generator,
    Judge,
    RolloutPolicy,
    SeqGANConfig,
    init_generator,
    make_discriminator,
    policy_gradient_loss,
    rollout_rewards,
    token_mask,
)
from ...core.story.text_generator import TextGenerator, encode_corpus
from ...core.story.text_tokens import Tokenizer, build_tokenizer
from .. import checkpoints
from ..loop import check_finite, run_steps, seeded

RESUMABLE_CHANGES = ("adversarial_epochs", "checkpoint_every")  # settings a resumed run may change


@dataclass(frozen=True)
class SeqGANTrainConfig:
    batch_size: int = 64
    mle_epochs: int = 120
    dis_rounds: int = 50
    adversarial_epochs: int = 200
    g_steps: int = 1
    d_steps: int = 5
    d_epochs: int = 3
    rollouts: int = 16
    rollout_rate: float = 0.8
    trail_rollout: bool = False  # True: a copy trailing the generator completes the rollouts (this pack's option)
    g_lr: float = 0.01
    d_lr: float = 1e-4
    d_l2: float = 0.2  # L2 weight on the discriminator's output layer, as the reference
    grad_clip: float = 5.0
    negatives: int = 0  # generated sequences per discriminator round; 0: as many as the corpus has
    seed: int = 0
    checkpoint_every: int = 10

    @property
    def steps(self) -> int:
        return self.mle_epochs + self.dis_rounds + self.adversarial_epochs

    def step_costs(self, corpus_size: int, max_len: int) -> list[int]:
        """Each step's work, in passes of one sequence through the generator (a training pass counts 3, one of the
        discriminator 6, as timed on a CPU), for a progress bar that keeps an honest ETA across phases
        (``core.progress.WeightedSteps``): with the defaults an adversarial epoch (rollouts and five discriminator
        rounds) costs about 90 maximum-likelihood epochs."""
        negatives = self.negatives or corpus_size
        costs = {"mle": 3 * corpus_size, "discriminator": negatives * (1 + 12 * self.d_epochs)}
        costs["adversarial"] = (self.g_steps * self.batch_size * (4 + 3 * self.rollouts * max_len // 2)
                                + self.d_steps * costs["discriminator"])
        return [costs[self.phase(step)] for step in range(self.steps)]

    def check(self, corpus_size: int) -> None:
        for name in ("batch_size", "g_steps", "d_epochs", "rollouts", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("mle_epochs", "dis_rounds", "adversarial_epochs", "d_steps", "negatives"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not 0.0 <= self.rollout_rate <= 1.0:
            raise ValueError(f"rollout_rate must be from 0 to 1, got {self.rollout_rate}")
        if corpus_size < self.batch_size:
            raise ValueError(f"the corpus has {corpus_size} sequence(s), fewer than one batch of {self.batch_size}: "
                             "add text or lower batch_size")

    def fingerprint(self, data: torch.Tensor, features: torch.Tensor | None = None) -> str:
        """Settings and corpus (with the works' features, for a conditioned model) a checkpoint must match; more
        adversarial epochs extend a finished run."""
        digest = hashlib.sha256(data.cpu().contiguous().numpy().tobytes())
        if features is not None:
            digest.update(features.cpu().float().contiguous().numpy().tobytes())
        digest = digest.hexdigest()[:16]
        return f"{checkpoints.fingerprint(self, RESUMABLE_CHANGES)}-{digest}"

    def phase(self, step: int) -> str:
        if step < self.mle_epochs:
            return "mle"
        return "discriminator" if step < self.mle_epochs + self.dis_rounds else "adversarial"


@dataclass
class SeqGANHistory:
    """What each step measured: NLL of the corpus under the generator (MLE steps), discriminator accuracy on
    its last round (discriminator and adversarial steps), mean reward of the policy-gradient batch."""

    step: int = 0
    nll: list[tuple[int, float]] = field(default_factory=list)
    d_accuracy: list[tuple[int, float]] = field(default_factory=list)
    reward: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class SeqGANModels:
    config: SeqGANConfig
    generator: Generator
    discriminator: Judge

    @classmethod
    def new(cls, config: SeqGANConfig, seed: int) -> "SeqGANModels":
        with seeded(derive_seed(seed, "init")):
            return cls(config, init_generator(Generator(config), seed), make_discriminator(config))

    def to(self, device: torch.device | str) -> "SeqGANModels":
        self.generator.to(device)
        self.discriminator.to(device)
        return self


def _batches(data: torch.Tensor, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Row indices of shuffled whole batches (as the reference)."""
    order = torch.randperm(data.shape[0], generator=gen, device=gen.device).cpu()  # gen lives on the model's device
    for start in range(0, data.shape[0] - batch_size + 1, batch_size):
        yield order[start:start + batch_size]


def _rows(features: torch.Tensor | None, rows: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The works' features of ``rows`` on ``device``, or None for an unconditioned model."""
    return None if features is None else features[rows].to(device)


def mle_epoch(generator: Generator, optimizer: torch.optim.Optimizer, data: torch.Tensor, batch_size: int,
              grad_clip: float, gen: torch.Generator, features: torch.Tensor | None = None) -> float:
    """One maximum-likelihood epoch; returns the mean per-sequence NLL of its batches."""
    generator.train()
    losses = []
    device = _device(generator)
    for rows in _batches(data, batch_size, gen):
        loss = generator.nll(data[rows].to(device), _rows(features, rows, device))
        check_finite(loss.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(generator.parameters(), grad_clip)
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / max(1, len(losses))


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def check_features(config: SeqGANConfig, data: torch.Tensor, features: torch.Tensor | None) -> None:
    """Features for a conditioned model, one row of ``cond_dim`` per sequence, all finite; none for another."""
    if not config.cond_dim:
        if features is not None:
            raise ValueError("features were given for a model without conditioning (cond_dim 0)")
        return
    if features is None or tuple(features.shape) != (data.shape[0], config.cond_dim):
        shape = None if features is None else tuple(features.shape)
        raise ValueError(f"a conditioned model needs {data.shape[0]} feature rows of {config.cond_dim}, got {shape}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("the works' features hold NaN or infinite values")


def _output_l2(discriminator: Judge) -> torch.Tensor:
    """The reference's L2 penalty on the output layer (TensorFlow's l2_loss: half the sum of squares), which
    keeps the discriminator from saturating and starving the generator of reward."""
    return sum(0.5 * (p ** 2).sum() for p in discriminator.output.parameters())


def corpus_rows(size: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` row indices of a corpus of ``size`` in a shuffled order, in whole passes: none is drawn twice before
    every one is drawn once (with ``count`` equal to ``size``, each exactly once, as the reference's positive
    file)."""
    passes = -(-count // size)
    return torch.cat([torch.randperm(size, generator=gen, device=gen.device) for _ in range(passes)])[:count].cpu()


def discriminator_round(models: SeqGANModels, optimizer: torch.optim.Optimizer, data: torch.Tensor,
                        config: SeqGANTrainConfig, gen: torch.Generator, features: torch.Tensor | None = None) -> float:
    """Fresh negatives from the generator against as many corpus sequences (each corpus sequence once when there
    are as many negatives as sequences, as the reference's positive file), ``d_epochs`` epochs of binary
    cross-entropy; returns the accuracy on the last epoch's batches. For a conditioned model each negative is
    written for the features of a corpus work, and D sees every text with its work's features."""
    device = _device(models.generator)
    count = config.negatives or data.shape[0]
    models.generator.eval()
    chunk = config.batch_size * 16
    # whose features each negative is written for (an unconditioned model draws nothing here)
    works = corpus_rows(data.shape[0], count, gen) if features is not None else torch.zeros(count, dtype=torch.long)
    negatives = torch.cat([models.generator.sample(min(chunk, count - done), gen,
                                                   condition=_rows(features, works[done:done + chunk], device)).cpu()
                           for done in range(0, count, chunk)])
    positive = corpus_rows(data.shape[0], count, gen)
    sequences = torch.cat([data[positive], negatives])
    conditions = None if features is None else torch.cat([features[positive], features[works]])
    labels = torch.cat([torch.ones(count), torch.zeros(count)])
    models.discriminator.train()
    correct = seen = 0
    for epoch in range(config.d_epochs):
        order = torch.randperm(sequences.shape[0], generator=gen, device=gen.device).cpu()
        for start in range(0, sequences.shape[0], config.batch_size):
            rows = order[start:start + config.batch_size]
            logits = models.discriminator(sequences[rows].to(device), _rows(conditions, rows, device))
            target = labels[rows].to(device)
            loss = F.binary_cross_entropy_with_logits(logits, target) + config.d_l2 * _output_l2(models.discriminator)
            check_finite(loss.item())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if epoch == config.d_epochs - 1:
                correct += int(((logits > 0).float() == target).sum())
                seen += rows.numel()
    return correct / max(1, seen)


def adversarial_epoch(models: SeqGANModels, rollout: RolloutPolicy, pg_optimizer: torch.optim.Optimizer,
                      d_optimizer: torch.optim.Optimizer, data: torch.Tensor, config: SeqGANTrainConfig,
                      gen: torch.Generator, features: torch.Tensor | None = None) -> tuple[float, float]:
    """``g_steps`` policy-gradient updates, the rollout policy's update, then ``d_steps`` discriminator rounds;
    returns (mean reward per token of the last generator batch, discriminator accuracy)."""
    reward = 0.0
    device = _device(models.generator)
    for _ in range(config.g_steps):
        models.generator.eval()
        condition = None if features is None else features[corpus_rows(data.shape[0], config.batch_size, gen)].to(
            device)
        samples = models.generator.sample(config.batch_size, gen, condition=condition)
        rewards = rollout_rewards(rollout.policy, models.discriminator, samples, config.rollouts, gen, condition)
        models.generator.train()
        loss = policy_gradient_loss(models.generator, samples, rewards, condition)
        check_finite(loss.item())
        pg_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models.generator.parameters(), config.grad_clip)
        pg_optimizer.step()
        mask = token_mask(samples, models.generator.config.eos_id)
        reward = float((rewards * mask).sum() / mask.sum())  # mean over the tokens that count
    rollout.update(models.generator)
    accuracy = float("nan")
    for _ in range(config.d_steps):
        accuracy = discriminator_round(models, d_optimizer, data, config, gen, features)
    return reward, accuracy


def train_seqgan(models: SeqGANModels, data: torch.Tensor, config: SeqGANTrainConfig, run_dir: Path,
                 device: torch.device | str = "cpu", progress: Progress | None = None,
                 features: torch.Tensor | None = None) -> SeqGANHistory:
    """Train (or resume from ``run_dir/checkpoint``) on ``data``: token ids ``[N, max_len]``, with each row's work's
    features ``[N, cond_dim]`` for a conditioned model."""
    config.check(data.shape[0])
    check_features(models.config, data, features)
    device = torch.device(device)
    models.to(device)
    g_optimizer = torch.optim.Adam(models.generator.parameters(), lr=config.g_lr)
    # a separate Adam for the policy gradient, as the reference: the pretraining one's second moments come
    # from likelihood gradients far larger than reward-weighted ones, and would shrink its steps to nothing
    pg_optimizer = torch.optim.Adam(models.generator.parameters(), lr=config.g_lr)
    d_optimizer = torch.optim.Adam(models.discriminator.parameters(), lr=config.d_lr)
    rollout = RolloutPolicy(models.generator, config.rollout_rate, config.trail_rollout)
    history = SeqGANHistory()
    checkpoint = run_dir / "checkpoint"
    fingerprint = config.fingerprint(data, features)
    state = checkpoints.load_matching(checkpoint, fingerprint)
    if state is not None:
        models.generator.load_state_dict(state["generator"])
        models.discriminator.load_state_dict(state["discriminator"])
        if config.trail_rollout:  # the generator rolling out for itself has no weights of its own
            rollout.policy.load_state_dict(state["rollout"])
        g_optimizer.load_state_dict(state["g_optimizer"])
        pg_optimizer.load_state_dict(state["pg_optimizer"])
        d_optimizer.load_state_dict(state["d_optimizer"])
        history = SeqGANHistory(state["step"], [tuple(p) for p in state["nll"]],
                                [tuple(p) for p in state["d_accuracy"]], [tuple(p) for p in state["reward"]])
    progress = progress or SilentProgress(config.steps)

    def save(step: int) -> None:
        checkpoints.save(checkpoint, {
            "fingerprint": fingerprint, "step": step, "generator": models.generator.state_dict(),
            "discriminator": models.discriminator.state_dict(),
            **({"rollout": rollout.policy.state_dict()} if config.trail_rollout else {}),
            "g_optimizer": g_optimizer.state_dict(), "pg_optimizer": pg_optimizer.state_dict(),
            "d_optimizer": d_optimizer.state_dict(),
            "nll": history.nll, "d_accuracy": history.d_accuracy, "reward": history.reward})

    def step(index: int) -> float:
        gen = torch.Generator(device=device).manual_seed(derive_seed(config.seed, index))
        with seeded(derive_seed(config.seed, index, "dropout")):
            phase = config.phase(index)
            if phase == "mle":
                value = mle_epoch(models.generator, g_optimizer, data, config.batch_size, config.grad_clip, gen,
                                  features)
                history.nll.append((index + 1, value))
            elif phase == "discriminator":
                value = discriminator_round(models, d_optimizer, data, config, gen, features)
                history.d_accuracy.append((index + 1, value))
            else:
                if index == config.mle_epochs + config.dis_rounds:  # the rollout policy starts from the pretrained one
                    rollout.reset(models.generator)
                reward, value = adversarial_epoch(models, rollout, pg_optimizer, d_optimizer, data, config, gen,
                                                  features)
                history.reward.append((index + 1, reward))
                history.d_accuracy.append((index + 1, value))
        history.step = index + 1
        return value

    def report(done: int, value: float) -> None:
        phase = config.phase(done - 1)
        if phase == "mle":
            progress.status(f"NLL {value:.3f}")
        elif phase == "discriminator":
            progress.status(f"D accuracy {value:.3f}")
        else:
            progress.status(f"reward {history.reward[-1][1]:.3f}  D accuracy {value:.3f}")

    run_steps(history.step, config.steps, step, save, config.checkpoint_every, progress, checkpoint, report,
              advice="Lower the learning rates.")
    models.generator.eval()
    models.discriminator.eval()
    return history


@dataclass(frozen=True)
class TextModelSpec:
    """The tokeniser and network sizes of a text generator trained on a user's corpus."""

    tokenizer: str = "word"
    max_vocab: int = 5000
    max_len: int = 32
    emb_dim: int = 64
    hidden_dim: int = 128
    discriminator: str = "cnn"  # or lstm: the seed's recurrent discriminator, voting over time steps


def run_name(name: str, spec: TextModelSpec, config: SeqGANTrainConfig, lines: list[str],
             features: torch.Tensor | None = None) -> str:
    """``<name>-<key>``: the same corpus (and works' features) and settings find the same run folder, and so
    resume."""
    settings = checkpoints.fingerprint(config, RESUMABLE_CHANGES)
    described = asdict(spec)
    if spec.discriminator == "cnn":  # keys of runs from before the choice existed stay as they were
        del described["discriminator"]
    digest = hashlib.sha256(json.dumps([lines, described, settings]).encode())
    if features is not None:
        digest.update(features.float().contiguous().numpy().tobytes())
    return f"{name}-{digest.hexdigest()[:10]}"


def _models_for(tokenizer: Tokenizer, spec: TextModelSpec, cond_dim: int, seed: int) -> SeqGANModels:
    config = SeqGANConfig(vocab_size=len(tokenizer.vocab), max_len=spec.max_len, emb_dim=spec.emb_dim,
                          hidden_dim=spec.hidden_dim, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
                          pad_id=tokenizer.pad_id, cond_dim=cond_dim, discriminator=spec.discriminator)
    return SeqGANModels.new(config, seed)


def train_text_generator(lines: list[str], spec: TextModelSpec, config: SeqGANTrainConfig, run_dir: Path,
                         device: torch.device | str = "cpu", progress: Progress | None = None,
                         features: torch.Tensor | None = None) -> tuple[TextGenerator, SeqGANModels, SeqGANHistory]:
    """Tokeniser, data and SeqGAN training from corpus lines; resumes from ``run_dir`` when it holds a run.
    ``features`` (one row per line, a work's analysis vector) conditions the generator and discriminator on it."""
    tokenizer = build_tokenizer(lines, spec.tokenizer, spec.max_vocab)
    data, kept = encode_corpus(tokenizer, lines, spec.max_len)
    config.check(data.shape[0])
    models = _models_for(tokenizer, spec, 0 if features is None else features.shape[1], config.seed)
    history = train_seqgan(models, data, config, run_dir, device, progress,
                           None if features is None else features[kept])
    return TextGenerator(models.generator, tokenizer), models, history


@torch.no_grad()
def heldout_nll(generator: Generator, data: torch.Tensor, features: torch.Tensor | None = None) -> float:
    """The generator's mean negative log-likelihood per counted token (up to and including EOS) of ``data``."""
    generator.eval()
    device = _device(generator)
    data = data.to(device)
    mask = token_mask(data, generator.config.eos_id)
    log_probs = generator.log_probs(data, None if features is None else features.to(device))
    return float(-(log_probs * mask).sum() / mask.sum())


def conditioning_gain(lines: list[str], features: torch.Tensor, spec: TextModelSpec, config: SeqGANTrainConfig,
                      heldout_share: float = 0.2, device: torch.device | str = "cpu") -> dict[str, float | int]:
    """Held-out NLL per token of the generator conditioned on the works' features against the unconditioned one,
    both trained alike on the same (seeded) split of the catalogue, with one tokeniser from the training texts."""
    if features.shape[0] != len(lines):
        raise ValueError(f"{features.shape[0]} feature rows for {len(lines)} texts")
    if not 0 < heldout_share < 1:
        raise ValueError(f"heldout_share must be between 0 and 1, got {heldout_share}")
    order = torch.randperm(len(lines), generator=torch.Generator().manual_seed(derive_seed(config.seed, "split")))
    cut = max(1, round(len(lines) * heldout_share))
    test, train = order[:cut].tolist(), order[cut:].tolist()
    tokenizer = build_tokenizer([lines[i] for i in train], spec.tokenizer, spec.max_vocab)
    data, kept = encode_corpus(tokenizer, [lines[i] for i in train], spec.max_len)
    heldout, kept_test = encode_corpus(tokenizer, [lines[i] for i in test], spec.max_len)
    train_features, test_features = features[train][kept], features[test][kept_test]
    out: dict[str, float | int] = {"train_texts": data.shape[0], "heldout_texts": heldout.shape[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for name, rows, rows_test in (("unconditional", None, None),
                                      ("conditional", train_features, test_features)):
            models = _models_for(tokenizer, spec, 0 if rows is None else rows.shape[1], config.seed)
            train_seqgan(models, data, config, Path(tmp) / name, device, features=rows)
            out[f"{name}_nll"] = round(heldout_nll(models.generator, heldout, rows_test), 4)
    return out


def history_plot(history: SeqGANHistory, max_len: int) -> Image.Image:
    """Per-token NLL through maximum-likelihood pretraining, then the adversarial reward."""
    values = [nll / max_len for _, nll in history.nll] + [1.0 - reward for _, reward in history.reward]
    return plots.loss_curve(values, title="per-token NLL (pretraining), then 1 - reward (adversarial)")
