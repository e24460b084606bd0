"""``irisbench eval --suite wise``: prompt files, the WISE image folder reader, the stub judge, and the results
(per-category scores with CIs, the weighted overall and the missing-ids rule of docs/protocols.md §3), hand-computed."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from irisbench.cli import app
from irisbench.core import retry
from irisbench.evaluation.wise_eval import STUB_JUDGE, StubJudge, WiseOptions, evaluate_wise, read_wise_folder
from irisbench.protocols.wise import WiseDataError

runner = CliRunner()

WHITE, RED, GREEN, BLUE = (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255)
GREY, BLACK = (128, 128, 128), (0, 0, 0)


def colour_of(pid: int) -> tuple[int, int, int]:
    """The test images' colour by prompt id (legacy ranges): see the hand computations below."""
    if pid <= 400:
        return RED if pid % 2 else WHITE  # culture
    if pid <= 567:
        return GREEN  # time
    if pid <= 700:
        return GREY  # space
    if pid <= 800:
        return BLACK  # biology
    if pid <= 900:
        return WHITE if pid <= 850 else RED  # physics
    return BLUE  # chemistry


def entry(pid: int, text: str | None = None) -> dict:
    return {"Prompt": text or f"prompt {pid}", "Explanation": f"why {pid}", "Category": "c", "Subcategory": "s",
            "prompt_id": pid}


def write_prompt_folder(folder: Path, ids) -> Path:
    """The official three-file layout (plus a *_rewrite.json variant, which must be left out)."""
    folder.mkdir(parents=True)
    ids = list(ids)
    parts = {"cultural_common_sense.json": [i for i in ids if i <= 400],
             "spatio-temporal_reasoning.json": [i for i in ids if 400 < i <= 700],
             "natural_science.json": [i for i in ids if i > 700]}
    for name, part in parts.items():
        if part:
            (folder / name).write_text(json.dumps([entry(i) for i in part]))
    (folder / "natural_science_rewrite.json").write_text(json.dumps([entry(901)]))
    return folder


def write_images(folder: Path, ids) -> Path:
    folder.mkdir(parents=True)
    for pid in ids:
        Image.fromarray(np.full((2, 2, 3), colour_of(pid), dtype=np.uint8)).save(folder / f"{pid}.png")
    return folder


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("wise")
    return write_prompt_folder(root / "prompts", range(1, 1001)), write_images(root / "images", range(1, 1001))


