"""SeqGAN model on tiny networks: likelihoods, sampling, Monte Carlo rollout rewards, the policy gradient,
the trailing rollout policy and the initialisations."""
from __future__ import annotations

import json

import pytest
import torch

from atelier.core.story import seqgan_model as sg

VOCAB, LENGTH, EOS = 20, 8, 2


def _config(**changes: object) -> sg.SeqGANConfig:
    values = dict(vocab_size=VOCAB, max_len=LENGTH, emb_dim=16, hidden_dim=16, dis_emb_dim=8, filter_sizes=(2, 3),
                  num_filters=(8, 8))
    return sg.SeqGANConfig(**{**values, **changes})


def _oracle(seed: int = 0, **changes: object) -> sg.Generator:
    """N(0, 1) weights: peaked distributions that differ from step to step."""
    return sg.init_oracle(sg.Generator(_config(**changes)), seed)


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _TableD(sg.Discriminator):
    """A fixed discriminator: P(real) = table[token at `column`]."""

    def __init__(self, config: sg.SeqGANConfig, table: torch.Tensor, column: int) -> None:
        super().__init__(config)
        self.table, self.column = table, column

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        return torch.logit(self.table[sequences[:, self.column]])


def _first_token_d(config: sg.SeqGANConfig) -> _TableD:
    table = torch.full((config.vocab_size,), 0.05)
    table[5] = 0.95  # 'real' sequences start with token 5
    return _TableD(config, table, 0)


def _greedy(generator: sg.Generator, first: torch.Tensor) -> torch.Tensor:
    """Argmax decoding after the given first tokens [N]."""
    tokens = [first]
    logits, state = generator(torch.stack([torch.full_like(first, generator.config.bos_id), first], dim=1))
    for _ in range(LENGTH - 1):
        tokens.append(logits[:, -1].argmax(dim=-1))
        logits, state = generator(tokens[-1].unsqueeze(1), state)
    return torch.stack(tokens, dim=1)


def _spy_complete(monkeypatch: pytest.MonkeyPatch, policy: sg.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    complete = policy.complete

    def spy(prefixes: torch.Tensor, generator: torch.Generator | None = None,
            condition: torch.Tensor | None = None) -> torch.Tensor:
        out = complete(prefixes, generator, condition)
        calls.append((prefixes.clone(), out.clone()))
        return out

    monkeypatch.setattr(policy, "complete", spy)
    return calls


def test_config_round_trips_through_json() -> None:
    config = _config(eos_id=EOS, dropout=0.5)
    assert sg.SeqGANConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="differ in length"):
        _config(num_filters=(8,))


def test_discriminator_skips_filters_wider_than_the_sequence() -> None:
    d = sg.Discriminator(_config(filter_sizes=(2, 3, 9, 20), num_filters=(8, 8, 8, 8)))
    assert [conv.kernel_size[0] for conv in d.convs] == [2, 3]
    probs = d.prob_real(torch.randint(0, VOCAB, (5, LENGTH)))
    assert probs.shape == (5,) and bool(((probs > 0) & (probs < 1)).all())
    with pytest.raises(ValueError, match="no discriminator filter fits sequences of 8 tokens"):
        sg.Discriminator(_config(filter_sizes=(9, 20), num_filters=(8, 8)))


def test_log_probs_are_the_step_by_step_predictions_after_bos() -> None:
    generator = _oracle()
    sequences = torch.randint(0, VOCAB, (3, LENGTH))
    expected, state, token = [], None, torch.full((3, 1), generator.config.bos_id)
    for t in range(LENGTH):
        logits, state = generator(token, state)
        expected.append(logits[:, -1].log_softmax(-1).gather(1, sequences[:, t:t + 1]).squeeze(1))
        token = sequences[:, t:t + 1]
    torch.testing.assert_close(generator.log_probs(sequences), torch.stack(expected, 1))
    torch.testing.assert_close(generator.nll(sequences), -torch.stack(expected, 1).sum(1).mean())


