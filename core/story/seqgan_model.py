"""SeqGAN (Yu et al., 2017): an LSTM generator trained by policy gradient against a CNN discriminator.

Follows the paper's reference code (github.com/LantaoYu/SeqGAN): a one-layer LSTM generator fed a start
token, a convolutional discriminator with several filter widths, max-over-time pooling and a highway
layer, and rewards from Monte Carlo rollouts by the generator itself. (The reference's ROLLOUT declares a
trailing copy, but its sampling graph is built on ``tf.identity`` reads of the generator's live variables and
``update_params`` makes new tensors that graph never uses, so in practice it rolls out with the generator, as
the paper's Algorithm 1 does; the trailing copy is kept here as an option of this pack.) Sequences are token
ids ``[B, max_len]``; with ``eos_id`` set a row ends at its first EOS and holds ``pad_id`` after it.
The training loop lives in ``training/seqgan_trainer.py``.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]
DISCRIMINATORS = ("cnn", "lstm")


@dataclass(frozen=True)
class SeqGANConfig:
    vocab_size: int
    max_len: int = 20  # sequence length (tokens after BOS, EOS included when used)
    emb_dim: int = 32
    hidden_dim: int = 32
    dis_emb_dim: int = 64
    filter_sizes: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20)  # as the paper's code
    num_filters: tuple[int, ...] = (100, 200, 200, 200, 200, 100, 100, 100, 100, 100, 160, 160)
    dropout: float = 0.25  # discriminator dropout probability (the reference keeps 0.75)
    bos_id: int = 1  # the start token fed at step 0
    eos_id: int | None = None  # None: fixed-length sequences (the synthetic experiment); else the end token
    pad_id: int = 0
    # conditioning on a work (claim 22): the length of its feature vector, 0 for none; projected to emb_dim and
    # added to the token embedding at every step, in the generator and in the discriminator
    cond_dim: int = 0
    discriminator: str = "cnn"  # cnn (the paper's), or lstm: logits at every step, averaged (claim 23)

    def __post_init__(self) -> None:
        if self.vocab_size < 2 or self.max_len < 1:
            raise ValueError(f"need vocab_size >= 2 and max_len >= 1, got {self.vocab_size} and {self.max_len}")
        if len(self.filter_sizes) != len(self.num_filters):
            raise ValueError(f"filter_sizes {self.filter_sizes} and num_filters {self.num_filters} differ in length")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be from 0 to below 1, got {self.dropout}")
        if self.cond_dim < 0:
            raise ValueError(f"cond_dim must be 0 (no condition) or more, got {self.cond_dim}")
        if self.discriminator not in DISCRIMINATORS:
            raise ValueError(f"discriminator must be one of {', '.join(DISCRIMINATORS)}, got {self.discriminator!r}")
        for name in ("bos_id", "eos_id", "pad_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"{name} {value} is outside the vocabulary of {self.vocab_size}")

    def to_dict(self) -> dict[str, Any]:
        """The fields, less the conditioning ones where they keep their defaults: an unconditioned model's
        description is as it was before they existed."""
        out = asdict(self)
        for name, default in (("cond_dim", 0), ("discriminator", "cnn")):
            if out[name] == default:
                del out[name]
        return out

    @property
    def extended(self) -> bool:
        """Whether the description needs the conditioning fields (and so the newer file format)."""
        return self.cond_dim > 0 or self.discriminator != "cnn"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeqGANConfig:
        values = dict(d)
        for name in ("filter_sizes", "num_filters"):  # JSON gives lists back
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def _eos_seen(sequences: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """True from each row's first EOS on, that EOS included (never without an EOS token)."""
    if eos_id is None:
        return torch.zeros_like(sequences, dtype=torch.bool)
    return (sequences == eos_id).cumsum(dim=1) > 0


def token_mask(sequences: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """True for the tokens that count: those up to and including the first EOS (all without one)."""
    seen = _eos_seen(sequences, eos_id)
    return torch.cat([torch.ones_like(seen[:, :1]), ~seen[:, :-1]], dim=1)


def _draw(logits: torch.Tensor, generator: torch.Generator | None, temperature: float, top_k: int,
          top_p: float) -> torch.Tensor:
    """One token per row of ``[N, V]`` logits, after temperature, top-k and nucleus (top-p) filtering."""
    logits = logits / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        probs = ordered.softmax(dim=-1)
        # drop a token once the more likely ones already hold top_p: the most likely one always stays
        outside = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(outside.scatter(-1, order, outside), float("-inf"))
    # inverse-CDF sampling: exact, and an order of magnitude faster than torch.multinomial on CPU rows of
    # thousands of tokens (rollouts draw [1024, 5000] at every step)
    cdf = logits.softmax(dim=-1).double().cumsum(dim=-1)
    draw = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=torch.float64) * cdf[:, -1:]
    return torch.searchsorted(cdf, draw, right=True).squeeze(1).clamp(max=cdf.shape[-1] - 1)


