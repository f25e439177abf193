"""Data-parallel training on ``torch.distributed``, launched by PyTorch's own launcher (torchrun).

Every trainer calls the same helpers whether it runs alone or as one rank of a process group: with one
process they return at once (the whole batch, no reduction, rank 0), so a trainer has one code path.

The split keeps a distributed run equal to a one-process run at the same global batch: every rank draws
the global batch that one process would draw at that step (the same seeded generator), keeps the items
``rank, rank + W, ...`` of it (``share``), and scales its loss by ``1 / global batch``; ``all_reduce_sum``
then adds the ranks' gradients into exactly the one-process gradient of the batch mean, up to the order of
float additions. One explicit all-reduce of the trainable parameters' gradients per optimizer step, rather
than wrapping the model in DistributedDataParallel: the trainable parameters are a LoRA's (a few MB), so
overlapping their reduction with the backward pass saves little, while DDP would divide by the world size
(wrong for a batch that does not split evenly), reduce once per micro-batch unless told not to, and hide
the model behind a wrapper whose state-dict names differ from the LoRA file's.

Launch: ``torchrun --nproc-per-node N -- atelier_cli.py train ...`` (or the command's ``--gpus N``, see
``launch``); the launcher sets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT, which ``init`` reads.
"""
from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

# how long a rank waits in a collective for the others (rank 0 renders samples and writes checkpoints while
# the others wait); a rank that hangs longer stops the run with the backend's timeout error
TIMEOUT = timedelta(minutes=15)


class LaunchFailed(RuntimeError):
    """A process of a ``launch``ed group failed; the message names its rank and what happened to it."""

    def __init__(self, message: str, exitcode: int) -> None:
        super().__init__(message)
        self.exitcode = exitcode


class Rank0Failed(RuntimeError):
    """Raised on the other ranks when rank 0 refused the run before training (its own message says why)."""


class PeerLost(RuntimeError):
    """A collective failed: another process of the group died or cannot be reached. Under ``launch`` the
    launcher names it; under torchrun, torchrun's summary does."""


LAUNCHER_ENV = "ATELIER_GROUP_LAUNCHER"  # set for the processes ``launch`` starts: it reports their failures


def under_launcher() -> bool:
    """Started by ``launch`` (``--gpus``), whose message and ``error`` event name a rank that died."""
    return os.environ.get(LAUNCHER_ENV) == "1"


@contextlib.contextmanager
def collective() -> Iterator[None]:
    """Around a collective: a peer that died raises ``PeerLost`` (what gloo raises says little)."""
    try:
        yield
    except RuntimeError as exc:  # gloo raises a plain RuntimeError when a peer's connection closes
        if isinstance(exc, (PeerLost, Rank0Failed)):
            raise
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise PeerLost(f"another process of this training stopped or cannot be reached ({detail}); the last "
                       "checkpoint is kept: run the same command to resume") from exc


def launched() -> bool:
    """Whether this process is one of several started by torchrun (or another launcher setting its variables)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one that writes checkpoints, samples, files and progress."""
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group torchrun set up (nccl on CUDA, gloo on the CPU) and return this rank's device:
    ``cuda:LOCAL_RANK`` on CUDA. Without a launcher, ``device`` unchanged."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not active():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT, **({"device_id": device} if backend == "nccl" else {}))
    return device


def close() -> None:
    if active():
        dist.destroy_process_group()


def share(n: int) -> range:
    """This rank's items of ``n``: ``rank, rank + W, ...`` (all of them in one process)."""
    return range(rank(), n, world_size())


