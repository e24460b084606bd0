"""Run directories, locks, crash-safe records (incl. kill -9 of a writer) and Parquet export."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from irisbench.core.provenance import env_info
from irisbench.core.records import (
    RecordsCorruptError,
    RecordWriter,
    RunLockedError,
    atomic_write_json,
    atomic_write_text,
    read_parquet,
    read_records,
    write_parquet,
)
from irisbench.core.runs import NotARunError, RunDir, new_run_path

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"suite": {"name": "geneval", "images_per_prompt": 4}, "seed": 0, "tags": ["a", "b"], "lr": 1e-5}
ENV = {"python": "3.11", "note": "test"}


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _rec(p: int, s: int, **extra) -> dict:
    return {"prompt_index": p, "sample_index": s, "correct": (p + s) % 2 == 0, **extra}


# ------------------------------------------------------------------------------------------------
# RunDir
# ------------------------------------------------------------------------------------------------

def test_create_writes_files_and_open_reads_them(tmp_path):
    run = RunDir.create(tmp_path / "r", kind="eval", config=CONFIG, env=ENV)
    marker = json.loads((run.path / "run.json").read_text())
    assert marker["irisbench_run"] == 1 and marker["kind"] == "eval" and marker["created"]
    text = (run.path / "config.yaml").read_text()
    assert text.index("suite") < text.index("seed") < text.index("lr")  # key order kept (sort_keys=False)
    assert yaml.safe_load(text) == CONFIG
    assert json.loads((run.path / "env.json").read_text()) == ENV
    again = RunDir.open(tmp_path / "r")
    assert again.kind == "eval" and again.config == CONFIG and again.env == ENV
    assert again.created == run.created
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_create_accepts_empty_folder_refuses_non_run_and_existing_run(tmp_path):
    (tmp_path / "empty").mkdir()
    RunDir.create(tmp_path / "empty", kind="eval", config=CONFIG, env=ENV)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not empty and is not an irisbench run"):
        RunDir.create(junk, kind="eval", config=CONFIG, env=ENV)
    assert sorted(p.name for p in junk.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="already an irisbench run"):
        RunDir.create(tmp_path / "empty", kind="eval", config=CONFIG, env=ENV)
    with pytest.raises(ValueError, match="not empty"):
        RunDir.open_or_create(junk, "eval", CONFIG, ENV)


def test_open_refuses_non_runs_naming_the_path(tmp_path):
    folder = tmp_path / "random"
    folder.mkdir()
    with pytest.raises(NotARunError, match=re.escape(str(folder))):
        RunDir.open(folder)
    with pytest.raises(NotARunError, match="no such folder"):
        RunDir.open(tmp_path / "missing")
    (folder / "run.json").write_text("{not json")
    with pytest.raises(NotARunError, match="unreadable"):
        RunDir.open(folder)
    with pytest.raises(NotARunError, match="unreadable"):  # open_or_create must not overwrite it
        RunDir.open_or_create(folder, "eval", CONFIG, ENV)
    (folder / "run.json").write_text('{"something": 1}')
    with pytest.raises(NotARunError, match="irisbench_run"):
        RunDir.open(folder)
    (folder / "run.json").write_text('{"irisbench_run": 99, "kind": "eval"}')
    with pytest.raises(NotARunError, match="unsupported run format 99"):
        RunDir.open(folder)
    assert issubclass(NotARunError, ValueError)


def test_open_or_create_resumes_and_refuses_config_change_with_diff(tmp_path):
    path = tmp_path / "r"
    RunDir.open_or_create(path, "eval", CONFIG, ENV)
    resumed = RunDir.open_or_create(path, "eval", dict(CONFIG, tags=("a", "b")), {"python": "3.12"})
    assert resumed.config == CONFIG  # a tuple reads back as the same list: no change
    assert resumed.env == ENV  # env.json keeps the creator's; the resume is logged
    log = [json.loads(line) for line in (path / "resumes.jsonl").read_text().splitlines()]
    assert log[0]["env"] == {"python": "3.12"} and log[0]["config_changes"] == []

    changed = {"suite": {"name": "geneval", "images_per_prompt": 8}, "seed": 0, "tags": ["a", "b"], "wd": 0.1}
    with pytest.raises(ValueError) as e:
        RunDir.open_or_create(path, "eval", changed, ENV)
    msg = str(e.value)
    assert "suite.images_per_prompt: 4 -> 8" in msg
    assert "lr: 1e-05 (removed)" in msg and "wd: 0.1 (added)" in msg
    assert "seed" not in msg.split("config.yaml")[1]  # unchanged keys are not listed
    assert RunDir.open(path).config == CONFIG

    with pytest.raises(ValueError, match="kind 'eval', not 'train'"):
        RunDir.open_or_create(path, "train", CONFIG, ENV)

    run = RunDir.open_or_create(path, "eval", changed, ENV, allow_config_change=True)
    assert run.config == changed
    old = list(path.glob("config.*.yaml"))
    assert len(old) == 1 and yaml.safe_load(old[0].read_text()) == CONFIG


def test_resumable_keys_change_on_resume_and_the_others_still_refuse(tmp_path):
    """A key named ``resumable`` (how a run executes, e.g. its thread count) may change on resume: config.yaml
    takes the new value, the old file is kept and resumes.jsonl logs the change; any other change still refuses."""
    path = tmp_path / "r"
    RunDir.open_or_create(path, "train", dict(CONFIG, num_threads=2), ENV)
    run = RunDir.open_or_create(path, "train", dict(CONFIG, num_threads=1), ENV, resumable={"num_threads"})
    assert run.config == dict(CONFIG, num_threads=1)
    assert [yaml.safe_load(p.read_text()) for p in path.glob("config.*.yaml")] == [dict(CONFIG, num_threads=2)]
    log = [json.loads(line) for line in (path / "resumes.jsonl").read_text().splitlines()]
    assert log[-1]["config_changes"] == ["  ~ num_threads: 2 -> 1"]
    with pytest.raises(ValueError) as e:
        RunDir.open_or_create(path, "train", dict(CONFIG, num_threads=4, seed=1), ENV, resumable={"num_threads"})
    assert "seed: 0 -> 1" in str(e.value) and "num_threads" not in str(e.value)
    with pytest.raises(ValueError, match="num_threads: 1 -> 4"):
        RunDir.open_or_create(path, "train", dict(CONFIG, num_threads=4), ENV)
    assert RunDir.open(path).config == dict(CONFIG, num_threads=1)


def test_config_and_env_refuse_nan(tmp_path):
    with pytest.raises(ValueError, match=r"env\.x is nan"):
        RunDir.create(tmp_path / "r", kind="eval", config=CONFIG, env={"x": float("nan")})
    assert not (tmp_path / "r").exists()
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------
# Locks
# ------------------------------------------------------------------------------------------------

LOCK_CHILD = textwrap.dedent("""
    import sys, time
    from irisbench.core.runs import RunDir
    with RunDir.open(sys.argv[1]).lock():
        print("locked", flush=True)
        time.sleep(60)
