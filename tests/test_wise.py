"""WISE: parsing, WiScore, summaries, prompt loading, scoring loop with synthetic judges, and OpenAIJudge
against a local http.server on 127.0.0.1 (bounded; shut down by the test)."""

from __future__ import annotations

import base64
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from irisbench.protocols import wise

PNG = wise.PNG_SIGNATURE + b"synthetic image bytes"


def prompt(pid: int, sub: str = "Biology") -> dict:
    return {"Prompt": f"prompt {pid}", "Explanation": f"explanation {pid}", "Category": "Natural Science",
            "Subcategory": sub, "prompt_id": pid}


# ------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Consistency: 2\nRealism: 1\nAesthetic Quality: 0", (2, 1, 0)),
        ("**Consistency**: 1\n**Realism**: 1\n**Aesthetic Quality**: 2", (1, 1, 2)),
        ("consistency 0, realism 2, aesthetic quality 1", (0, 2, 1)),
        ("Consistency：2\nRealism：2\nAesthetic Quality：2", (2, 2, 2)),  # full-width colon
        ("Consistency: 1\nRealism: 1\nAesthetic Quality: 1\nOn reflection, Consistency: 0", (0, 1, 1)),
        ("1\n2\n0", (1, 2, 0)),  # fallback: three bare lines
        ("Scores:\n 2 \n1\n0\n", (2, 1, 0)),
    ],
)
def test_parse_legacy_judgement(text, expected):
    assert wise.parse_legacy_judgement(text) == dict(zip(wise.LEGACY_KEYS, expected, strict=True))


@pytest.mark.parametrize(
    "text",
    [
        "Consistency: 2\nRealism: 1",  # one missing, no fallback
        "Consistency: 3\nRealism: 1\nAesthetic Quality: 0",  # out of range
        "1\n2\n0\n1",  # four bare lines
        "1\n2",
        "",
        "I cannot evaluate this image.",
    ],
)
def test_parse_legacy_judgement_failures(text):
    assert wise.parse_legacy_judgement(text) is None


def test_parse_verified_judgement():
    assert wise.parse_verified_judgement("Score: 1") == {"score": 1}
    assert wise.parse_verified_judgement("**Score:** 0") == {"score": 0}
    assert wise.parse_verified_judgement("score:1\nReason: fine") == {"score": 1}
    assert wise.parse_verified_judgement("<think>Maybe Score: 0?</think>\nScore: 1") == {"score": 1}
    assert wise.parse_verified_judgement("reasoning... Score: 0 </think> Score: 1") == {"score": 1}
    assert wise.parse_verified_judgement("Score: 1\nScore: 1") == {"score": 1}
    assert wise.parse_verified_judgement("Score: 1\nScore: 0") is None  # disagreeing
    assert wise.parse_verified_judgement("Score: 2") is None
    assert wise.parse_verified_judgement("Score: 10") is None
    assert wise.parse_verified_judgement("<think>Score: 1") is None  # unclosed thinking only
    assert wise.parse_verified_judgement("yes") is None


def test_wiscore():
    assert wise.wiscore(2, 2, 2) == pytest.approx(1.0)
    assert wise.wiscore(0, 0, 0) == 0.0
    assert wise.wiscore(1, 0, 0) == pytest.approx(0.35)
    assert wise.wiscore(2, 1, 0) == pytest.approx(0.8)
    assert wise.wiscore(0, 0, 2) == pytest.approx(0.1)
    for bad in [(3, 0, 0), (-1, 0, 0), (True, 0, 0), (None, 0, 0)]:
        with pytest.raises(ValueError):
            wise.wiscore(*bad)


def test_category_tables():
    assert [(c.first_id, c.last_id) for c in wise.WISE_LEGACY_CATEGORIES] == [
        (1, 400), (401, 567), (568, 700), (701, 800), (801, 900), (901, 1000)]
    assert [(c.first_id, c.last_id) for c in wise.WISE_VERIFIED_CATEGORIES] == [
        (1, 400), (401, 520), (521, 640), (641, 760), (761, 880), (881, 1000)]
    for table in (wise.WISE_LEGACY_CATEGORIES, wise.WISE_VERIFIED_CATEGORIES):
        assert sum(c.weight for c in table) == pytest.approx(1.0)
        assert sum(c.last_id - c.first_id + 1 for c in table) == 1000
    assert [c.weight for c in wise.WISE_LEGACY_CATEGORIES] == [0.4, 0.167, 0.133, 0.1, 0.1, 0.1]