def test_nll_counts_tokens_up_to_and_including_eos() -> None:
    generator = _oracle(eos_id=EOS)
    sequences = torch.tensor([[4, 5, EOS, 0, 0, 0, 0, 0], [6, 7, 8, 9, 10, 11, 12, 13]])
    lp = generator.log_probs(sequences)
    torch.testing.assert_close(generator.nll(sequences), -(lp[0, :3].sum() + lp[1].sum()) / 2)
    changed = sequences.clone()
    changed[0, 3:] = 7  # whatever follows EOS does not count
    torch.testing.assert_close(generator.nll(changed), generator.nll(sequences))


def test_maximum_likelihood_training_lowers_the_nll_of_a_corpus() -> None:
    generator = sg.init_generator(sg.Generator(_config()), 0)
    corpus = torch.randint(0, VOCAB, (8, LENGTH), generator=_rng(1))
    before = generator.nll(corpus).item()
    optimizer = torch.optim.Adam(generator.parameters(), lr=0.05)
    for _ in range(40):
        optimizer.zero_grad()
        generator.nll(corpus).backward()
        optimizer.step()
    assert generator.nll(corpus).item() < 0.4 * before


def test_samples_are_seeded() -> None:
    generator = _oracle()
    first = generator.sample(16, _rng(3))
    assert first.shape == (16, LENGTH) and first.dtype == torch.long
    assert torch.equal(generator.sample(16, _rng(3)), first)
    assert not torch.equal(generator.sample(16, _rng(4)), first)


def test_first_tokens_follow_the_model_distribution() -> None:
    generator = _oracle()
    probs = generator(torch.tensor([[generator.config.bos_id]]))[0][0, -1].softmax(-1)
    tokens = generator.sample(4000, _rng(0), max_len=1)[:, 0]
    assert (torch.bincount(tokens, minlength=VOCAB) / 4000 - probs).abs().max() < 0.03


def test_greedy_limits_of_sampling() -> None:
    generator = _oracle()
    first = torch.arange(3, 9)
    greedy = _greedy(generator, first)
    prefix = first.unsqueeze(1)
    assert torch.equal(generator.sample(6, _rng(0), top_k=1, prefix=prefix), greedy)
    assert torch.equal(generator.sample(6, _rng(0), temperature=1e-6, prefix=prefix), greedy)
    assert torch.equal(generator.sample(6, _rng(0), top_p=1e-6, prefix=prefix), greedy)
    assert not torch.equal(generator.sample(6, _rng(0), prefix=prefix), greedy)


def test_top_k_and_top_p_keep_only_the_most_likely_tokens() -> None:
    generator = _oracle(1)
    probs = generator(torch.tensor([[generator.config.bos_id]]))[0][0, -1].softmax(-1)
    ordered, order = probs.sort(descending=True)
    nucleus = set(order[:int((ordered.cumsum(0) < 0.7).sum()) + 1].tolist())  # smallest set holding 0.7
    assert 1 < len(nucleus) < VOCAB
    seen = set(generator.sample(3000, _rng(0), top_p=0.7, max_len=1)[:, 0].tolist())
    assert seen == nucleus
    seen = set(generator.sample(3000, _rng(0), top_k=3, max_len=1)[:, 0].tolist())
    assert seen == set(order[:3].tolist())


def test_prefix_tokens_are_kept() -> None:
    generator = _oracle()
    samples = generator.sample(5, _rng(0), prefix=torch.tensor([7, 3]))
    assert samples.shape == (5, LENGTH) and bool((samples[:, :2] == torch.tensor([7, 3])).all())
    prefixes = torch.randint(0, VOCAB, (5, 3))
    assert torch.equal(generator.sample(5, _rng(0), prefix=prefixes)[:, :3], prefixes)
    assert torch.equal(generator.complete(prefixes, _rng(0))[:, :3], prefixes)


