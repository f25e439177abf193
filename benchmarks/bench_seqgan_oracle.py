"""The SeqGAN paper's synthetic experiment: NLL-oracle of MLE against SeqGAN, at several temperatures.

    python benchmarks/bench_seqgan_oracle.py --device cuda        # the reference's schedule, on a GPU
    python benchmarks/bench_seqgan_oracle.py --quick              # a few minutes on a CPU: a smoke run, not a result

A randomly initialised oracle LSTM (vocabulary 5000, 32-d embedding and state, every parameter drawn
from N(0, 1)) writes 10,000 training sequences of length 20. A generator of the same shape is
pretrained by maximum likelihood (120 epochs), the discriminator is pretrained against it (50 rounds of
3 epochs), then 200 adversarial epochs run, each one policy-gradient step (16 rollouts per token by the
generator itself) and 5 discriminator rounds of 3 epochs; every discriminator round draws 10,000 fresh
negatives and sees each of the 10,000 positives once. That is the schedule of the reference code
(LantaoYu/SeqGAN, sequence_gan.py). Its rollout "policy" does not trail the generator in practice: the
sampling graph reads the generator's live variables (``tf.identity``) and ``update_params`` builds tensors
nothing uses, as the paper's Algorithm 1 rolls out with the generator; so that is the default here too
(``--rollout-policy trailing`` tries this pack's trailing copy). The loss scales differ from the reference's,
as stated in ``training/story/seqgan_trainer.py``: the MLE loss is ``max_len`` times larger, the policy-gradient
loss ``batch_size`` times smaller; Adam is blind to that, only the gradient-norm clip of 5 bites elsewhere.

Quality is NLL-oracle: the oracle's mean per-token negative log-likelihood of 10,000 sequences the generator
samples (the paper: random 10.310, MLE 9.038, SeqGAN 8.736). The untrained generator here (the reference's
N(0, 0.1) initialisation, close to uniform over 5000 tokens) scores about 11.2, so the paper's "random" row
is some other baseline and is not comparable with the "random" row printed here; compare MLE against SeqGAN.
NLL-test (the generator's per-token NLL of 10,000 fresh oracle sequences) is reported beside it, since a
generator that narrows onto the oracle's likeliest sequences lowers NLL-oracle while NLL-test rises.

Lower sampling temperatures lower NLL-oracle for any model, so MLE and SeqGAN are compared at the same
temperatures: SeqGAN is better only where it wins at equal temperature.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from atelier_cli import load_pack  # noqa: E402

load_pack()

from atelier.core.story.seqgan_model import Generator, SeqGANConfig, init_oracle  # noqa: E402
from atelier.training.story.seqgan_trainer import SeqGANModels, SeqGANTrainConfig, train_seqgan  # noqa: E402


@torch.no_grad()
def nll_oracle(oracle: Generator, model: Generator, count: int, temperature: float, seed: int) -> float:
    """The oracle's mean per-token NLL of ``count`` sequences sampled from ``model``."""
    gen = torch.Generator(device=oracle.output.weight.device).manual_seed(seed)
    total = 0.0
    for start in range(0, count, 1000):
        samples = model.sample(min(1000, count - start), gen, temperature=temperature)
        total += float(-oracle.log_probs(samples).sum())
    return total / (count * model.config.max_len)


@torch.no_grad()
def nll_test(model: Generator, heldout: torch.Tensor) -> float:
    return float(-torch.cat([model.log_probs(chunk) for chunk in heldout.split(1000)]).mean())


def evaluate(oracle: Generator, model: Generator, heldout: torch.Tensor, temperatures: list[float],
             count: int) -> dict[str, float]:
    model.eval()
    row = {f"nll_oracle_t{t:g}": round(nll_oracle(oracle, model, count, t, seed=1234), 4) for t in temperatures}
    row["nll_test"] = round(nll_test(model, heldout), 4)
    return row