""")


def test_lock_held_by_another_process_is_refused_and_released_on_death(tmp_path):
    run = RunDir.create(tmp_path / "r", kind="eval", config=CONFIG, env=ENV)
    child = subprocess.Popen([sys.executable, "-c", LOCK_CHILD, str(run.path)], stdout=subprocess.PIPE,
                             text=True, env=_child_env())
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as e:
            with run.lock():
                pass
        assert f"pid {child.pid}" in str(e.value) and str(run.path) in str(e.value)
    finally:
        child.kill()
        child.wait()
    with run.lock():  # the kernel released the dead holder's lock
        assert (run.path / ".lock").read_text().split()[0] == str(os.getpid())


def test_lock_is_exclusive_within_a_process_too(tmp_path):
    run = RunDir.create(tmp_path / "r", kind="eval", config=CONFIG, env=ENV)
    with run.lock():
        with pytest.raises(RunLockedError, match="this process"):
            with RunDir.open(run.path).lock():
                pass
    with run.lock():
        pass


def test_second_record_writer_on_same_file_is_refused(tmp_path):
    with RecordWriter(tmp_path / "records.jsonl"):
        with pytest.raises(RunLockedError, match="already open for writing"):
            RecordWriter(tmp_path / "records.jsonl")
    RecordWriter(tmp_path / "records.jsonl").close()


# ------------------------------------------------------------------------------------------------
# RecordWriter
# ------------------------------------------------------------------------------------------------

def test_append_reopen_done_keys(tmp_path):
    path = tmp_path / "eval" / "records.jsonl"
    with RecordWriter(path) as w:
        assert len(w) == 0 and not w.done((0, 0))
        w.append([_rec(0, 0), _rec(0, 1)])
        w.append([])
        w.append([_rec(np.int64(1), np.int32(0), score=np.float32(0.5), ok=np.bool_(True),
                       vec=np.arange(3), path=tmp_path / "img.png")])
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    last = json.loads(lines[2])
    assert last["score"] == 0.5 and last["ok"] is True and last["vec"] == [0, 1, 2]
    assert last["path"] == str(tmp_path / "img.png") and type(last["prompt_index"]) is int
    with RecordWriter(path) as w:
        assert w.done_keys == {(0, 0), (0, 1), (1, 0)} and len(w) == 3 and w.dropped_bytes == 0
        assert w.done((0, 1)) and w.done([1, 0]) and w.done((np.int64(1), 0)) and not w.done((1, 1))
    single = RecordWriter(tmp_path / "one.jsonl", key_fields=("id",))
    single.append([{"id": "a"}])
    assert single.done("a") and not single.done("b")
    single.close()


def test_duplicates_refused_and_batch_not_written(tmp_path):
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as w:
        w.append([_rec(0, 0)])
        before = path.read_bytes()
        with pytest.raises(ValueError, match=r"already written \(duplicate\)"):
            w.append([_rec(5, 0), _rec(0, 0)])
        with pytest.raises(ValueError, match="twice in this batch"):
            w.append([_rec(6, 0), _rec(6, 0)])
        assert path.read_bytes() == before and w.done_keys == {(0, 0)}
        w.append([_rec(5, 0)])  # the refused batch left nothing behind
    with RecordWriter(path) as w:
        assert w.done_keys == {(0, 0), (5, 0)}


def test_invalid_values_refused_with_field_named(tmp_path):
    with RecordWriter(tmp_path / "records.jsonl") as w:
        with pytest.raises(ValueError, match=r"scores\.clip is nan"):
            w.append([_rec(0, 0, scores={"clip": float("nan")})])
        with pytest.raises(ValueError, match=r"\.x is inf"):
            w.append([_rec(0, 0, x=np.float32("inf"))])
        with pytest.raises(ValueError, match="lacks key field"):
            w.append([{"prompt_index": 0}])
        with pytest.raises(ValueError, match="non-string key"):
            w.append([_rec(0, 0, counts={1: 2})])
        with pytest.raises(TypeError, match="cannot be stored as JSON"):
            w.append([_rec(0, 0, obj=object())])
        with pytest.raises(ValueError, match="must be an int or a string"):
            w.append([{"prompt_index": 1.5, "sample_index": 0}])
        assert len(w) == 0
    assert (tmp_path / "records.jsonl").read_bytes() == b""


TORN_TAILS = [b'{"prompt_index": 9, "sample_in', b"\x00" * 40, b'{"prompt_index": 9, "sample_index": 0}',
              b"\x00\x00\x00\n", b'{"prompt_index": 9, "sam\n']


@pytest.mark.parametrize("tail", TORN_TAILS)
def test_torn_last_line_is_dropped_and_truncated(tmp_path, tail):
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as w:
        w.append([_rec(0, 0), _rec(0, 1)])
    good = path.read_bytes()
    path.write_bytes(good + tail)
    assert [(r["prompt_index"], r["sample_index"]) for r in read_records(path)] == [(0, 0), (0, 1)]
    assert path.read_bytes() == good + tail  # reading alone does not modify
    with RecordWriter(path) as w:
        assert w.dropped_bytes == len(tail) and w.done_keys == {(0, 0), (0, 1)}
        assert path.read_bytes() == good
        w.append([_rec(1, 0)])
    assert len(read_records(path)) == 3


def test_every_cut_point_of_a_batch_recovers(tmp_path):
    """A write torn at any byte keeps the earlier batches and exactly the batch's complete lines."""
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as w:
        w.append([_rec(0, 0)])
    base = path.read_bytes()
    batch = b"".join(json.dumps(_rec(1, s, pad="é" * 3)).encode() + b"\n" for s in range(3))
    ends = [i + 1 for i, b in enumerate(batch) if b == ord("\n")]
    for cut in range(len(batch) + 1):
        path.write_bytes(base + batch[:cut])
        with RecordWriter(path) as w:
            n_complete = sum(e <= cut for e in ends)
            assert w.done_keys == {(0, 0)} | {(1, s) for s in range(n_complete)}
            assert path.read_bytes() == base + batch[:max([0] + [e for e in ends if e <= cut])]