def test_rows_stop_at_eos_and_are_padded_after_it() -> None:
    generator = _oracle(eos_id=EOS)
    with torch.no_grad():
        generator.output.bias[EOS] += 3.0  # make EOS common
    samples = generator.sample(64, _rng(0))
    first_eos = torch.where(samples == EOS, torch.arange(LENGTH), LENGTH).amin(dim=1)
    assert int((first_eos < LENGTH - 1).sum()) > 10  # many rows end early
    after = torch.arange(LENGTH) > first_eos.unsqueeze(1)
    assert bool((samples[after] == 0).all())
    assert bool((samples[~after] != 0).any())


def test_rollout_rewards_shape_range_and_final_score() -> None:
    config = _config(dropout=0.5)
    generator, d = _oracle(), sg.Discriminator(config)
    sequences = generator.sample(6, _rng(0))
    d.train()
    rewards = sg.rollout_rewards(generator, d, sequences, 4, _rng(1))
    assert d.training  # its mode is given back
    assert rewards.shape == (6, LENGTH) and bool(((rewards >= 0) & (rewards <= 1)).all())
    assert torch.equal(sg.rollout_rewards(generator, d, sequences, 4, _rng(1)), rewards)  # no dropout in rewards
    assert torch.equal(rewards[:, -1], d.eval().prob_real(sequences))


def test_rewards_of_a_constant_or_first_token_discriminator() -> None:
    generator = _oracle()
    sequences = generator.sample(10, _rng(0), prefix=torch.arange(10).unsqueeze(1))
    constant = _TableD(_config(), torch.full((VOCAB,), 0.3), 0)
    rewards = sg.rollout_rewards(generator, constant, sequences, 4, _rng(1))
    torch.testing.assert_close(rewards, torch.full_like(rewards, 0.3))
    # the first token is in every prefix, so every token's reward is D's value of it
    d = _first_token_d(_config())
    rewards = sg.rollout_rewards(generator, d, sequences, 4, _rng(1))
    torch.testing.assert_close(rewards, d.prob_real(sequences).unsqueeze(1).expand(-1, LENGTH))


def test_rollouts_are_batched_and_averaged_per_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    generator, d = _oracle(), sg.Discriminator(_config()).eval()
    sequences, rollouts = generator.sample(5, _rng(0)), 3
    calls = _spy_complete(monkeypatch, generator)
    rewards = sg.rollout_rewards(generator, d, sequences, rollouts, _rng(1))
    assert [tuple(prefixes.shape) for prefixes, _ in calls] == [(5 * rollouts, t) for t in range(1, LENGTH)]
    for t, (prefixes, completions) in enumerate(calls, start=1):
        assert torch.equal(prefixes, sequences[:, :t].repeat_interleave(rollouts, dim=0))
        expected = d.prob_real(completions).view(5, rollouts).mean(dim=1)
        torch.testing.assert_close(rewards[:, t - 1], expected)
    assert len({tuple(row) for row in calls[0][1].tolist()}) > 5  # the completions are random


def test_rollout_reward_is_the_expected_score_of_the_completions() -> None:
    generator = _oracle()
    table = torch.linspace(0.05, 0.95, VOCAB)
    d = _TableD(_config(), table, LENGTH - 1)  # scores the last token only
    sequences = generator.sample(3, _rng(0))
    rewards = sg.rollout_rewards(generator, d, sequences, 4000, _rng(1))
    # the completion of y_1..y_{T-1} draws y_T alone, from the model's last-step distribution
    last = generator(torch.cat([torch.full((3, 1), generator.config.bos_id), sequences[:, :-1]], 1))[0][:, -1]
    torch.testing.assert_close(rewards[:, -2], last.softmax(-1) @ table, atol=0.015, rtol=0)