# ------------------------------------------------------------------------------------------ summaries

LEGACY_BY_CATEGORY = {"culture": (2, 2, 2), "time": (1, 1, 1), "space": (0, 0, 0), "biology": (2, 0, 0),
                      "physics": (0, 2, 0), "chemistry": (0, 0, 2)}


def legacy_records() -> list[dict]:
    records = []
    for cat in wise.WISE_LEGACY_CATEGORIES:
        c, r, a = LEGACY_BY_CATEGORY[cat.name]
        for pid in range(cat.first_id, cat.last_id + 1):
            records.append({"prompt_id": pid, "consistency": c, "realism": r, "aesthetic_quality": a, "ok": True})
    return records


def test_legacy_summary_complete():
    out = wise.legacy_summary(legacy_records())
    means = {name: v["mean"] for name, v in out["per_category"].items()}
    assert means == pytest.approx({"culture": 1.0, "time": 0.5, "space": 0.0, "biology": 0.7, "physics": 0.2,
                                   "chemistry": 0.1})
    # 0.4*1 + 0.167*0.5 + 0.133*0 + 0.1*(0.7 + 0.2 + 0.1) = 0.5835
    assert out["overall"] == pytest.approx(0.5835)
    assert out["label"] == "WISE (GPT-4o legacy)"
    assert out["n_scored"] == 1000 and out["missing_ids"] == [] and out["failed_ids"] == []
    assert out["per_category"]["time"]["n"] == 167


def test_legacy_summary_missing_and_failed_ids_give_no_overall():
    records = [r for r in legacy_records() if r["prompt_id"] not in (17, 18, 19, 900)]
    out = wise.legacy_summary(records)
    assert out["overall"] is None and out["note"]
    assert out["missing_ids"] == ["17-19", "900"] and out["n_missing"] == 4
    assert out["per_category"]["culture"] == {"mean": pytest.approx(1.0), "n": 397, "n_expected": 400,
                                              "n_failed": 0, "weight": 0.4}
    records = legacy_records()
    records[500] = {"prompt_id": 501, "consistency": None, "realism": None, "aesthetic_quality": None, "ok": False}
    out = wise.legacy_summary(records)
    assert out["overall"] is None and out["failed_ids"] == ["501"] and out["n_failed"] == 1
    assert out["per_category"]["time"]["n"] == 166 and out["per_category"]["time"]["n_failed"] == 1
    assert out["per_category"]["time"]["mean"] == pytest.approx(0.5)  # the failure is not counted as 0
    with pytest.raises(wise.WiseDataError, match="appears twice"):
        wise.legacy_summary(legacy_records() + [legacy_records()[0]])
    with pytest.raises(wise.WiseDataError, match="prompt_id"):
        wise.legacy_summary([{"prompt_id": 0}])


def test_verified_summary_uses_new_ranges():
    records = [{"prompt_id": pid, "score": 1 if pid <= 400 or 521 <= pid <= 640 else 0} for pid in range(1, 1001)]
    out = wise.verified_summary(records)
    assert out["label"] == "WISE_Verified"
    assert out["per_category"]["culture"]["mean"] == 1.0
    assert out["per_category"]["space"]["mean"] == 1.0 and out["per_category"]["space"]["n"] == 120
    assert out["per_category"]["time"]["mean"] == 0.0
    assert out["overall"] == pytest.approx(0.40 + 0.12)
    # Id 530 is "space" in Verified but "time" in legacy.
    assert 530 in wise.WISE_VERIFIED_CATEGORIES[2] and 530 in wise.WISE_LEGACY_CATEGORIES[1]
    with pytest.raises(wise.WiseDataError, match="0 or 1"):
        wise.verified_summary([{"prompt_id": 1, "score": 2}])


# -------------------------------------------------------------------------------------------- prompts


