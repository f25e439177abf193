"""The sharded embedding store: buffered puts written as shards with an index, reopened by memory map, merged when
small shards pile up, safe against crashes, damaged shards and several writers, and the per-file cache migrated."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atelier.core.metrics import feature_cache
from atelier.core.metrics.feature_cache import FeatureCache
from atelier.core.shared.state_dicts import write_safetensors

ROOT = Path(__file__).resolve().parents[1]
DIM = 12


def digests(count: int, salt: str = "") -> list[str]:
    return [hashlib.sha256(f"{salt}그림{i}".encode()).hexdigest() for i in range(count)]


def vectors(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, DIM, generator=torch.Generator().manual_seed(seed))


def shards(store: FeatureCache) -> list[Path]:
    return sorted(store.folder.glob("shard-*.safetensors"))


def test_puts_are_buffered_then_written_as_one_shard_with_an_index(tmp_path: Path) -> None:
    keys, values = digests(50), vectors(50, 0)
    store = FeatureCache(tmp_path / "캐시", "fmt", "net")
    store.put_many(keys[:40], values[:40])
    for key, value in zip(keys[40:], values[40:]):
        store.put(key, value)
    assert torch.equal(store.get(keys[3]), values[3])  # a buffered vector is seen at once
    assert not shards(store)  # nothing written before the flush
    store.close()
    assert len(shards(store)) == 1
    index = json.loads((store.folder / "index.json").read_text(encoding="utf-8"))
    assert index["shards"] == [{"file": shards(store)[0].name, "count": 50, "dim": DIM,
                                "bytes": shards(store)[0].stat().st_size}]
    assert (index["format"], index["model"]) == ("fmt", "net")
    again = FeatureCache(tmp_path / "캐시", "fmt", "net")
    assert len(again) == 50 and again.notes == []
    for key, value in zip(keys, values):
        assert torch.equal(again.get(key), value)
    assert again.get(digests(1, "other")[0]) is None
    assert FeatureCache(tmp_path / "캐시", "fmt", "other net").get(keys[0]) is None  # per network
    assert FeatureCache(tmp_path / "캐시", "other fmt", "net").get(keys[0]) is None  # per format


def test_a_with_block_writes_on_leaving_even_on_an_error(tmp_path: Path) -> None:
    keys, values = digests(5), vectors(5, 1)
    with pytest.raises(KeyboardInterrupt):
        with FeatureCache(tmp_path, "fmt", "net") as store:
            store.put_many(keys, values)
            raise KeyboardInterrupt  # a cancel keeps the finished work
    reopened = FeatureCache(tmp_path, "fmt", "net")
    assert all(torch.equal(reopened.get(k), v) for k, v in zip(keys, values))


def test_a_full_buffer_is_written_and_repeated_or_non_finite_vectors_are_not_kept(tmp_path: Path) -> None:
    keys, values = digests(30), vectors(30, 2)
    values[7, 3] = float("nan")
    store = FeatureCache(tmp_path, "fmt", "net", buffer_bytes=10 * DIM * 4)
    store.put_many(keys[:9], values[:9])
    assert not shards(store)
    store.put_many(keys[9:12], values[9:12])  # 11 finite vectors pending: past the 10-vector buffer
    assert len(shards(store)) == 1
    store.put_many(keys[:12], values[:12] + 1)  # already stored: the first value stays
    store.close()
    assert len(shards(store)) == 1 and len(store) == 11
    assert store.get(keys[7]) is None and torch.equal(store.get(keys[0]), values[0])


def test_bad_keys_and_shapes_are_errors(tmp_path: Path) -> None:
    store = FeatureCache(tmp_path, "fmt", "net")
    with pytest.raises(ValueError, match="SHA-256 hex"):
        store.put("그림.png", torch.zeros(DIM))
    with pytest.raises(ValueError, match=r"values \[N, D\] for 2"):
        store.put_many(digests(2), torch.zeros(3, DIM))
    store.put_many(digests(2), torch.zeros(2, DIM))
    with pytest.raises(ValueError, match="cannot join"):
        store.put_many(digests(1, "x"), torch.zeros(1, DIM + 1))


def test_small_shards_are_merged_and_nothing_is_lost(tmp_path: Path) -> None:
    keys, values = digests(120), vectors(120, 3)
    store = FeatureCache(tmp_path, "fmt", "net", max_small_shards=4)
    for start in range(0, 120, 5):  # 24 flushes of 5 vectors
        store.put_many(keys[start:start + 5], values[start:start + 5])
        store.flush()
        assert len(shards(store)) <= 5  # merged whenever more than 4 small shards pile up
    listed = json.loads((store.folder / "index.json").read_text(encoding="utf-8"))["shards"]
    assert sorted(s["file"] for s in listed) == [p.name for p in shards(store)]
    assert sum(s["count"] for s in listed) == 120
    reopened = FeatureCache(tmp_path, "fmt", "net")
    assert len(reopened) == 120
    assert all(torch.equal(reopened.get(k), v) for k, v in zip(keys, values))


CRASH = """
import os, signal, sys, hashlib
sys.path.insert(0, sys.argv[1])
from atelier_cli import load_pack
load_pack()
import safetensors.torch, torch
from atelier.core.metrics import feature_cache
from atelier.core.metrics.feature_cache import FeatureCache
keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(6)]
with FeatureCache(sys.argv[2], "fmt", "net") as store:
    store.put_many(keys[:3], torch.ones(3, 4))