def _embed(embedding: nn.Embedding, projection: nn.Linear | None, inputs: torch.Tensor,
           condition: torch.Tensor | None) -> torch.Tensor:
    """Token embeddings ``[B, T, E]``, plus (for a conditioned model) the work's feature vector projected to the same
    width and added at every step: the condition reaches each step's input without widening the recurrent layer."""
    embedded = embedding(inputs)
    if projection is None:
        if condition is not None:
            raise ValueError("this model takes no condition: it was trained without a work's features")
        return embedded
    if condition is None or tuple(condition.shape) != (inputs.shape[0], projection.in_features):
        shape = None if condition is None else tuple(condition.shape)
        raise ValueError(f"this model is conditioned on a work's {projection.in_features} features: give a condition "
                         f"of shape [{inputs.shape[0]}, {projection.in_features}], got {shape}")
    return embedded + projection(condition.to(embedded)).unsqueeze(1)


class Generator(nn.Module):
    """Embedding -> one-layer LSTM -> linear over the vocabulary; step 0 is fed ``bos_id``. With
    ``config.cond_dim`` every call takes the works' feature vectors ``[B, cond_dim]`` as ``condition``."""

    def __init__(self, config: SeqGANConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.emb_dim)
        self.condition = nn.Linear(config.cond_dim, config.emb_dim) if config.cond_dim else None
        self.lstm = nn.LSTM(config.emb_dim, config.hidden_dim, batch_first=True)
        self.output = nn.Linear(config.hidden_dim, config.vocab_size)

    @property
    def _device(self) -> torch.device:
        return self.output.weight.device

    def forward(self, inputs: torch.Tensor, state: LSTMState | None = None,
                condition: torch.Tensor | None = None) -> tuple[torch.Tensor, LSTMState]:
        """``[B, T]`` input ids -> next-token logits ``[B, T, V]`` and the LSTM state after them."""
        hidden, state = self.lstm(_embed(self.embedding, self.condition, inputs, condition), state)
        return self.output(hidden), state

    def log_probs(self, sequences: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T]`` -> ``log p(y_t | BOS, y_<t)`` per token ``[B, T]`` (teacher forcing)."""
        bos = sequences.new_full((sequences.shape[0], 1), self.config.bos_id)
        logits, _ = self(torch.cat([bos, sequences[:, :-1]], dim=1), condition=condition)
        return logits.log_softmax(dim=-1).gather(-1, sequences.unsqueeze(-1)).squeeze(-1)

    def nll(self, sequences: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the batch of each sequence's negative log-likelihood, summed over its tokens up to and
        including EOS (every token for fixed-length sequences): NLL-oracle when this is the oracle."""
        mask = token_mask(sequences, self.config.eos_id)
        return -(self.log_probs(sequences, condition) * mask).sum(dim=1).mean()

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator | None = None, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, prefix: torch.Tensor | None = None, max_len: int | None = None,
               condition: torch.Tensor | None = None) -> torch.Tensor:
        """``[count, max_len]`` ids (``max_len`` defaults to the config's). ``prefix``: ``[count, P]`` or ``[P]``
        ids forced as the first tokens (returned too). With ``eos_id`` a row stops at EOS and is ``pad_id``
        after it. ``top_k=0`` and ``top_p=1`` turn those filters off. All randomness comes from ``generator``
        (on this module's device), so a seed gives the same samples on the CPU. ``condition``: ``[count,
        cond_dim]`` features for a conditioned model."""
        if temperature <= 0 or top_k < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature > 0, top_k >= 0 and 0 < top_p <= 1; "
                             f"got {temperature}, {top_k} and {top_p}")
        if prefix is None:
            prefix = torch.empty(count, 0, dtype=torch.long)
        prefix = prefix.to(self._device, torch.long)
        if prefix.dim() == 1:
            prefix = prefix.expand(count, -1)
        if prefix.shape[0] != count:
            raise ValueError(f"the prefix has {prefix.shape[0]} rows for {count} samples")
        return self._extend(prefix, max_len or self.config.max_len, generator, temperature, top_k, top_p, condition)

    @torch.no_grad()
    def complete(self, prefixes: torch.Tensor, generator: torch.Generator | None = None,
                 condition: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, t]`` -> ``[N, max_len]``: the prefixes, completed by sampling at temperature 1 (rollouts)."""
        return self._extend(prefixes.to(self._device, torch.long), self.config.max_len, generator, condition=condition)

    def _extend(self, prefix: torch.Tensor, length: int, generator: torch.Generator | None,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        """All rows at once: one LSTM pass over BOS + prefix, then one step per new token."""
        count, given = prefix.shape
        if given > length:
            raise ValueError(f"the prefix has {given} tokens, more than the length {length}")
        eos, pad = self.config.eos_id, self.config.pad_id
        out = torch.full((count, length), pad, dtype=torch.long, device=prefix.device)
        out[:, :given] = prefix
        ended = _eos_seen(prefix, eos).any(dim=1)
        if condition is not None:
            condition = condition.to(self._device)
        logits, state = self(torch.cat([prefix.new_full((count, 1), self.config.bos_id), prefix], dim=1),
                             condition=condition)
        for t in range(given, length):
            token = _draw(logits[:, -1], generator, temperature, top_k, top_p).masked_fill(ended, pad)
            out[:, t] = token
            if eos is not None:
                ended |= token == eos
            if t + 1 == length or (eos is not None and bool(ended.all())):
                break
            logits, state = self(token.unsqueeze(1), state, condition)
        return out


def _init_normal(generator: Generator, std: float, seed: int) -> Generator:
    rng = torch.Generator().manual_seed(seed)  # a CPU stream: the same weights whatever the device
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.startswith("lstm.bias_hh"):
                # PyTorch's LSTM adds two biases per gate; the reference has one, so keep one and zero the other
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=rng).to(param) * std)
    return generator


def init_oracle(generator: Generator, seed: int) -> Generator:
    """The paper's oracle: every weight ~ N(0, 1), one bias per gate (see ``_init_normal``); seeded."""
    return _init_normal(generator, 1.0, seed)


