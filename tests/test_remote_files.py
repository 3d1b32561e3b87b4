"""Remote paths (irjax/paths.py) at the bottom of the stack: which type a path becomes, and how
files and directories are written, copied, published and cleaned up on an object store
(memory:// stands in for gs://)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from irjax import files
from irjax.files import (atomic_directory, atomic_write_text, copy_file, quarantine,
                         remove_orphan_temporaries, sha256_file, temporary_prefix)
from irjax.paths import UnsupportedPathError, as_path, file_size, is_remote, walk


def names(folder) -> list[str]:
    return sorted(p.name for p in as_path(folder).iterdir())


def test_local_paths_stay_pathlib_and_uris_become_epath(tmp_path, memory_bucket):
    assert type(as_path(str(tmp_path))) is type(tmp_path) and not is_remote(tmp_path)
    assert as_path("relative/dir") == Path("relative/dir")
    remote = as_path(f"{memory_bucket}/a") / "b.txt"
    assert is_remote(remote) and str(remote) == f"{memory_bucket}/a/b.txt"
    assert as_path(remote) == remote and is_remote("gs://bucket/x")
    with pytest.raises(UnsupportedPathError, match=r"nope://x/y: no filesystem for nope://"):
        as_path("nope://x/y")


def test_files_are_written_under_a_temporary_name_then_renamed(memory_bucket, monkeypatch):
    path = as_path(f"{memory_bucket}/out/metrics.json")
    renamed = []
    original = type(path).replace

    def replace(self, target):  # a write that never reaches the final name directly
        renamed.append((self.name, os.fspath(target)))
        return original(self, target)

    monkeypatch.setattr(type(path), "replace", replace)
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and names(path.parent) == ["metrics.json"]
    assert all(tmp.startswith(temporary_prefix("metrics.json")) and tmp.endswith(".tmp")
               and target == str(path) for tmp, target in renamed) and len(renamed) == 2
    assert sha256_file(path) == hashlib.sha256(b"two").hexdigest()


def test_copy_file_goes_both_ways(tmp_path, memory_bucket):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 << 20))
    remote = copy_file(source, f"{memory_bucket}/x/big.bin", chunk_size=1 << 20)
    assert file_size(remote) == 3 << 20
    back = copy_file(remote, tmp_path / "back" / "big.bin")
    assert back.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["big.bin"]


def test_remote_directory_is_staged_locally_and_published_manifest_last(memory_bucket,
                                                                        monkeypatch):
    target = as_path(f"{memory_bucket}/index")
    with atomic_directory(target, last=("manifest.json",)) as staging:
        assert isinstance(staging, Path)  # local: backends that write local files work as is
        (staging / "old.bin").write_bytes(b"old")
        (staging / "manifest.json").write_text("{}")
    order = []
    real_copy = files.copy_file
    monkeypatch.setattr(files, "copy_file",
                        lambda s, t, **k: order.append(as_path(t).name) or real_copy(s, t, **k))
    with atomic_directory(target, last=("manifest.json",)) as staging:
        (staging / "manifest.json").write_text('{"new": 1}')
        (staging / "sub").mkdir()
        (staging / "sub" / "a.bin").write_bytes(b"a")
        (staging / "z.bin").write_bytes(b"z")
    assert order[-1] == "manifest.json" and sorted(order) == ["a.bin", "manifest.json", "z.bin"]
    assert names(target) == ["manifest.json", "sub", "z.bin"]  # old.bin went with the old one
    assert not staging.exists()

    with pytest.raises(RuntimeError), atomic_directory(target, last=("manifest.json",)) as staging:
        (staging / "manifest.json").write_text("{}")
        raise RuntimeError("build failed")
    assert (target / "manifest.json").read_text() == '{"new": 1}' and not staging.exists()


def test_quarantine_and_orphans_on_a_store_without_modification_times(memory_bucket):
    folder = as_path(f"{memory_bucket}/emb")
    atomic_write_text(folder / "shard-00000.npy", "damaged")
    moved = quarantine(folder / "shard-00000.npy")
    assert moved.name.startswith("shard-00000.npy.corrupt-") and moved.read_text() == "damaged"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    mine = folder / f"{temporary_prefix('shard-00001.npy')}abcd.tmp"
    orphan = folder / (temporary_prefix("shard-00001.npy").replace(f"-{os.getpid()}.",
                                                                    f"-{dead}.") + "abcd.tmp")
    elsewhere = folder / ".shard-00001.npy.otherhost-1.abcd.tmp"
    for path in (mine, orphan, elsewhere):
        path.write_bytes(b"partial")
    removed = remove_orphan_temporaries(folder, name="shard-00001.npy", min_age_s=0)
    # The dead writer of this host goes; another host's file has no age to judge it by: kept.
    assert [p.name for p in removed] == [orphan.name]
    assert mine.exists() and elsewhere.exists()


def test_walk_lists_remote_folders_like_os_walk(memory_bucket):
    for name in ("a/x.txt", "a/b/y.txt", "z.txt"):
        atomic_write_text(as_path(memory_bucket) / name, name)
    found = [(str(root).removeprefix(memory_bucket), dirs, files_)
             for root, dirs, files_ in walk(as_path(memory_bucket))]
    assert found == [("", ["a"], ["z.txt"]), ("/a", ["b"], ["x.txt"]), ("/a/b", [], ["y.txt"])]