def take_share(batch: int, *rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """This rank's rows of each ``[batch, ...]`` tensor of the global batch (the tensors themselves in one
    process)."""
    mine = list(share(batch))
    return rows if len(mine) == batch else tuple(r[mine] for r in rows)


def check_batch(batch: int, what: str = "batch_size") -> None:
    """Each rank needs at least one item of every global batch."""
    if batch < world_size():
        raise ValueError(f"{what} {batch} is split across {world_size()} processes, which needs at least one item "
                         f"each: raise {what} to at least {world_size()} (it is the global batch), or use fewer "
                         "processes")


def _coalesced(tensors: list[torch.Tensor], op: Any) -> None:
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    flat = _flatten_dense_tensors(tensors)
    with collective():
        op(flat)
    for tensor, reduced in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
        tensor.copy_(reduced)


def all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    """Add every rank's ``tensors`` in place, as one flat buffer (one collective whatever their number)."""
    if active() and tensors:
        _coalesced(tensors, lambda flat: dist.all_reduce(flat, op=dist.ReduceOp.SUM))


def reduce_gradients(params: list[torch.nn.Parameter], loss: torch.Tensor) -> None:
    """Sum the ranks' gradients of ``params`` and their ``loss`` parts (each already divided by the global batch)
    into the global batch's, in place. A parameter without a gradient on this rank counts as zero."""
    if not active():
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    all_reduce_sum([p.grad for p in params] + [loss])


def broadcast_parameters(params: list[torch.Tensor]) -> None:
    """Rank 0's values everywhere (the same start even if a rank's initialisation drew differently)."""
    if active() and params:
        with torch.no_grad():
            _coalesced([p.data for p in params], lambda flat: dist.broadcast(flat, src=0))


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object: a checkpoint's state, a path) on every rank."""
    if not active():
        return value
    box = [value if is_main() else None]
    with collective():
        dist.broadcast_object_list(box, src=0)
    return box[0]


def from_rank0(compute: Any) -> Any:
    """``compute()`` on rank 0, its result on every rank; an error on rank 0 raises there and ``Rank0Failed`` on
    the others (so a refused checkpoint is said once, by rank 0)."""
    outcome: tuple[bool, Any] = (True, None)
    if is_main():
        try:
            outcome = (True, compute())
        except Exception as exc:
            broadcast_object((False, str(exc)))
            raise
    ok, value = broadcast_object(outcome)
    if not ok:
        raise Rank0Failed(value)
    return value


def load_checkpoint(folder: Path, expected: str) -> dict[str, Any] | None:
    """``checkpoints.load_matching`` on rank 0 (which alone tidies the run folder), its state on every rank. A
    checkpoint holds no per-rank state, so a run of any world size resumes it; ``world_size`` in it says whose."""
    from . import checkpoints

    return from_rank0(lambda: checkpoints.load_matching(folder, expected))


def resume_note(step: int, saved_world_size: int) -> str:
    """``resumed from step S``, with the world sizes when they differ; "" for a fresh run (step 0)."""
    if not step:
        return ""
    note = f"resumed from step {step}"
    if saved_world_size != world_size():
        note += (f" (checkpoint from a {saved_world_size}-process run, resumed with {world_size()}; the global batch "
                 "is the same, so the run continues as it would have)")
    return note


def gather_dict(part: dict[Any, Any]) -> dict[Any, Any]:
    """Every rank's ``part`` merged, on every rank."""
    if not active():
        return part
    parts: list[Any] = [None] * world_size()
    with collective():
        dist.all_gather_object(parts, part)
    return {k: v for p in parts for k, v in p.items()}


def barrier() -> None:
    if active():
        with collective():
            dist.barrier()


def launch(nproc: int, script: Path, args: list[str], cuda: bool) -> None:
    """Run ``python script args`` as ``nproc`` processes on this machine through torchrun (in this process, as
    ``python -m torch.distributed.run --nproc-per-node N -- script args`` would), one GPU each on CUDA. A process
    that fails stops the others (torchrun's own handling); LaunchFailed then names its rank."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if cuda and nproc > torch.cuda.device_count():
        raise ValueError(f"--gpus {nproc} asks for more GPUs than this machine has ({torch.cuda.device_count()})")
    saved = dict(os.environ)  # given back afterwards: torchrun also sets OMP_NUM_THREADS here for the processes
    # torchrun's agent replaces these handlers with its own and leaves them: given back too, or a later Ctrl-C in
    # this process would raise torch's SignalException instead of KeyboardInterrupt
    stops = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name)]
    handlers = {stop: signal.getsignal(stop) for stop in stops}
    os.environ.setdefault("LOGLEVEL", "WARNING")
    os.environ[LAUNCHER_ENV] = "1"  # the processes inherit it
    try:
        # "--": without it torchrun's parser takes the script's own options (--run) for abbreviations of its own
        run(parse_args(["--nproc-per-node", str(nproc), "--monitor-interval", "0.5", "--", str(script), *args]))
    except ChildFailedError as exc:
        failed, failure = min(exc.failures.items(), key=lambda item: item[1].timestamp)
        code = failure.exitcode
        how = (f"was killed by {failure.signal_name()}" if code < 0
               else f"exited with code {code} (its message is above)")
        raise LaunchFailed(f"training process rank {failed} (of {nproc}) {how}; the other processes were stopped",
                           code) from None
    except SignalException as exc:  # this launcher was told to stop (SIGTERM from a watching program, Ctrl-C)
        name = signal.Signals(exc.sigval).name
        raise LaunchFailed(f"stopped by {name}: the {nproc} training processes were ended", -exc.sigval) from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for stop, handler in handlers.items():
            signal.signal(stop, handler)


def reported_by_launcher(exc: BaseException) -> bool:
    """Whether another process says what ``exc`` means: rank 0 (its refusal, on the other ranks) or ``launch``
    (a process that died, named by its rank)."""
    return isinstance(exc, Rank0Failed) or isinstance(exc, PeerLost) and under_launcher()