def init_generator(generator: Generator, seed: int) -> Generator:
    """The reference code's generator initialisation: every weight ~ N(0, 0.1), one bias per gate; seeded."""
    return _init_normal(generator, 0.1, seed)


class Judge(nn.Module):
    """What every discriminator gives: a logit per sequence (``forward``) and its probability of being real."""

    def prob_real(self, sequences: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``sigmoid(forward)`` in the module's current mode: dropout applies in training mode, so
        switch it to eval mode first for a deterministic score (``rollout_rewards`` does)."""
        return torch.sigmoid(self(sequences) if condition is None else self(sequences, condition))


class Discriminator(Judge):
    """CNN over token embeddings: filters of several widths, max-over-time pooling, a highway layer,
    dropout, and a linear layer to one logit (high = real). Sequences are ``[B, max_len]``; filter widths
    wider than ``max_len`` could never fit and are left out (at least one must remain). A conditioned one adds
    the work's projected features to every token embedding, as the generator does, so it judges a text as the
    text of that work."""

    def __init__(self, config: SeqGANConfig) -> None:
        super().__init__()
        self.config = config
        self.condition = nn.Linear(config.cond_dim, config.dis_emb_dim) if config.cond_dim else None
        kept = [(width, n) for width, n in zip(config.filter_sizes, config.num_filters) if width <= config.max_len]
        if not kept:
            raise ValueError(f"no discriminator filter fits sequences of {config.max_len} tokens: "
                             f"filter_sizes {config.filter_sizes} are all wider")
        features = sum(n for _, n in kept)
        self.embedding = nn.Embedding(config.vocab_size, config.dis_emb_dim)
        self.convs = nn.ModuleList(nn.Conv1d(config.dis_emb_dim, n, width) for width, n in kept)
        self.highway = nn.Linear(features, features)
        self.gate = nn.Linear(features, features)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(features, 1)
        # the reference's initialisation; positive conv biases keep the ReLUs alive at the start
        nn.init.uniform_(self.embedding.weight, -1.0, 1.0)
        for layer in (*self.convs, self.output):
            nn.init.trunc_normal_(layer.weight, std=0.1, a=-0.2, b=0.2)
        for conv in self.convs:
            nn.init.constant_(conv.bias, 0.1)
        nn.init.zeros_(self.output.bias)

    def forward(self, sequences: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T]`` ids -> logits ``[B]``."""
        x = _embed(self.embedding, self.condition, sequences, condition).transpose(1, 2)  # Conv1d: [B, channels, T]
        pooled = torch.cat([conv(x).relu().amax(dim=2) for conv in self.convs], dim=1)
        gate = torch.sigmoid(self.gate(pooled))
        mixed = gate * self.highway(pooled).relu() + (1 - gate) * pooled
        return self.output(self.dropout(mixed)).squeeze(1)


class LSTMDiscriminator(Judge):
    """The seed's recurrent discriminator (claim 23): an LSTM over the token embeddings (the work's projected
    features added at every step when conditioned) gives a logit at every step, and the sequence's logit is their
    mean over the steps that count (up to and including EOS), so every time step votes."""

    def __init__(self, config: SeqGANConfig) -> None:
        super().__init__()
        self.config = config
        self.condition = nn.Linear(config.cond_dim, config.dis_emb_dim) if config.cond_dim else None
        self.embedding = nn.Embedding(config.vocab_size, config.dis_emb_dim)
        self.lstm = nn.LSTM(config.dis_emb_dim, config.hidden_dim, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_dim, 1)
        nn.init.uniform_(self.embedding.weight, -1.0, 1.0)
        nn.init.zeros_(self.output.bias)

    def forward(self, sequences: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        hidden, _ = self.lstm(_embed(self.embedding, self.condition, sequences, condition))
        votes = self.output(self.dropout(hidden)).squeeze(-1)  # [B, T]: one logit per step
        mask = token_mask(sequences, self.config.eos_id).to(votes)
        return (votes * mask).sum(dim=1) / mask.sum(dim=1)


def make_discriminator(config: SeqGANConfig) -> Judge:
    """The discriminator ``config.discriminator`` names."""
    return LSTMDiscriminator(config) if config.discriminator == "lstm" else Discriminator(config)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(training)


class RolloutPolicy:
    """Who completes the rollouts. ``trail=False`` (the default): the generator itself, as the paper's Algorithm 1
    and, in effect, the reference code (see the module's note). ``trail=True``, this pack's option: a copy that
    trails the generator, ``own = rate * own + (1 - rate) * generator`` for the recurrent and output units after
    each generator update, the embedding copied as it is (what the reference's ``update_params`` writes down but
    never feeds to its sampling graph)."""

    def __init__(self, generator: Generator, rate: float = 0.8, trail: bool = False) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be from 0 to 1, got {rate}")
        self.rate = rate
        self.trail = trail
        self._generator = generator
        self._own = copy.deepcopy(generator).requires_grad_(False) if trail else None

    def update(self, generator: Generator) -> None:
        if self._own is None:
            self._generator = generator
            return
        own = dict(self._own.named_parameters())
        with torch.no_grad():
            for name, param in generator.named_parameters():
                if name.startswith("embedding."):
                    own[name].copy_(param)
                else:
                    own[name].mul_(self.rate).add_(param, alpha=1.0 - self.rate)

    def reset(self, generator: Generator) -> None:
        """Start trailing from ``generator`` as it is now (after pretraining, say)."""
        if self._own is None:
            self._generator = generator
            return
        self._own.load_state_dict(generator.state_dict())

    @property
    def policy(self) -> Generator:
        return self._generator if self._own is None else self._own


@torch.no_grad()
def rollout_rewards(policy: Generator, discriminator: Judge, sequences: torch.Tensor, num_rollouts: int = 16,
                    generator: torch.Generator | None = None, condition: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, T]`` -> rewards ``[B, T]`` in [0, 1]. For token t < T: the mean over ``num_rollouts`` completions
    of y_1..y_t by ``policy`` of D's probability of 'real'; for the last token: D's probability of the whole
    sequence. For each t all B * num_rollouts completions are drawn in one ``policy.complete`` call. With
    ``eos_id``, a prefix that already holds EOS is scored as it is (its completion is only padding) and the
    tokens after EOS get 0. D runs in eval mode (no dropout); its mode is restored afterwards. ``condition``: the
    works' features ``[B, cond_dim]``, given to the policy and D with every completion of its row."""
    if num_rollouts < 1:
        raise ValueError(f"num_rollouts must be at least 1, got {num_rollouts}")
    length, eos = sequences.shape[1], policy.config.eos_id
    if length != policy.config.max_len:
        raise ValueError(f"sequences have {length} tokens, the policy completes to {policy.config.max_len}")
    ended = _eos_seen(sequences, eos)
    with _eval_mode(discriminator):
        rewards = discriminator.prob_real(sequences, condition).unsqueeze(1).repeat(1, length)
        for t in range(1, length):
            live = ~ended[:, t - 1]
            if not live.any():  # every row has ended: the rest keeps D(sequence), then 0
                break
            prefixes = sequences[live, :t].repeat_interleave(num_rollouts, dim=0)
            rows = None if condition is None else condition[live].repeat_interleave(num_rollouts, dim=0)
            scores = discriminator.prob_real(policy.complete(prefixes, generator, rows), rows)
            rewards[live, t - 1] = scores.view(-1, num_rollouts).mean(dim=1)
    return rewards.masked_fill(~token_mask(sequences, eos), 0.0)


def policy_gradient_loss(generator: Generator, sequences: torch.Tensor, rewards: torch.Tensor,
                         condition: torch.Tensor | None = None) -> torch.Tensor:
    """REINFORCE: ``-sum_t log G(y_t | y_<t) * reward_t`` over the counted tokens, averaged over the batch.
    Rewards are constants (no gradient flows into them)."""
    mask = token_mask(sequences, generator.config.eos_id)
    return -(generator.log_probs(sequences, condition) * rewards.detach() * mask).sum(dim=1).mean()
