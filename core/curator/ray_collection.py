"""Embedding and captioning a collection across several GPUs or machines with Ray Data (optional: ``ray[data]``).

Each Ray worker (an actor) loads the model once from its folder and then takes batches of file paths as they
stream; the driver keeps what a single process keeps: the content hashes, the embedding store and the sidecar
captions. Only the small results (one vector or one caption per picture) come back over the network, so one writer
fills the store (no shard written by a machine that cannot see the store's folder) and a cancel between batches
keeps everything done so far. The vectors and captions are the ones ``index_folder`` and ``caption_folder`` make in
one process: the same decoder, the same batches and seeds, the same store keys.

Every machine of the cluster must see the pictures, the model folder and this pack at the same paths (a shared
drive), as the workers read them by path.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..captions.blip2 import (
    CaptionReport,
    CaptionSettings,
    caption_batch,
    check_blip2_folder,
    check_precision,
    load_blip2,
    prepare_captions,
)
from ..dataset.image_files import DEFAULT_MAX_MEGAPIXELS, Skipped, list_images
from ..metrics.feature_cache import FeatureCache
from ..shared.hf_folders import ModelFolderError
from ..shared.progress import Progress, SilentProgress
from .clip_model import clip_fingerprint, encoder_config, load_clip, precision_dtype
from .image_index import FolderIndex, decode_or_reason, embedding_store, folder_index, read_headers, stored_embeddings
from .pixels import read_pixel_spec

RAY_INSTALL = 'pip install "ray[data]"'
FLUSH_EVERY_S = 30.0  # the store writes what came back at least this often, so a crash loses little
PACKAGE_ENV = "ATELIER_PACKAGE"  # the name the workers register the pack under (atelier_cli.ray_worker_setup)
_PACKAGE = __name__.rsplit(".core.", 1)[0]  # "atelier" here; the folder's name inside ComfyUI
_ROOT = Path(__file__).resolve().parents[2]
_DEFAULT_PORT = {"ray": 10001, "": 6379}  # Ray Client's port, the head's GCS port


class RayUnavailable(RuntimeError):
    """Ray is not installed, or no cluster could be started or reached; raised before anything is written."""


@dataclass(frozen=True)
class Cluster:
    address: str | None = None  # None: a Ray on this machine alone (or the one $RAY_ADDRESS names)
    workers: int = 1  # model copies, each an actor loading the model once
    gpus_per_worker: float = 0.0  # 0: the workers run on CPUs

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_worker > 0 else "cpu"

    def check(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be 0 or more, got {self.gpus_per_worker}")


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or a clear error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (its own extras: pyarrow, pandas)
    except ImportError as exc:
        raise RayUnavailable(f"Ray is not installed: {RAY_INSTALL} (into the Python that runs Atelier), or run "
                             f"without Ray ({exc})") from None
    return ray


def _check_reachable(address: str) -> None:
    """A prompt error for an address where nothing listens (Ray itself retries for minutes)."""
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    if not host:
        host, port = rest, str(_DEFAULT_PORT.get(scheme, 6379))
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return
    except (OSError, ValueError) as exc:
        raise RayUnavailable(f"no Ray cluster answers at {address!r} ({exc}): start one with `ray start --head` "
                             "on the head machine and give its address (host:6379), or give no address for a Ray "
                             "on this machine alone; nothing was written") from None


@contextlib.contextmanager
def ray_session(cluster: Cluster) -> Iterator[Any]:
    """Ray connected for the work inside: joined if this process already has it, else started (or, with an
    address, reached) here and shut down after. A cluster without the GPUs one worker asks for is refused (Ray
    would wait for them for ever)."""
    ray = require_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False  # the Progress given shows how far it is
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # else a status block every few seconds
    started = not ray.is_initialized()
    if started:
        address = cluster.address or os.environ.get("RAY_ADDRESS")  # ray.init joins $RAY_ADDRESS when given none
        if address and address not in ("auto", "local"):
            _check_reachable(address)
        try:
            ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        except Exception as exc:  # Ray's own errors vary by version; all mean the same here
            where = f" or reach {cluster.address!r}" if cluster.address else ""
            raise RayUnavailable(f"Ray could not start{where}: {exc}; nothing was written") from None
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        if cluster.gpus_per_worker > gpus:
            raise RayUnavailable(f"each worker asks for {cluster.gpus_per_worker:g} GPU(s) and the Ray cluster has "
                                 f"{gpus:g}: give --gpus-per-worker {gpus:g} or less (0 runs the workers on CPUs), "
                                 "or join a cluster with GPUs; nothing was written")
        yield ray
    finally:
        if started:
            ray.shutdown()


def _worker_options(ray: Any, cluster: Cluster) -> dict[str, Any]:
    """map_batches options: a pool of ``workers`` actors, each with its GPUs, whose processes import this pack
    from its folder under the driver's name for it (so they can unpickle the worker classes)."""
    from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR

    path = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    # runtime_env's worker_process_setup_hook is honoured only by ray.init (job-wide), and this process may have
    # joined a Ray someone else started; the variable that field becomes works for these actors alone
    hook = {WORKER_PROCESS_SETUP_HOOK_ENV_VAR: "atelier_cli.ray_worker_setup"}
    return {"compute": ray.data.ActorPoolStrategy(size=cluster.workers), "num_gpus": cluster.gpus_per_worker,
            "runtime_env": {"env_vars": {"PYTHONPATH": path, PACKAGE_ENV: _PACKAGE, **hook}}}