def test_corruption_before_the_last_line_raises_naming_file_and_line(tmp_path):
    path = tmp_path / "records.jsonl"
    lines = [json.dumps(_rec(0, s)) for s in range(4)]
    lines[1] = '{"prompt_index": 0, "sample_'
    path.write_text("\n".join(lines) + "\n")
    for fn in (RecordWriter, read_records):
        with pytest.raises(RecordsCorruptError, match=re.escape(f"{path}, line 2: invalid JSON")):
            fn(path)
    path.write_text(json.dumps(_rec(0, 0)) + "\n" + json.dumps(_rec(0, 0)) + "\n")
    with pytest.raises(RecordsCorruptError, match="line 2: duplicate key"):
        RecordWriter(path)
    path.write_text('{"prompt_index": 0}\n{"prompt_index": 1, "sample_index": 0}\n')
    with pytest.raises(RecordsCorruptError, match=r"line 1: record lacks key field\(s\) \['sample_index'\]"):
        RecordWriter(path)
    assert issubclass(RecordsCorruptError, ValueError)


KILL_CHILD = textwrap.dedent("""
    import sys, time
    from irisbench.core.records import RecordWriter
    path, n_prompts, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    w = RecordWriter(path)
    print("ready", flush=True)
    pad = "x" * 3000
    batch = []
    for p in range(n_prompts):
        for s in range(per):
            if not w.done((p, s)):
                batch.append({"prompt_index": p, "sample_index": s, "pad": pad[: 1000 * (p % 4)], "v": p / 7})
        if batch and (p % 3 == 2 or p == n_prompts - 1):   # batches of 1-3 prompts' images
            w.append(batch)
            print(" ".join(f"{r['prompt_index']},{r['sample_index']}" for r in batch), flush=True)
            batch = []
            time.sleep(0.005)  # 100 batches: >= 0.5 s of writing, longer than any kill's delay below
    print("finished", flush=True)
""")