def test_load_wise_prompts(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([prompt(1), prompt(2)]), encoding="utf-8")
    b.write_text(json.dumps([prompt(701)]), encoding="utf-8")
    assert [p["prompt_id"] for p in wise.load_wise_prompts([a, b])] == [1, 2, 701]
    assert wise.load_wise_prompts(a)[1]["Prompt"] == "prompt 2"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([{k: v for k, v in prompt(1).items() if k != "Explanation"}], r"\[0\]: required field 'Explanation'"),
        ([prompt(1), {**prompt(2), "prompt_id": "2"}], r"\[1\]\.prompt_id: must be an integer"),
        ([{**prompt(3), "Subcategory": 4}], r"\[0\]\.Subcategory: must be a string"),
        ([prompt(5), prompt(5)], r"\[1\]\.prompt_id: 5 already used"),
        ([{**prompt(1), "prompt_id": 1001}], r"\[0\]\.prompt_id"),
        ([{**prompt(1), "prompt_id": True}], r"\[0\]\.prompt_id"),
        ({"prompts": []}, "expected a JSON list"),
        ([], "contains no prompts"),
        (["text"], r"\[0\]: expected a JSON object"),
    ],
)
def test_load_wise_prompts_errors(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(wise.WiseDataError, match=message) as err:
        wise.load_wise_prompts(path)
    assert str(path) in str(err.value)


def test_load_wise_prompts_file_errors(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[\n{"Prompt": }\n]', encoding="utf-8")
    with pytest.raises(wise.WiseDataError, match=r"bad.json:2: invalid JSON"):
        wise.load_wise_prompts(bad_json)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'[{"Prompt": "caf\xe9"}]')
    with pytest.raises(wise.WiseDataError, match="not valid UTF-8"):
        wise.load_wise_prompts(latin)
    with pytest.raises(wise.WiseDataError, match="not found"):
        wise.load_wise_prompts(tmp_path / "absent.json")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    one.write_text(json.dumps([prompt(7)]), encoding="utf-8")
    two.write_text(json.dumps([prompt(7)]), encoding="utf-8")
    with pytest.raises(wise.WiseDataError, match=r"two.json\[0\].prompt_id: 7 already used at .*one.json\[0\]"):
        wise.load_wise_prompts([one, two])


# ----------------------------------------------------------------------------- scoring with fake judges


class ScriptedJudge:
    """Returns the scripted answers in turn (an Exception instance is raised)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls: list[tuple[bytes, int]] = []

    def __call__(self, png, prompt_record):
        self.calls.append((png, prompt_record["prompt_id"]))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_score_wise_legacy_retries_and_failures():
    prompts = [prompt(1), prompt(2), prompt(3)]
    judge = ScriptedJudge([
        "Consistency: 2\nRealism: 1\nAesthetic Quality: 1",  # id 1: first try
        "no idea", ConnectionError("reset"), "Consistency: 1\nRealism: 0\nAesthetic Quality: 0",  # id 2: third
        "??", "??", "??",  # id 3: fails
    ])
    records = wise.score_wise({1: PNG, 2: PNG, 3: PNG}, prompts, judge, protocol="legacy", retries=3)
    assert [r["prompt_id"] for r in records] == [1, 2, 3]
    r1, r2, r3 = records
    assert r1["ok"] and r1["attempts"] == 1 and r1["wiscore"] == pytest.approx(0.85) and r1["Subcategory"] == "Biology"
    assert r2["ok"] and r2["attempts"] == 3 and (r2["consistency"], r2["realism"]) == (1, 0)
    assert r2["wiscore"] == pytest.approx(0.35)
    assert not r3["ok"] and r3["attempts"] == 3 and r3["consistency"] is None and r3["wiscore"] is None
    assert "unparseable" in r3["error"] and r3["error"].count("attempt") == 3
    summary = wise.legacy_summary(records)
    assert summary["n_failed"] == 1 and summary["failed_ids"] == ["3"] and summary["overall"] is None
    assert summary["per_category"]["culture"]["mean"] == pytest.approx((0.85 + 0.35) / 2)
    assert judge.answers == [] and all(png == PNG for png, _ in judge.calls)


def test_score_wise_verified_and_inputs(tmp_path):
    prompts = [prompt(1), prompt(2), prompt(3)]
    (tmp_path / "1.png").write_bytes(PNG)
    (tmp_path / "3.png").write_bytes(PNG)
    judge = ScriptedJudge(["<think>hmm</think>Score: 1", "Score: 0"])
    records = wise.score_wise(tmp_path, prompts, judge, protocol="verified", retries=1)
    assert [(r["prompt_id"], r["score"], r["ok"]) for r in records] == [(1, 1, True), (3, 0, True)]  # id 2: no image
    assert wise.verified_summary(records)["missing_ids"] == ["2", "4-1000"]
    with pytest.raises(wise.WiseDataError, match="no prompt"):
        wise.score_wise({9: PNG}, prompts, ScriptedJudge([]), protocol="verified")
    with pytest.raises(wise.WiseDataError, match="not a PNG"):
        wise.score_wise({1: b"\xff\xd8\xff jpeg"}, prompts, ScriptedJudge([]), protocol="verified")
    with pytest.raises(ValueError, match="protocol"):
        wise.score_wise({1: PNG}, prompts, ScriptedJudge([]), protocol="v2")
    with pytest.raises(ValueError, match="retries"):
        wise.score_wise({1: PNG}, prompts, ScriptedJudge([]), retries=0)
    legacy_judge = wise.OpenAIJudge("http://127.0.0.1:9/v1", "m", protocol="legacy")
    with pytest.raises(ValueError, match="built for protocol 'legacy'"):
        wise.score_wise({1: PNG}, prompts, legacy_judge, protocol="verified")


def test_score_wise_threads_keep_order():
    prompts = [prompt(i) for i in range(1, 9)]
    judge = lambda png, p: f"Consistency: {p['prompt_id'] % 3}\nRealism: 0\nAesthetic Quality: 0"  # noqa: E731
    records = wise.score_wise({i: PNG for i in range(1, 9)}, prompts, judge, max_workers=4)
    assert [(r["prompt_id"], r["consistency"]) for r in records] == [(i, i % 3) for i in range(1, 9)]


# ------------------------------------------------------------------------------- OpenAIJudge over HTTP


@contextmanager
def chat_server(reply, port: int = 0):
    """A local chat-completions stub; ``reply(request_json) -> (status, body_bytes)``. Bound to 127.0.0.1 (on
    ``port``, default: a free one)."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        timeout = 5

        def do_POST(self):  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            status, payload = reply(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def completion(text) -> tuple[int, bytes]:
    return 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


def test_openai_judge_legacy_request_and_end_to_end():
    with chat_server(lambda body: completion("Consistency: 2\nRealism: 1\nAesthetic Quality: 1")) as (url, seen):
        judge = wise.OpenAIJudge(url, "gpt-4o-2024-05-13", api_key="sk-test", timeout=5)
        records = wise.score_wise({5: PNG}, [prompt(5)], judge, protocol="legacy")
    assert records[0]["ok"] and records[0]["wiscore"] == pytest.approx(0.85)  # (1.4 + 0.2 + 0.1) / 2
    (request,) = seen
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "gpt-4o-2024-05-13" and body["temperature"] == 0 and body["max_tokens"] == 2000
    system, user = body["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    text_part, image_part = user["content"]
    assert 'PROMPT: "prompt 5"' in text_part["text"] and 'EXPLANATION: "explanation 5"' in text_part["text"]
    assert "Aesthetic Quality" in text_part["text"]
    url_value = image_part["image_url"]["url"]
    assert url_value.startswith("data:image/png;base64,")
    assert base64.b64decode(url_value.split(",", 1)[1]) == PNG


def test_openai_judge_verified_defaults_and_content_parts():
    parts = [{"type": "text", "text": "Score: "}, {"type": "text", "text": "1"}]
    with chat_server(lambda body: completion(parts)) as (url, seen):
        judge = wise.OpenAIJudge(url + "/", "Qwen/Qwen3.5-35B-A3B", protocol="verified", timeout=5)
        assert judge(PNG, prompt(1)) == "Score: 1"
    body = seen[0]["body"]
    assert seen[0]["auth"] is None  # no key, no header
    assert body["max_tokens"] == 500 and body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "Score: 1" in body["messages"][1]["content"][0]["text"]


def test_openai_judge_errors():
    with chat_server(lambda body: (500, b'{"error": "overloaded"}')) as (url, _):
        with pytest.raises(wise.JudgeError, match="HTTP 500"):
            wise.OpenAIJudge(url, "m", timeout=5)(PNG, prompt(1))
    with chat_server(lambda body: (200, b"not json")) as (url, _):
        with pytest.raises(wise.JudgeError, match="not a chat completion"):
            wise.OpenAIJudge(url, "m", timeout=5)(PNG, prompt(1))
    # A failing endpoint inside score_wise: recorded failures, never a 0 score.
    with chat_server(lambda body: (503, b"{}")) as (url, seen):
        records = wise.score_wise({1: PNG}, [prompt(1)], wise.OpenAIJudge(url, "m", timeout=5), retries=2)
    assert len(seen) == 2 and not records[0]["ok"] and "HTTP 503" in records[0]["error"]
    with pytest.raises(ValueError, match="http"):
        wise.OpenAIJudge("ftp://example.org", "m")