def _batches(dataset: Any) -> Iterator[dict[str, np.ndarray]]:
    """The results as the workers finish them (not in order), each block once. Closing this (a cancel too) stops
    the run and frees its workers; a worker's failure ends it with the worker's own message."""
    batches = iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as exc:  # Ray's wrappers end their long text with the worker's own error
                lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
                raise RuntimeError(f"a Ray worker failed, so the run stopped (what came back before is kept): "
                                   f"{lines[-1].strip()}") from exc
            yield batch
    finally:
        getattr(batches, "close", lambda: None)()


class _Embedder:
    """A Ray actor: the CLIP loaded once, then (digest, path) rows -> (digest, vector, reason it failed)."""

    def __init__(self, folder: str, precision: str, device: str, fingerprint: str, max_megapixels: float) -> None:
        self.clip = load_clip(Path(folder), device, precision)
        if self.clip.fingerprint != fingerprint:
            raise ModelFolderError(f"the CLIP folder {folder!r} on {socket.gethostname()} holds other weights than "
                                   "the driver's copy: give every machine the same model")
        self.max_megapixels = max_megapixels
        self.pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = self.clip.pixels.size
        decoded = list(self.pool.map(lambda p: decode_or_reason(Path(p), self.max_megapixels, size), batch["path"]))
        good = [row for row, image in enumerate(decoded) if isinstance(image, torch.Tensor)]
        vectors = np.zeros((len(decoded), self.clip.dim), np.float32)
        if good:
            vectors[good] = self.clip.embed_images([decoded[row] for row in good]).numpy()
        reasons = np.array([image if isinstance(image, str) else "" for image in decoded], dtype=object)
        return {"digest": batch["digest"], "vector": vectors, "reason": reasons}


def _store_vectors(batches: Iterator[dict[str, np.ndarray]], store: FeatureCache, found: dict[str, torch.Tensor],
                   failed: dict[str, str], progress: Progress) -> None:
    """Put the vectors into the store as they come back (written at least every FLUSH_EVERY_S); a cancel is
    noticed between batches."""
    flushed = time.monotonic()
    for batch in batches:
        ok = batch["reason"] == ""
        digests = [str(d) for d in batch["digest"][ok]]
        vectors = torch.from_numpy(np.ascontiguousarray(batch["vector"][ok], dtype=np.float32))
        if digests:
            store.put_many(digests, vectors)
            found.update(zip(digests, vectors))
        failed.update((str(d), str(r)) for d, r in zip(batch["digest"][~ok], batch["reason"][~ok]))
        if time.monotonic() - flushed > FLUSH_EVERY_S:
            store.flush()
            flushed = time.monotonic()
        progress.advance(len(batch["digest"]))
        progress.check_cancel()  # after the batch is kept: it was computed already