def _check_file(path: Path) -> set[tuple[int, int]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    keys = [(r["prompt_index"], r["sample_index"]) for r in map(json.loads, data.splitlines())]
    assert len(keys) == len(set(keys)), "duplicate records after a crash"
    return set(keys)


def test_kill_9_at_random_moments_loses_nothing_and_never_duplicates(tmp_path):
    n_prompts, per = 300, 4
    expected = {(p, s) for p in range(n_prompts) for s in range(per)}
    path = tmp_path / "records.jsonl"
    cmd = [sys.executable, "-c", KILL_CHILD, str(path), str(n_prompts), str(per)]
    rng = random.Random(1234)
    partial_seen = 0
    for cycle in range(8):
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_child_env())
        early = ""
        if cycle % 2 == 0:  # from spawn: may land in start-up, in recovery, or while appending
            time.sleep(rng.uniform(0.0, 0.3))
        else:  # once writing has begun: after the first batch is reported (>= 99 batches x 5 ms remain)
            assert child.stdout.readline().strip() == "ready"
            early = child.stdout.readline()  # a batch, or "finished" where earlier cycles wrote everything
            time.sleep(rng.uniform(0.0, 0.08))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        out = early + out
        reported = {tuple(map(int, k.split(","))) for line in out.splitlines()
                    if line not in ("ready", "finished") for k in line.split()}
        if path.exists():
            with RecordWriter(path) as w:  # drops a torn tail
                keys = _check_file(path)
                assert w.done_keys == keys
            assert reported <= keys, "a batch reported as written was lost"
            assert keys <= expected
            partial_seen += 0 < len(keys) < len(expected)
    assert partial_seen >= 1, "no kill interrupted the writer mid-way; the test did not test anything"
    done = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    keys = _check_file(path)
    assert keys == expected and len(path.read_bytes().splitlines()) == len(expected)


# ------------------------------------------------------------------------------------------------
# Parquet, atomic writes, paths, env
# ------------------------------------------------------------------------------------------------

def test_parquet_round_trip_sorted_with_nested_values(tmp_path):
    jsonl, pq_path = tmp_path / "records.jsonl", tmp_path / "records.parquet"
    recs = [
        _rec(2, 1, tag="counting", score=0.25, details={"circle": [[1, 2, 3, 4, 0.9]]}, reasons=["a", "b"]),
        _rec(0, 3, tag="colors", score=1.0, details={}, reasons=[], seed=123456789012345),
        _rec(0, 0, tag="colors", score=None, details={"square": []}, reasons=["c"]),
        _rec(10, 0, tag="position", score=0.5, details=None, reasons=[], extra="only here"),
    ]
    with RecordWriter(jsonl) as w:
        w.append(recs[:2])
        w.append(recs[2:])
    assert write_parquet(jsonl, pq_path) == 4
    df = read_parquet(pq_path)
    assert list(zip(df.prompt_index, df.sample_index, strict=True)) == [(0, 0), (0, 3), (2, 1), (10, 0)]
    assert list(df.columns[:2]) == ["prompt_index", "sample_index"]
    by_key = {(r["prompt_index"], r["sample_index"]): r for r in recs}
    for row in df.to_dict("records"):
        orig = by_key[(row["prompt_index"], row["sample_index"])]
        assert row["details"] == orig["details"] and row["reasons"] == orig["reasons"]
        assert row["tag"] == orig["tag"] and bool(row["correct"]) == orig["correct"]
    assert df.loc[df.prompt_index == 10, "extra"].item() == "only here"
    assert df.loc[df.prompt_index == 2, "extra"].isna().item()
    assert df.loc[df.sample_index == 3, "seed"].item() == 123456789012345  # int64 survives
    assert np.isnan(df.loc[(df.prompt_index == 0) & (df.sample_index == 0), "score"].item())  # null