# --quick: the same models and vocabulary, a short schedule on a fifth of the data (a few minutes on a CPU)
QUICK = {"train": 2000, "eval": 2000, "mle_epochs": 15, "dis_rounds": 3, "adversarial_epochs": 10, "d_steps": 1,
         "d_epochs": 1, "negatives": 2000, "rollouts": 4, "eval_every": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=5000)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--eval", type=int, default=10_000)
    parser.add_argument("--mle-epochs", type=int, default=120)
    parser.add_argument("--dis-rounds", type=int, default=50)
    parser.add_argument("--adversarial-epochs", type=int, default=200)
    parser.add_argument("--d-steps", type=int, default=5)
    parser.add_argument("--d-epochs", type=int, default=3)
    parser.add_argument("--negatives", type=int, default=10_000, help="generated sequences per discriminator round")
    parser.add_argument("--rollouts", type=int, default=16)
    parser.add_argument("--rollout-policy", choices=["generator", "trailing"], default="generator")
    parser.add_argument("--eval-every", type=int, default=10, help="adversarial epochs between evaluations")
    parser.add_argument("--temperatures", default="0.8,0.9,1.0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--run-dir", help="keep checkpoints here, so a second call resumes (more adversarial epochs)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1...")
    parser.add_argument("--quick", action="store_true", help="a short schedule that runs in minutes on a CPU: "
                        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    args = parser.parse_args()
    if args.quick:
        vars(args).update(QUICK)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    temperatures = [float(t) for t in args.temperatures.split(",")]
    started = time.perf_counter()
    config = SeqGANConfig(vocab_size=args.vocab, max_len=args.length, bos_id=0, eos_id=None, pad_id=0)
    oracle = init_oracle(Generator(config), args.seed + 1).eval().to(device)
    gen = torch.Generator(device=device).manual_seed(args.seed + 2)
    with torch.no_grad():
        data = torch.cat([oracle.sample(1000, gen) for _ in range(args.train // 1000)]).cpu()  # batched on the CPU
        heldout = torch.cat([oracle.sample(1000, gen) for _ in range(args.eval // 1000)])
    report: dict[str, object] = {"oracle_nll_of_its_own_samples": round(nll_test(oracle, heldout), 4)}
    models = SeqGANModels.new(config, args.seed).to(device)
    report["random"] = evaluate(oracle, models.generator, heldout, temperatures, args.eval)
    train = SeqGANTrainConfig(mle_epochs=args.mle_epochs, dis_rounds=args.dis_rounds, adversarial_epochs=0,
                              d_steps=args.d_steps, d_epochs=args.d_epochs, negatives=args.negatives,
                              rollouts=args.rollouts, trail_rollout=args.rollout_policy == "trailing", seed=args.seed,
                              checkpoint_every=10)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run_dir) if args.run_dir else Path(tmp)  # a kept run folder resumes a later call
        t0 = time.perf_counter()
        history = train_seqgan(models, data, train, run, device)
        report["pretraining_s"] = round(time.perf_counter() - t0, 1)
        report["mle_nll_last_epoch"] = round(history.nll[-1][1] / args.length, 4) if history.nll else None
        mle = copy.deepcopy(models.generator)
        report["mle"] = evaluate(oracle, mle, heldout, temperatures, args.eval)
        print(json.dumps({k: report[k] for k in ("random", "mle", "pretraining_s")}), flush=True)
        curve = []
        t0 = time.perf_counter()
        for done in range(args.eval_every, args.adversarial_epochs + 1, args.eval_every):
            history = train_seqgan(models, data, SeqGANTrainConfig(**{**train.__dict__, "adversarial_epochs": done}),
                                   run, device)
            curve.append({"adversarial_epochs": done, **evaluate(oracle, models.generator, heldout, [1.0],
                                                                 args.eval),
                          "reward": round(history.reward[-1][1], 4), "d_accuracy": round(history.d_accuracy[-1][1], 4)})
            print(json.dumps(curve[-1]), flush=True)
        report["adversarial_s"] = round(time.perf_counter() - t0, 1)
        report["seqgan_curve"] = curve
        report["seqgan"] = evaluate(oracle, models.generator, heldout, temperatures, args.eval)
    report["total_s"] = round(time.perf_counter() - started, 1)
    report["settings"] = vars(args)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