def embed_collection(clip_folder: Path, source: str | os.PathLike[str] | Sequence[Path],
                     cache_dir: str | os.PathLike[str], cluster: Cluster, batch_size: int = 32,
                     recursive: bool = False, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                     precision: str = "auto", progress: Progress | None = None) -> FolderIndex:
    """``index_folder`` across a Ray cluster: the CLIP of ``clip_folder`` embeds every picture of a folder (or a
    list of files) not yet in the store of ``cache_dir``, and the store is filled with what index_folder keys, so a
    later index_folder over the same pictures reads them all from it. ``progress`` counts pictures; a cancel is
    noticed between batches, and what came back before it is kept."""
    cluster.check()
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    files = list_images(source, recursive) if isinstance(source, (str, os.PathLike)) else list(source)
    _, config = encoder_config(clip_folder)  # a missing or wrong model fails here, before Ray starts
    fingerprint = clip_fingerprint(clip_folder, precision_dtype(precision, torch.device(cluster.device)))
    pixels, dim = read_pixel_spec(clip_folder, config.vision_config.image_size), int(config.projection_dim)
    progress = progress or SilentProgress(len(files))
    with ray_session(cluster) as ray:  # Ray missing or failing to start: raised here, nothing written
        readable, skipped = read_headers(files, max_megapixels)
        with embedding_store(cache_dir, pixels, fingerprint) as store:
            found = stored_embeddings(store, readable, dim)
            todo = list({digest: path for path, digest, _ in readable if digest not in found}.items())
            progress.advance(len(files) - len(todo))
            failed: dict[str, str] = {}
            if todo:
                progress.check_cancel()
                rows = ray.data.from_items([{"digest": d, "path": str(p)} for d, p in todo])
                results = rows.map_batches(
                    _Embedder, batch_size=batch_size, batch_format="numpy", **_worker_options(ray, cluster),
                    fn_constructor_kwargs={"folder": str(clip_folder), "precision": precision,
                                           "device": cluster.device, "fingerprint": fingerprint,
                                           "max_megapixels": max_megapixels})
                with contextlib.closing(_batches(results)) as batches:
                    _store_vectors(batches, store, found, failed, progress)
    return folder_index(files, readable, skipped, found, failed, encoded=len(todo) - len(failed))


class _Captioner:
    """A Ray actor: BLIP-2 loaded once, then one row per caption batch (its start and paths) -> one row per
    picture (path, caption, reason it failed)."""

    def __init__(self, folder: str, precision: str, device: str, settings: CaptionSettings) -> None:
        self.blip = load_blip2(Path(folder), device, precision)
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list[str]] = {"path": [], "caption": [], "reason": []}
        for start, paths in zip(batch["start"], batch["paths"]):
            captioned, skipped = caption_batch(self.blip, [Path(p) for p in paths], self.settings, int(start),
                                               self.pool)
            for path, text, reason in [(p, t, "") for p, t in captioned] + [(s.path, "", s.reason) for s in skipped]:
                out["path"].append(str(path))
                out["caption"].append(text)
                out["reason"].append(reason)
        return {key: np.array(values, dtype=object) for key, values in out.items()}


def caption_collection(blip2_folder: Path, folder: str | os.PathLike[str], settings: CaptionSettings,
                       cluster: Cluster, trigger: str = "", overwrite: bool = False, batch_size: int = 8,
                       recursive: bool = False, precision: str = "auto",
                       progress: Progress | None = None) -> CaptionReport:
    """``caption_folder`` across a Ray cluster: the same ``<stem>.txt`` sidecars, written here as the captions
    come back (batches and seeds as caption_folder's, so the captions are its captions)."""
    cluster.check()
    settings.check()
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    check_precision(precision, torch.device(cluster.device))  # 8-bit and 4-bit need GPU workers
    check_blip2_folder(blip2_folder)  # a missing or wrong model fails here, before Ray starts
    with ray_session(cluster) as ray:  # Ray missing or failing to start: raised here, nothing written
        files, todo, report = prepare_captions(folder, settings, overwrite, recursive)
        progress = progress or SilentProgress(len(files))
        progress.advance(len(report.kept))
        if todo:
            progress.check_cancel()
            groups = [{"start": start, "paths": [str(p) for p in todo[start:start + batch_size]]}
                      for start in range(0, len(todo), batch_size)]
            results = ray.data.from_items(groups).map_batches(
                _Captioner, batch_size=1, batch_format="numpy", **_worker_options(ray, cluster),
                fn_constructor_kwargs={"folder": str(blip2_folder), "precision": precision, "device": cluster.device,
                                       "settings": settings})
            with contextlib.closing(_batches(results)) as batches:
                for batch in batches:
                    ok = batch["reason"] == ""
                    captioned = [(Path(p), str(t)) for p, t in zip(batch["path"][ok], batch["caption"][ok])]
                    skipped = [Skipped(str(p), str(r)) for p, r in zip(batch["path"][~ok], batch["reason"][~ok])]
                    report.record(Path(folder), captioned, skipped, trigger)
                    progress.advance(len(batch["path"]))
                    progress.check_cancel()  # after the batch is written: it was computed already
    return report