def test_rollout_rewards_after_eos(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(eos_id=EOS)
    generator, d = _oracle(eos_id=EOS), sg.Discriminator(config).eval()
    sequences = torch.tensor([[4, 5, EOS, 0, 0, 0, 0, 0], [6, 7, 8, 9, 10, 11, 12, 13], [EOS, 0, 0, 0, 0, 0, 0, 0]])
    calls = _spy_complete(monkeypatch, generator)
    rewards = sg.rollout_rewards(generator, d, sequences, 4, _rng(0))
    final = d.prob_real(sequences)
    assert bool((rewards[0, 3:] == 0).all()) and bool((rewards[2, 1:] == 0).all())
    assert rewards[0, 2] == final[0] and rewards[2, 0] == final[2]  # an ended prefix is scored as it is
    assert bool((rewards[1] > 0).all())
    # only prefixes without EOS are rolled out
    assert [prefixes.shape[0] for prefixes, _ in calls] == [4 * 2, 4 * 2] + [4] * (LENGTH - 3)


def test_policy_gradient_step_raises_the_reward_of_fresh_samples() -> None:
    """One REINFORCE step on a fixed discriminator (which likes sequences starting with token 5)."""
    generator = sg.init_generator(sg.Generator(_config()), 0)
    d = _first_token_d(_config())

    def mean_reward() -> float:
        return d.prob_real(generator.sample(4000, _rng(9))).mean().item()

    before = mean_reward()
    optimizer = torch.optim.Adam(generator.parameters(), lr=0.3)
    samples = generator.sample(1024, _rng(0))
    rewards = sg.rollout_rewards(generator, d, samples, 2, _rng(100))
    optimizer.zero_grad()
    sg.policy_gradient_loss(generator, samples, rewards).backward()
    optimizer.step()
    assert before < 0.11  # token 5 starts about 1 sequence in 20
    assert mean_reward() > before + 0.04  # 0.103 -> 0.170 here; the same step the wrong way gives 0.055


def test_policy_gradient_loss_by_hand() -> None:
    generator = _oracle(max_len=3, eos_id=EOS)
    sequences = torch.tensor([[4, EOS, 0], [6, 7, 8]])
    rewards = torch.tensor([[0.5, 0.25, 0.9], [1.0, 0.0, 0.75]])
    total, state, token = torch.zeros(2), None, torch.full((2, 1), generator.config.bos_id)
    for t in range(3):
        logits, state = generator(token, state)
        lp = logits[:, -1].log_softmax(-1).gather(1, sequences[:, t:t + 1]).squeeze(1)
        counted = torch.tensor([t <= 1, True])  # row 0 ends at its EOS
        total = total + lp * rewards[:, t] * counted
        token = sequences[:, t:t + 1]
    torch.testing.assert_close(sg.policy_gradient_loss(generator, sequences, rewards), -total.mean())


def test_rollout_policy_trails_the_generator() -> None:
    generator = _oracle()
    rollout = sg.RolloutPolicy(generator, trail=True)
    old = {k: v.clone() for k, v in generator.state_dict().items()}
    with torch.no_grad():
        for param in generator.parameters():
            param.add_(torch.randn(param.shape))
    assert torch.equal(rollout.policy.lstm.weight_hh_l0, old["lstm.weight_hh_l0"])  # a copy, not the generator
    rollout.update(generator)
    own, new = rollout.policy.state_dict(), generator.state_dict()
    for name in ("lstm.weight_hh_l0", "lstm.bias_ih_l0", "output.weight"):
        torch.testing.assert_close(own[name], 0.8 * old[name] + 0.2 * new[name])
    assert torch.equal(rollout.policy.embedding.weight, generator.embedding.weight)  # copied, as the reference
    rollout.reset(generator)
    assert torch.equal(rollout.policy.output.weight, generator.output.weight)
    assert sg.RolloutPolicy(generator).policy is generator  # the default: the generator itself, as the reference


def test_oracle_and_generator_initialisations() -> None:
    def weights(generator: sg.Generator) -> torch.Tensor:
        return torch.cat([p.flatten() for n, p in generator.named_parameters() if not n.startswith("lstm.bias_hh")])

    oracle = _oracle(7)
    assert 0.93 < weights(oracle).std().item() < 1.07 and abs(weights(oracle).mean().item()) < 0.05
    assert not oracle.lstm.bias_hh_l0.any()  # one bias per gate, as the reference's LSTM
    generator = sg.init_generator(sg.Generator(_config()), 7)
    assert 0.093 < weights(generator).std().item() < 0.107
    assert torch.equal(weights(_oracle(7)), weights(oracle))
    assert not torch.equal(weights(_oracle(8)), weights(oracle))
