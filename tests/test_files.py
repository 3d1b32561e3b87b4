"""Crash-safe writes: published modes follow the umask, directory swaps never leave the path
missing, orphans of killed writers are told apart from files being written, damage is set aside."""
import os
import stat
import threading

import pytest

from irjax import files
from irjax.files import atomic_directory, atomic_write_text, quarantine


@pytest.fixture
def umask():
    """Sets a umask for the test and restores the previous one."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755),
                                                        (0o027, 0o640, 0o750),
                                                        (0o002, 0o664, 0o775)])
def test_published_files_and_directories_honour_the_umask(tmp_path, umask, mask, file_mode,
                                                          dir_mode):
    umask(mask)
    path = atomic_write_text(tmp_path / "metrics.json", "{}\n")
    assert stat.S_IMODE(path.stat().st_mode) == file_mode  # mkstemp alone gives 0600
    with atomic_directory(tmp_path / "index") as tmp:
        (tmp / "data").write_text("x")
    assert stat.S_IMODE((tmp_path / "index").stat().st_mode) == dir_mode  # mkdtemp gives 0700


def test_directory_replacement_is_never_missing_to_a_reader(tmp_path):
    target = tmp_path / "index"
    with atomic_directory(target) as tmp:
        (tmp / "version").write_text("0")
    seen, missing, stop = set(), [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add((target / "version").read_text())
            except FileNotFoundError:
                missing.append(1)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for version in range(1, 200):
            with atomic_directory(target) as tmp:
                (tmp / "version").write_text(str(version))
    finally:
        stop.set()
        thread.join()
    assert (target / "version").read_text() == "199"
    assert len(seen) > 1 and not missing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no old copies left


def test_fallback_without_exchange_still_replaces_and_a_failure_keeps_the_old(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    target = tmp_path / "out"
    for text in ("old", "new"):
        with atomic_directory(target) as tmp:
            (tmp / "f").write_text(text)
    assert (target / "f").read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "f").write_text("half")
            raise RuntimeError("killed mid-way")
    assert (target / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_orphans_by_pid_and_by_age(tmp_path):
    import subprocess
    import sys
    import time
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True, check=True).stdout)
    host_prefix = files.temporary_prefix("a").rsplit("-", 1)[0]  # ".a.HOST"
    dead = tmp_path / f"{host_prefix}-{dead_pid}.x1.tmp"
    mine = tmp_path / f"{files.temporary_prefix('a')}x2.tmp"
    elsewhere = tmp_path / ".a.otherhost-1.x3.tmp"  # another host: only age counts
    stale_elsewhere = tmp_path / ".a.otherhost-2.x4.tmp"
    user_file = tmp_path / "a.tmp"  # not an irjax temporary name
    for path in (dead, mine, elsewhere, stale_elsewhere, user_file):
        path.write_text("x")
    old = time.time() - 2 * files.ORPHAN_AGE_S
    os.utime(stale_elsewhere, (old, old))
    os.utime(mine, (old, old))
    removed = files.remove_orphan_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([dead.name, stale_elsewhere.name])
    assert mine.exists() and elsewhere.exists() and user_file.exists()


def test_quarantine_keeps_the_damaged_file_under_a_new_name(tmp_path):
    path = tmp_path / "k.npz"
    path.write_bytes(b"bad")
    first = quarantine(path)
    path.write_bytes(b"bad again")
    second = quarantine(path)
    assert not path.exists() and first != second
    assert first.name.startswith("k.npz.corrupt-") and first.read_bytes() == b"bad"
    assert second.read_bytes() == b"bad again"


def test_named_clean_up_in_a_shared_folder_touches_only_that_name(tmp_path):
    import time
    old = time.time() - 2 * files.ORPHAN_AGE_S
    others = [tmp_path / ".cache.otherhost-1.x.tmp", tmp_path / ".someone.abcdefgh.tmp",
              tmp_path / ".irjax_tokens.otherhost-1.x.tmp"]
    for path in others:
        path.mkdir()
        os.utime(path, (old, old))
    removed = files.remove_orphan_temporaries(tmp_path, name="irjax_tokens")
    assert removed == [others[2]]  # another program's pid-less or other-named entries stay
    assert others[0].exists() and others[1].exists()