def killed_half_way(tensors, path, metadata=None):
    with open(path, "wb") as handle:
        handle.write(b"x" * 100)
    os.kill(os.getpid(), signal.SIGKILL)

safetensors.torch.save_file = killed_half_way
store = FeatureCache(sys.argv[2], "fmt", "net")
store.put_many(keys[3:], torch.zeros(3, 4))
store.flush()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_process_killed_while_writing_leaves_the_old_state(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", CRASH, str(ROOT), str(tmp_path)], capture_output=True, timeout=300)
    assert done.returncode == -9, done.stderr.decode()
    folder = next(tmp_path.iterdir())
    leftovers = [p for p in folder.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == 100  # the half-written temporary file
    store = FeatureCache(tmp_path, "fmt", "net")
    assert len(store) == 3 and len(shards(store)) == 1 and store.notes == []
    assert torch.equal(store.get(hashlib.sha256(b"0").hexdigest()), torch.ones(4))
    assert not leftovers[0].exists()  # a dead process's temporary file is cleared when the store opens


def test_a_failed_write_is_a_warning_and_the_store_stays_as_it_was(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    keys, values = digests(6), vectors(6, 4)
    with FeatureCache(tmp_path, "fmt", "net") as store:
        store.put_many(keys[:3], values[:3])

    def disk_full(*_: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(feature_cache, "write_safetensors", disk_full)
    with pytest.warns(UserWarning, match="could not write features.*No space left"):
        with FeatureCache(tmp_path, "fmt", "net") as store:
            store.put_many(keys[3:], values[3:])
    monkeypatch.undo()
    reopened = FeatureCache(tmp_path, "fmt", "net")
    assert len(reopened) == 3 and reopened.get(keys[4]) is None  # computed again next time


def test_a_truncated_or_damaged_shard_is_dropped_with_a_warning(tmp_path: Path) -> None:
    keys, values = digests(9), vectors(9, 5)
    for start in (0, 3, 6):
        with FeatureCache(tmp_path, "fmt", "net") as store:
            store.put_many(keys[start:start + 3], values[start:start + 3])
    first, second, third = shards(store)
    first.write_bytes(first.read_bytes()[:-8])  # cut short
    second.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")  # a damaged header
    with pytest.warns(UserWarning, match="is damaged") as caught:
        reopened = FeatureCache(tmp_path, "fmt", "net")
    messages = [str(w.message) for w in caught]
    assert any(first.name in m and "cut short" in m for m in messages)
    assert any(second.name in m and "header" in m for m in messages)
    assert all("rebuilt from the pictures" in m for m in messages)
    assert len(reopened.notes) == 2 and shards(reopened) == [third]  # dropped from the folder and the index
    assert [reopened.get(k) is not None for k in keys] == [False] * 6 + [True] * 3
    listed = json.loads((store.folder / "index.json").read_text(encoding="utf-8"))["shards"]
    assert [s["file"] for s in listed] == [third.name]


def test_a_shard_whose_size_differs_from_the_index_is_dropped(tmp_path: Path) -> None:
    for count in (3, 5):
        with FeatureCache(tmp_path, "fmt", "net") as store:
            store.put_many(digests(count, str(count)), vectors(count, count))
    small, large = sorted(shards(store), key=lambda p: p.stat().st_size)
    small.write_bytes(large.read_bytes())  # a whole, valid shard, but not the file the index knew
    with pytest.warns(UserWarning, match="the index recorded"):
        reopened = FeatureCache(tmp_path, "fmt", "net")
    assert len(reopened) == 5 and shards(reopened) == [large]


def test_the_per_file_cache_of_earlier_versions_is_migrated_once(tmp_path: Path) -> None:
    store = FeatureCache(tmp_path, "fmt", "net")  # opens an empty folder: nothing to migrate
    keys, values = digests(4), vectors(4, 7)
    for key, value in zip(keys, values):  # the layout and metadata earlier versions wrote
        write_safetensors(store.folder / f"{key}.safetensors", {"features": value},
                          {"format": "fmt", "sha256": key, "model": "net"})
    (store.folder / f"{keys[3]}.safetensors").write_bytes(b"damaged")
    foreign = digests(1, "f")[0]
    write_safetensors(store.folder / f"{foreign}.safetensors", {"features": values[0]},
                      {"format": "fmt", "sha256": foreign, "model": "another net"})
    migrated = FeatureCache(tmp_path, "fmt", "net")
    assert migrated.notes == [f"moved 3 cached vector(s) from 5 per-picture file(s) into a shard of "
                              f"{str(store.folder)!r}"]
    assert [p.name for p in store.folder.iterdir() if p.suffix == ".safetensors"] == [shards(migrated)[0].name]
    again = FeatureCache(tmp_path, "fmt", "net")
    assert again.notes == [] and len(again) == 3
    assert all(torch.equal(again.get(k), v) for k, v in zip(keys[:3], values[:3]))
    assert again.get(keys[3]) is None  # the damaged file is recomputed


WRITER = """
import sys, hashlib
sys.path.insert(0, sys.argv[1])
from atelier_cli import load_pack
load_pack()
import torch
from atelier.core.metrics import feature_cache
from atelier.core.metrics.feature_cache import FeatureCache
name = sys.argv[3]
with FeatureCache(sys.argv[2], "fmt", "net", max_small_shards=3) as store:
    for i in range(40):
        key = hashlib.sha256(f"{name}{i}".encode()).hexdigest()
        store.put(key, torch.full((4,), float(i)))
        store.flush()
"""


def test_several_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    children = [subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(tmp_path), name])
                for name in ("가", "나", "다")]
    assert [child.wait(timeout=300) for child in children] == [0, 0, 0]
    store = FeatureCache(tmp_path, "fmt", "net")
    for name in ("가", "나", "다"):
        for i in range(40):
            value = store.get(hashlib.sha256(f"{name}{i}".encode()).hexdigest())
            assert value is not None and torch.equal(value, torch.full((4,), float(i)))
    assert store.notes == []  # no shard was seen half-written or damaged


def test_the_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "bench_embedding_store.py"
    done = subprocess.run([sys.executable, str(script), "--count", "3000", "--per-file-count", "300", "--dim", "8",
                           "--folder", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "3000 vectors of 8 float32 values" in done.stdout and "2 files (1 shards and the index)" in done.stdout
    assert "(measured on 300, scaled x10)" in done.stdout and "3000 files" in done.stdout
    assert list(tmp_path.iterdir()) == []  # the benchmark cleans up