def test_parquet_refuses_mixed_types_naming_the_field(tmp_path):
    jsonl = tmp_path / "records.jsonl"
    with RecordWriter(jsonl) as w:
        w.append([_rec(0, 0, score=1.0), _rec(0, 1, score="high")])
    with pytest.raises(ValueError, match="field 'score' mixes value types"):
        write_parquet(jsonl, tmp_path / "r.parquet")
    assert not (tmp_path / "r.parquet").exists()


def test_atomic_writes(tmp_path):
    atomic_write_json(tmp_path / "a" / "results.json", {"x": np.float64(0.5), "n": np.int64(3)})
    assert json.loads((tmp_path / "a" / "results.json").read_text()) == {"x": 0.5, "n": 3}
    atomic_write_text(tmp_path / "a" / "results.json", "replaced")
    assert (tmp_path / "a" / "results.json").read_text() == "replaced"
    with pytest.raises(ValueError, match=r"results\.json\.x is nan"):
        atomic_write_json(tmp_path / "a" / "results.json", {"x": float("nan")})
    assert (tmp_path / "a" / "results.json").read_text() == "replaced"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["results.json"]


def test_new_run_path_is_unique_and_usable(tmp_path):
    paths = [new_run_path(tmp_path / "results", "eval-geneval") for _ in range(3)]
    assert len(set(paths)) == 3 and all(p.is_dir() for p in paths)
    pattern = r"eval-geneval-\d{8}-\d{6}(-\d+)?"
    assert all(re.fullmatch(pattern, p.name) for p in paths)
    RunDir.create(paths[0], kind="eval", config=CONFIG, env=ENV)  # reserved empty folder is accepted
    with pytest.raises(ValueError, match="path separators"):
        new_run_path(tmp_path, "../x")


def test_env_info_is_json_and_does_not_import_torch():
    code = ("import json, sys; from irisbench.core.provenance import env_info; e = env_info(); "
            "json.dumps(e, allow_nan=False); "
            "print(json.dumps({'torch': 'torch' in sys.modules, 'keys': sorted(e), 'pk': e['packages']}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_child_env(),
                         timeout=60, check=True)
    got = json.loads(out.stdout)
    assert got["torch"] is False
    wanted = {"python", "platform", "irisbench_version", "git", "packages", "cpu_count", "hostname", "time"}
    assert wanted <= set(got["keys"])
    assert got["pk"]["numpy"] == np.__version__ and "device" not in got["keys"]
    e = env_info()
    assert set(e["git"]) == {"commit", "dirty"}


def test_env_info_names_the_cpu_and_the_instruction_set_overrides(monkeypatch):
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), None) if Path("/proc/cpuinfo").is_file() else None
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    e = env_info()
    assert e["cpu_model"] == (model or e["cpu_model"]) and e["cpu_model"]
    assert e["env_vars"]["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert e["device"]["cpu_capability"] == str(torch.backends.cpu.get_cpu_capability())


def test_a_shipped_checkpoint_read_from_another_clone_is_the_same_config() -> None:
    from irisbench.core.runs import config_diff

    old = {"policy": {"checkpoint": "/tmp/clone-a/irisbench/assets/shapes-base", "parameters": 5}}
    moved = {"policy": {"checkpoint": "/work/main/irisbench/assets/shapes-base", "parameters": 5}}
    assert config_diff(old, moved) == []
    other = {"policy": {"checkpoint": "/work/main/irisbench/assets/textures-base", "parameters": 5}}
    assert config_diff(old, other) == ["  ~ policy.checkpoint: '/tmp/clone-a/irisbench/assets/shapes-base' -> "
                                       "'/work/main/irisbench/assets/textures-base'"]
    mine = {"policy": {"checkpoint": "/tmp/clone-a/results/runs/train/checkpoints/step-20", "parameters": 5}}
    assert len(config_diff(mine, {"policy": {**mine["policy"], "checkpoint": "/tmp/b/results/runs/train/"
                                                                            "checkpoints/step-20"}})) == 1
