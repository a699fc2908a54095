"""File locks and atomic writes, across threads and real processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time

import pytest

from comfyui_twitterchat.utils import file_lock as fl

FORK = multiprocessing.get_context("fork")


def test_exclusive_lock_times_out_with_clear_error(tmp_path):
    target = tmp_path / "cache.json"
    with fl.file_lock(target):
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="cache.json"):
            with fl.file_lock(target, timeout=0.2):
                pass
        assert time.monotonic() - started >= 0.2


def test_shared_locks_coexist_and_block_writers(tmp_path):
    target = tmp_path / "cache.json"
    with fl.file_lock(target, shared=True), fl.file_lock(target, shared=True, timeout=0.1):
        with pytest.raises(TimeoutError):
            fl.FileLock(target, timeout=0.1).acquire()
    with fl.file_lock(target, timeout=0.1) as lock:  # free again once readers are gone
        assert lock.locked


def test_lock_waits_for_release_across_threads(tmp_path):
    target = tmp_path / "x.json"
    holder = fl.FileLock(target).acquire()
    threading.Timer(0.2, holder.release).start()
    started = time.monotonic()
    with fl.file_lock(target, timeout=5):
        waited = time.monotonic() - started
    assert 0.15 <= waited < 5


def test_lock_and_temp_files_do_not_pile_up(tmp_path):
    target = tmp_path / "data.json"
    for i in range(50):
        with fl.file_lock(target):
            fl.atomic_write_json(target, {"i": i})
        fl.update_json(target, lambda v: {"i": v["i"] + 1})
    # flock keeps its one sidecar; filelock (where there is no fcntl) removes it on release
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".data.json.lock") == ["data.json"]
    assert json.loads(target.read_text()) == {"i": 50}


def test_atomic_write_refuses_non_json_without_touching_the_file(tmp_path):
    target = tmp_path / "d.json"
    fl.atomic_write_json(target, {"ok": True})
    with pytest.raises(TypeError):
        fl.atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["d.json"]


def test_read_json_default_and_invalid(tmp_path):
    target = tmp_path / "missing.json"
    assert fl.read_json(target, default={"empty": True}) == {"empty": True}
    target.write_text("{broken")
    with pytest.raises(ValueError, match="missing.json is not valid JSON"):
        fl.read_json(target)


def _increment_many(path: str, times: int) -> None:
    for _ in range(times):
        fl.update_json(path, lambda value: {**value, "count": value["count"] + 1,
                                            "pad": "x" * (value["count"] % 997)},
                       default={"count": 0}, timeout=60)


def _read_many(path: str, until: float, errors) -> None:
    reads = 0
    while time.monotonic() < until:
        try:
            value = fl.read_json(path, default={"count": 0}, timeout=60)
            assert isinstance(value["count"], int)
            reads += 1
        except Exception as exc:  # any invalid read is the failure we look for
            errors.put(repr(exc))
            return
    errors.put(f"ok:{reads}")


def test_many_processes_lose_no_update_and_never_see_invalid_json(tmp_path):
    target = str(tmp_path / "counter.json")
    workers, per_worker = 4, 150
    errors = FORK.Queue()
    reader = FORK.Process(target=_read_many, args=(target, time.monotonic() + 3, errors))
    reader.start()
    writers = [FORK.Process(target=_increment_many, args=(target, per_worker)) for _ in range(workers)]
    for proc in writers:
        proc.start()
    for proc in writers:
        proc.join(120)
        assert proc.exitcode == 0
    reader.join(60)
    assert json.loads(open(target).read())["count"] == workers * per_worker
    verdict = errors.get(timeout=5)
    assert verdict.startswith("ok:"), verdict
    assert int(verdict.split(":")[1]) > 0


def _slow_writer(path: str, ready_path: str) -> None:
    real_fsync = os.fsync

    def stalled_fsync(fd):
        real_fsync(fd)
        with open(ready_path, "w") as handle:  # the temp file is written, not yet renamed
            handle.write("in fsync")
        time.sleep(60)

    os.fsync = stalled_fsync
    fl.atomic_write_json(path, {"version": 2, "blob": "y" * 100_000})


def test_writer_killed_mid_write_leaves_old_content(tmp_path):
    target = tmp_path / "state.json"
    fl.atomic_write_json(target, {"version": 1})
    ready = tmp_path / "ready"
    proc = FORK.Process(target=_slow_writer, args=(str(target), str(ready)))
    proc.start()
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ready.exists(), "writer never reached fsync"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"version": 1}
    # The half-finished temp file is there, named so it can never be mistaken for the target.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".state.json.")