def test_stub_judge_reads_colours_and_is_labelled_a_stub():
    import io

    def png(rgb):
        buf = io.BytesIO()
        Image.fromarray(np.full((2, 2, 3), rgb, dtype=np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    legacy = StubJudge("legacy")
    assert legacy(png(RED), entry(1)) == "Consistency: 2\nRealism: 0\nAesthetic Quality: 0"
    assert legacy(png(GREY), entry(1)) == "Consistency: 1\nRealism: 1\nAesthetic Quality: 1"
    assert StubJudge("verified")(png(GREY), entry(1)) == "Score: 1"
    assert StubJudge("verified")(png((127, 0, 0)), entry(1)) == "Score: 0"
    assert "stub" in legacy.describe()["warning"] and legacy.describe()["kind"] == STUB_JUDGE == "stub-for-tests"
    assert WiseOptions(prompts="x").judge is None  # never a default


def test_read_wise_folder(tmp_path: Path):
    items = [entry(i) for i in (3, 10, 401)]
    folder = write_images(tmp_path / "ok", (3, 10, 401))
    (folder / "notes.txt").write_text("ignored")
    got = read_wise_folder(folder, items)
    assert [(it["prompt_id"], j, p.name) for it, j, p in got] == [(3, 0, "3.png"), (10, 0, "10.png"),
                                                                 (401, 0, "401.png")]
    (folder / "10.png").unlink()
    with pytest.raises(WiseDataError, match=r"1 of 3 prompts have no image \(first: 10.png\)"):
        read_wise_folder(folder, items)
    assert [it["prompt_id"] for it, _, _ in read_wise_folder(folder, items, allow_missing=True)] == [3, 401]
    for bad, message in (("010.png", "not named <prompt_id>.png.*010.png"), ("x.png", "not named.*x.png"),
                         ("7.png", "not in the prompt file.*7.png")):
        (folder / bad).write_bytes((folder / "3.png").read_bytes())
        with pytest.raises(WiseDataError, match=message):
            read_wise_folder(folder, items, allow_missing=True)
        (folder / bad).unlink()
    (folder / "401.png").write_bytes(b"GIF89a not a png")
    with pytest.raises(WiseDataError, match="401.png: not a PNG"):
        read_wise_folder(folder, items, allow_missing=True)
    with pytest.raises(WiseDataError, match="no such folder"):
        read_wise_folder(tmp_path / "nope", items)


def test_wise_legacy_end_to_end_hand_computed(full, tmp_path: Path):
    prompts, images = full
    result = runner.invoke(app, ["eval", "--suite", "wise", "--prompts", str(prompts), "--images", str(images),
                                 "--judge", "stub-for-tests", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "stub judge" in result.output
    header = " ".join(result.output.split())  # the run header names the judge, the images and the run folder
    assert "eval wise: judge stub-for-tests" in header and "1 image per prompt; images from" in header
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    s = res["scores"]
    assert s["label"] == "WISE (GPT-4o legacy)" and res["policy"]["name"] == "external"
    # WiScore = (0.7 c + 0.2 r + 0.1 a) / 2: white 1.0, red 0.7, green 0.2, grey (1,1,1) 0.5, black 0, blue 0.1
    expected = {"culture": (200 * 0.7 + 200 * 1.0) / 400, "time": 0.2, "space": 0.5, "biology": 0.0,
                "physics": (50 * 1.0 + 50 * 0.7) / 100, "chemistry": 0.1}
    for cat, value in expected.items():
        t = s["tags"][cat]
        assert t["score"] == pytest.approx(value, abs=1e-12), cat
        assert t["ci_low"] - 1e-12 <= value <= t["ci_high"] + 1e-12
    assert s["tags"]["time"]["ci_low"] == pytest.approx(0.2) and s["tags"]["time"]["ci_high"] == pytest.approx(0.2)
    assert 0.7 < s["tags"]["culture"]["ci_low"] < 0.85 < s["tags"]["culture"]["ci_high"] < 1.0
    # overall = 0.4 culture + 0.167 time + 0.133 space + 0.1 (biology + physics + chemistry)
    overall = 0.4 * 0.85 + 0.167 * 0.2 + 0.133 * 0.5 + 0.1 * (0.0 + 0.85 + 0.1)
    assert overall == pytest.approx(0.5349)
    assert s["overall"]["score"] == pytest.approx(overall, abs=1e-12)
    assert s["overall"]["ci_low"] < overall < s["overall"]["ci_high"]
    assert s["n_missing"] == 0 and s["n_failed"] == 0 and res["counts"]["complete"]
    assert len(res["prompts"]["files"]) == 3  # the _rewrite variant is left out
    rec = json.loads((tmp_path / "run" / "records.jsonl").read_text().splitlines()[0])
    assert (rec["prompt_id"], rec["consistency"], rec["realism"], rec["aesthetic_quality"]) == (1, 2, 0, 0)


def test_wise_verified_end_to_end_hand_computed(full, tmp_path: Path):
    prompts, images = full
    res = evaluate_wise(WiseOptions(prompts=str(prompts), images=str(images), judge=STUB_JUDGE, protocol="verified",
                                    n_resamples=200), tmp_path / "run")
    s = res["scores"]
    assert s["label"] == "WISE_Verified"
    # stub: 1 when the mean red value > 127.5 (red, white, grey); verified ranges
    expected = {"culture": 1.0, "time": 0.0, "space": 73 / 120, "biology": 60 / 120, "physics": 80 / 120,
                "chemistry": 20 / 120}
    for cat, value in expected.items():
        assert s["tags"][cat]["score"] == pytest.approx(value, abs=1e-12), cat
    overall = 0.40 * 1.0 + 0.12 * (0.0 + 73 / 120 + 0.5 + 80 / 120 + 20 / 120)
    assert overall == pytest.approx(0.633)
    assert s["overall"]["score"] == pytest.approx(overall, abs=1e-12)


def test_wise_missing_ids_give_no_overall(full, tmp_path: Path):
    prompts, _ = full
    images = write_images(tmp_path / "partial", [i for i in range(1, 1001) if i not in (5, 6, 7, 900)])
    args = ["eval", "--suite", "wise", "--prompts", str(prompts), "--images", str(images), "--judge",
            "stub-for-tests"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "refused")])
    assert result.exit_code != 0 and "4 of 1000 prompts have no image (first: 5.png)" in result.output
    assert not (tmp_path / "refused").exists()
    result = runner.invoke(app, [*args, "--allow-missing", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    s = json.loads((tmp_path / "run" / "results.json").read_text())["scores"]
    assert s["overall"]["score"] is None and s["overall"]["ci_low"] is None
    assert s["missing_ids"] == ["5-7", "900"] and s["n_missing"] == 4 and s["n_scored"] == 996
    # culture without 5, 7 (red, 0.7) and 6 (white, 1.0); physics without 900 (red)
    assert s["tags"]["culture"]["score"] == pytest.approx((198 * 0.7 + 199 * 1.0) / 397, abs=1e-12)
    assert s["tags"]["physics"]["score"] == pytest.approx((50 * 1.0 + 49 * 0.7) / 99, abs=1e-12)
    assert "missing ids 5-7, 900" in result.output


def test_wise_generated_by_a_policy_and_resumed(tmp_path: Path, monkeypatch):
    file = tmp_path / "wise.json"
    file.write_text(json.dumps([entry(1, "a photo of a red circle"), entry(402, "a photo of two triangles"),
                                entry(950, "a photo of a white square")]))
    calls: list[int] = []
    real_call = StubJudge.__call__

    def counting(self, png, prompt):
        calls.append(prompt["prompt_id"])
        return real_call(self, png, prompt)

    monkeypatch.setattr(StubJudge, "__call__", counting)
    opts = WiseOptions(prompts=str(file), judge=STUB_JUDGE, policy="oracle", n_resamples=100)
    res = evaluate_wise(opts, tmp_path / "run")
    assert sorted(calls) == [1, 402, 950]
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "images").iterdir()) == ["1.png", "402.png", "950.png"]
    records = [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines()]
    for r in records:  # the stub's numbers from each saved image's mean colour
        mean = np.asarray(Image.open(run / r["image"]).convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
        assert [r["consistency"], r["realism"], r["aesthetic_quality"]] == [round(2 * v / 255) for v in mean]
        assert r["seed"] is not None and r["tag"] in ("culture", "time", "chemistry")
    assert res["scores"]["overall"]["score"] is None and res["scores"]["n_missing"] == 997
    assert res["policy"]["name"] == "oracle"
    again = evaluate_wise(opts, tmp_path / "run")
    assert len(calls) == 3 and again["scores"]["tags"] == res["scores"]["tags"]
    result = runner.invoke(app, ["metrics", str(run), "--metrics", "clip"])
    assert result.exit_code == 2 and "'wise' run" in result.output
    with pytest.raises(ValueError, match="config differs"):
        evaluate_wise(WiseOptions(prompts=str(file), judge=STUB_JUDGE, policy="oracle", seed=1), tmp_path / "run")


def test_wise_limit_is_per_category(full, tmp_path: Path):
    prompts, images = full
    res = evaluate_wise(WiseOptions(prompts=str(prompts), images=str(images), judge=STUB_JUDGE, limit=2,
                                    n_resamples=50), tmp_path / "run")
    assert res["prompts"]["n_prompts"] == 12 and res["prompts"]["limit_per_category"] == 2
    assert {t: v["n_images"] for t, v in res["scores"]["tags"].items()} == dict.fromkeys(
        ("culture", "time", "space", "biology", "physics", "chemistry"), 2)


@pytest.mark.parametrize("extra, message", [
    ([], "needs a judge"),
    (["--judge", "gpt4o"], "http(s) URL"),
    (["--judge", "http://127.0.0.1:9/v1"], "--judge-model"),
    (["--judge", "stub-for-tests", "--metrics", "clip"], "--metrics does not apply"),
    (["--judge", "stub-for-tests", "--wise-protocol", "v2"], "protocol must be one of"),
])
def test_wise_cli_errors_are_one_line(tmp_path: Path, extra, message):
    file = tmp_path / "wise.json"
    file.write_text(json.dumps([entry(1, "a photo of a red circle")]))
    result = runner.invoke(app, ["eval", "--suite", "wise", "--policy", "oracle", "--prompts", str(file), *extra,
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and message in result.output.replace("\n", " ")
    result = runner.invoke(app, ["eval", "--suite", "wise", "--judge", "stub-for-tests"])
    assert result.exit_code != 0 and "needs --prompts" in result.output


def test_wise_with_an_openai_compatible_judge_and_failed_answers(tmp_path: Path, monkeypatch):
    from test_wise import chat_server, completion

    waits: list[float] = []
    monkeypatch.setattr(retry, "sleep", waits.append)

    file = tmp_path / "wise.json"
    file.write_text(json.dumps([entry(pid) for pid in (1, 2, 3, 641)]))
    images = write_images(tmp_path / "images", (1, 2, 3, 641))

    def reply(body):
        text = body["messages"][1]["content"][0]["text"]
        if 'PROMPT: "prompt 2"' in text:
            return completion("I would rather not say.")  # unparseable on every attempt: a failure, not a 0
        return completion("Score: 0" if 'PROMPT: "prompt 641"' in text else "Score: 1")

    monkeypatch.setenv("MY_JUDGE_KEY", "sk-local")
    with chat_server(reply) as (url, seen):
        result = runner.invoke(app, ["eval", "--suite", "wise", "--wise-protocol", "verified", "--prompts", str(file),
                                     "--images", str(images), "--judge", url, "--judge-model", "qwen-local",
                                     "--judge-api-key-env", "MY_JUDGE_KEY", "--allow-failures",
                                     "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "1 of 4 images failed to be judged" in result.output  # accepted, but said
    assert len(seen) == 3 + 3 and {s["auth"] for s in seen} == {"Bearer sk-local"}  # prompt 2: three attempts
    assert waits == [2.0, 4.0]  # between prompt 2's attempts
    assert {s["body"]["model"] for s in seen} == {"qwen-local"}
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    s = res["scores"]
    assert s["failed_ids"] == ["2"] and s["n_failed"] == 1 and s["overall"]["score"] is None
    assert s["tags"]["culture"]["score"] == 1.0 and s["tags"]["culture"]["n_failed"] == 1
    assert s["tags"]["biology"]["score"] == 0.0  # 641 is biology in the verified ranges
    assert res["judge"]["model"] == "qwen-local" and "sk-local" not in (tmp_path / "run" / "config.yaml").read_text()
    assert res["counts"]["failed"] == 1 and res["counts"]["judged"] == 3


def test_suites_ls_names_wise():
    result = runner.invoke(app, ["suites", "ls"])
    assert result.exit_code == 0 and "wise-legacy" in result.output


# ------------------------------------------------------------------------------ a judge that fails, then works


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def judged_ids(seen: list[dict]) -> list[int]:
    return sorted(int(re.search(r'PROMPT: "prompt (\d+)"', s["body"]["messages"][1]["content"][0]["text"]).group(1))
                  for s in seen)


@pytest.fixture
def judge_run(tmp_path: Path, monkeypatch):
    """Four verified-protocol prompts with images, a judge port with nothing listening yet, the CLI arguments,
    and the waits the backoff asked for (recorded, never slept)."""
    waits: list[float] = []
    monkeypatch.setattr(retry, "sleep", waits.append)
    ids = (1, 2, 3, 641)
    file = tmp_path / "wise.json"
    file.write_text(json.dumps([entry(pid) for pid in ids]))
    images = write_images(tmp_path / "images", ids)
    port = free_port()
    args = ["eval", "--suite", "wise", "--wise-protocol", "verified", "--prompts", str(file), "--images",
            str(images), "--judge-model", "qwen-local", "--out", str(tmp_path / "run")]
    return args, port, waits, tmp_path / "run"


def error_lines(output: str) -> list[str]:
    return [x for x in output.splitlines() if x.startswith("error:")]


def test_wise_judge_down_then_up_retries_with_backoff_and_rejudges_only_failures(judge_run):
    from test_wise import chat_server, completion

    args, port, waits, run = judge_run
    args = [*args, "--judge", f"http://127.0.0.1:{port}/v1"]
    result = runner.invoke(app, args)  # the judge is down
    assert result.exit_code == 1
    (line,) = error_lines(result.output)
    assert "4 of 4 images failed to be judged after 3 attempt(s) each" in line and "Connection refused" in line
    assert "--allow-failures" in line
    assert waits == [2.0, 4.0] * 4  # 3 attempts per image: two waits, doubling
    res = json.loads((run / "results.json").read_text())
    assert res["counts"]["complete"] is False and res["counts"]["failed"] == 4 and res["counts"]["judged"] == 0
    assert res["failures"]["first_cause"].endswith("request failed: Connection refused")

    def reply(body):  # prompt 2 gets an unparseable answer on every attempt
        text = body["messages"][1]["content"][0]["text"]
        if 'PROMPT: "prompt 2"' in text:
            return completion("I would rather not say.")
        return completion("Score: 0" if 'PROMPT: "prompt 641"' in text else "Score: 1")

    waits.clear()
    with chat_server(reply, port=port) as (_, seen):  # the judge comes up on the same address
        result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert judged_ids(seen) == [1, 2, 2, 2, 3, 641] and waits == [2.0, 4.0]
    (line,) = error_lines(result.output)
    assert "1 of 4 images failed" in line and "prompt 2: unparseable answer" in line

    with chat_server(lambda body: completion("Score: 1"), port=port) as (_, seen):
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert judged_ids(seen) == [2]  # only what failed
    res = json.loads((run / "results.json").read_text())
    assert res["counts"]["complete"] is True and res["counts"]["failed"] == 0 and res["counts"]["rejudged"] == 1
    assert "failures" not in res
    records = [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines()]
    assert sorted((r["prompt_id"], r["score"], r["ok"]) for r in records) == [
        (1, 1, True), (2, 1, True), (3, 1, True), (641, 0, True)]
    assert res["scores"]["tags"]["culture"]["score"] == 1.0 and res["scores"]["tags"]["biology"]["score"] == 0.0


def test_wise_judge_url_and_model_may_change_under_allow_config_change(judge_run):
    from test_wise import chat_server, completion

    args, port, waits, run = judge_run
    result = runner.invoke(app, [*args, "--judge", f"http://127.0.0.1:{port}/v1"])
    assert result.exit_code == 1 and "4 of 4 images failed" in result.output
    with chat_server(lambda body: completion("Score: 1")) as (url, seen):  # elsewhere, another model
        moved = [a if a != "qwen-local" else "qwen-big" for a in args] + ["--judge", url]
        result = runner.invoke(app, moved)
        assert result.exit_code == 2 and "allow_config_change" in result.output and seen == []
        result = runner.invoke(app, [*moved, "--allow-config-change", "--wise-protocol", "legacy"])
        assert result.exit_code == 2 and seen == []
        (line,) = error_lines(result.output)
        assert "refused: " in line and "judge.protocol, label, protocol. Use a new run folder" in line
        result = runner.invoke(app, [*moved, "--allow-config-change"])
    assert result.exit_code == 0, result.output
    assert judged_ids(seen) == [1, 2, 3, 641] and {s["body"]["model"] for s in seen} == {"qwen-big"}
    res = json.loads((run / "results.json").read_text())
    assert res["judge"]["url"] == f"{url}/chat/completions" and res["judge"]["model"] == "qwen-big"
    assert res["judged_by"] == {f"qwen-big @ {url}/chat/completions": 4}
    assert res["config_changes"] == ["judge.model", "judge.url"]
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["judge"]["model"] == "qwen-big"
    assert len(list(run.glob("config.*.yaml"))) == 1  # the first judge's config, kept


def test_backoff_is_bounded_and_injected():
    assert retry.Backoff(3, first_wait=2.0).waits() == [2.0, 4.0]
    assert retry.Backoff(6, first_wait=2.0, max_wait=5.0).waits() == [2.0, 4.0, 5.0, 5.0, 5.0]
    slept: list[float] = []
    b = retry.Backoff(3, first_wait=1.5, sleep=slept.append)
    for attempt in (1, 2, 3):
        b.pause(attempt)
    assert slept == [1.5, 3.0]  # nothing after the last attempt
    with pytest.raises(ValueError, match="retries must be >= 1"):
        retry.Backoff(0)
    with pytest.raises(ValueError, match="factor"):
        retry.Backoff(2, factor=0.5)
