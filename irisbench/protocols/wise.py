"""WISE (PKU-YuanGroup, arXiv 2503.07265): prompt loading, judge-output parsing, WiScore and summaries.

Two protocols, never to be mixed (docs/protocols.md §3):

- "legacy" — "WISE (GPT-4o legacy)", used by papers up to early 2026 (IRIS included). A judge (GPT-4o-2024-05-13,
  temperature 0, max_tokens 2000) scores Consistency, Realism and Aesthetic Quality 0-2 per image;
  WiScore = (0.7 c + 0.2 r + 0.1 a) / 2 in [0, 1]; category score = mean WiScore over its prompt ids;
  overall = 0.4 Cultural + 0.167 Time + 0.133 Space + 0.1 Biology + 0.1 Physics + 0.1 Chemistry.
- "verified" — "WISE_Verified" (default upstream since 2026-04-19): a judge (Qwen3.5-35B-A3B through an
  OpenAI-compatible vLLM endpoint, temperature 0, max_tokens 500, thinking off) answers "Score: 0|1";
  overall = 0.40 culture + 0.12 x (time + space + biology + physics + chemistry), new id ranges.

The judge is pluggable (``Judge``: PNG bytes and the prompt record in, judge text out); ``OpenAIJudge`` talks to
any OpenAI-compatible chat-completions endpoint with ``urllib`` only. The judge instructions are our own
wording of the official rubric, not the official text, so a GPT-4o run here is close to, not identical with,
the official setup (unverified how much this moves scores).

Departures from the official scripts, all deliberate:

- A failed parse (after ``retries`` attempts) is recorded as a failure and reported; the official code writes
  the sentinel 999 into the score file (or skips the id) and its summaries then refuse or silently drop it.
- Failed calls may be retried after a bounded exponential backoff (``irisbench.core.retry.Backoff``); the
  official loop retries at once.
- A legacy score outside 0-2 (the official regex takes any digit) is a parse failure, not a number.
- Categories are assigned by prompt-id range (the ranges of the official files), not by the Subcategory label.
- Overall scores are only given when every one of the 1000 ids has a parsed score; otherwise the summary says
  which ids are missing or failed. Values are not rounded (the official print shows 2 decimals).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError, UsageError, read_utf8
from irisbench.core.retry import Backoff, short_cause

LEGACY_LABEL = "WISE (GPT-4o legacy)"
VERIFIED_LABEL = "WISE_Verified"
PROTOCOLS = ("legacy", "verified")
N_PROMPTS = 1000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class WiseCategory:
    name: str
    first_id: int
    last_id: int  # inclusive
    weight: float

    def __contains__(self, prompt_id: object) -> bool:
        return isinstance(prompt_id, int) and self.first_id <= prompt_id <= self.last_id


WISE_LEGACY_CATEGORIES: tuple[WiseCategory, ...] = (
    WiseCategory("culture", 1, 400, 0.4),
    WiseCategory("time", 401, 567, 0.167),
    WiseCategory("space", 568, 700, 0.133),
    WiseCategory("biology", 701, 800, 0.1),
    WiseCategory("physics", 801, 900, 0.1),
    WiseCategory("chemistry", 901, 1000, 0.1),
)
WISE_VERIFIED_CATEGORIES: tuple[WiseCategory, ...] = (
    WiseCategory("culture", 1, 400, 0.40),
    WiseCategory("time", 401, 520, 0.12),
    WiseCategory("space", 521, 640, 0.12),
    WiseCategory("biology", 641, 760, 0.12),
    WiseCategory("physics", 761, 880, 0.12),
    WiseCategory("chemistry", 881, 1000, 0.12),
)

PROMPT_FIELDS = ("Prompt", "Explanation", "Category", "Subcategory", "prompt_id")


class WiseDataError(IrisbenchError, ValueError):
    """A WISE prompt file, image set or record list that does not follow the expected layout."""


class JudgeError(IrisbenchError, RuntimeError):
    """The judge endpoint failed or answered something that is not a chat completion."""


def wise_categories(protocol: str) -> tuple[WiseCategory, ...]:
    """The categories (prompt-id ranges and weights) of a WISE protocol: ``legacy`` or ``verified``."""
    if protocol not in PROTOCOLS:
        raise WiseDataError(f"WISE protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return WISE_LEGACY_CATEGORIES if protocol == "legacy" else WISE_VERIFIED_CATEGORIES


def category_of(prompt_id: int, protocol: str) -> str:
    """The name of the WISE category holding ``prompt_id`` under ``protocol``."""
    for cat in wise_categories(protocol):
        if prompt_id in cat:
            return cat.name
    raise WiseDataError(f"prompt_id {prompt_id} is in no WISE category")


# ------------------------------------------------------------------------------------------- prompts


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_prompt(obj: object, where: str) -> dict:
    """Check one WISE prompt record (fields Prompt, Explanation, Category, Subcategory, prompt_id)."""
    if not isinstance(obj, dict):
        raise WiseDataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in PROMPT_FIELDS:
        if key not in obj:
            raise WiseDataError(f"{where}: required field {key!r} is missing")
    for key in ("Prompt", "Explanation", "Category", "Subcategory"):
        if not isinstance(obj[key], str):
            raise WiseDataError(f"{where}.{key}: must be a string, got {obj[key]!r}")
    if not obj["Prompt"].strip():
        raise WiseDataError(f"{where}.Prompt: is empty")
    pid = obj["prompt_id"]
    if not _is_int(pid) or not 1 <= pid <= N_PROMPTS:
        raise WiseDataError(f"{where}.prompt_id: must be an integer in 1..{N_PROMPTS}, got {pid!r}")
    return obj


def load_wise_prompts(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[dict]:
    """Read the user-supplied WISE prompt JSON files (each a list of prompt objects), in the order given.

    The prompt files are not shipped with irisbench. Errors name the file, the list index and the field;
    a prompt_id seen twice (within or across files) is an error.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[dict] = []
    seen: dict[int, str] = {}
    for path in paths:
        text = read_utf8(path, WiseDataError, "WISE prompt file", "a .json prompt file")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise WiseDataError(f"{path}:{err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(data, list):
            raise WiseDataError(f"{path}: expected a JSON list of prompt objects, got {type(data).__name__}")
        if not data:
            raise WiseDataError(f"{path}: contains no prompts")
        for index, obj in enumerate(data):
            where = f"{path}[{index}]"
            validate_prompt(obj, where)
            pid = obj["prompt_id"]
            if pid in seen:
                raise WiseDataError(f"{where}.prompt_id: {pid} already used at {seen[pid]}")
            seen[pid] = where
            out.append(obj)
    return out


# ------------------------------------------------------------------------------------------- parsing

_LEGACY_RE = re.compile(r"\*{0,2}(Consistency|Realism|Aesthetic Quality)\*{0,2}\s*[:：]?\s*(\d)", re.IGNORECASE)
_BARE_LINE_RE = re.compile(r"^\s*(\d)\s*$")
_VERIFIED_RE = re.compile(r"\*{0,2}Score\*{0,2}\s*[:：]\s*\*{0,2}\s*(\d)(?!\d)", re.IGNORECASE)
_THINK_RE = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)
LEGACY_KEYS = ("consistency", "realism", "aesthetic_quality")


def parse_legacy_judgement(text: str) -> dict | None:
    """Consistency / Realism / Aesthetic Quality (0-2 each) from a legacy judge answer, or None.

    The official regex: the metric name (case-insensitive, optional ``**`` around it), optional colon, one
    digit; a later mention of the same metric overrides an earlier one. Fallback when not all three are
    named: exactly three lines holding a bare digit, read in the order Consistency, Realism, Aesthetic Quality.
    Any value outside 0-2 makes the answer unparseable.
    """
    if not isinstance(text, str):
        return None
    found: dict[str, int] = {}
    for name, digit in _LEGACY_RE.findall(text):
        found[name.lower().replace(" ", "_")] = int(digit)
    if len(found) < 3:
        bare = [int(m.group(1)) for line in text.splitlines() if (m := _BARE_LINE_RE.match(line))]
        if len(bare) != 3:
            return None
        found = dict(zip(LEGACY_KEYS, bare, strict=True))
    if not all(0 <= found[k] <= 2 for k in LEGACY_KEYS):
        return None
    return {k: found[k] for k in LEGACY_KEYS}


def strip_thinking(text: str) -> str:
    """Remove ``<think>...</think>`` blocks (an unclosed one to the end) and anything before a stray ``</think>``."""
    text = _THINK_RE.sub("", text)
    if "</think>" in text.lower():
        text = text[text.lower().rindex("</think>") + len("</think>") :]
    return text


def parse_verified_judgement(text: str) -> dict | None:
    """``{"score": 0 | 1}`` from a WISE_Verified judge answer ("Score: 0" / "Score: 1"), or None.

    Thinking text is stripped first. Several "Score:" lines must agree; a digit other than 0/1 is unparseable.
    """
    if not isinstance(text, str):
        return None
    values = {int(d) for d in _VERIFIED_RE.findall(strip_thinking(text))}
    if len(values) != 1:
        return None
    value = values.pop()
    return {"score": value} if value in (0, 1) else None


def wiscore(c: float, r: float, a: float) -> float:
    """WiScore of one image: (0.7 consistency + 0.2 realism + 0.1 aesthetic) / 2, in [0, 1]."""
    for name, value in (("consistency", c), ("realism", r), ("aesthetic_quality", a)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 2):
            raise UsageError(f"{name} must be a number in 0..2, got {value!r}")
    return (0.7 * c + 0.2 * r + 0.1 * a) / 2


# ------------------------------------------------------------------------------------------ summaries


def _ranges(ids: Iterable[int]) -> list[str]:
    """Compress sorted ids into "a-b" / "a" strings."""
    out: list[str] = []
    ids = sorted(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(f"{ids[i]}-{ids[j]}" if j > i else f"{ids[i]}")
        i = j + 1
    return out


def _summary(
    records: Iterable[Mapping],
    categories: Sequence[WiseCategory],
    value: Callable[[Mapping], float | None],
    label: str,
) -> dict:
    values: dict[int, float] = {}
    failed: list[int] = []
    seen: set[int] = set()
    for index, rec in enumerate(records):
        if not isinstance(rec, Mapping) or "prompt_id" not in rec:
            raise WiseDataError(f"records[{index}]: expected a mapping with a 'prompt_id'")
        pid = rec["prompt_id"]
        if not _is_int(pid) or not 1 <= pid <= N_PROMPTS:
            raise WiseDataError(f"records[{index}].prompt_id: must be an integer in 1..{N_PROMPTS}, got {pid!r}")
        if pid in seen:
            raise WiseDataError(f"records[{index}].prompt_id: {pid} appears twice")
        seen.add(pid)
        v = value(rec) if rec.get("ok", True) else None
        if v is None:
            failed.append(pid)
        else:
            values[pid] = v
    per_category = {}
    for cat in categories:
        vals = [v for pid, v in values.items() if pid in cat]
        per_category[cat.name] = {
            "mean": math.fsum(vals) / len(vals) if vals else None,
            "n": len(vals),
            "n_expected": cat.last_id - cat.first_id + 1,
            "n_failed": sum(1 for pid in failed if pid in cat),
            "weight": cat.weight,
        }
    missing = sorted(set(range(1, N_PROMPTS + 1)) - seen)
    complete = not missing and not failed
    overall = math.fsum(c.weight * per_category[c.name]["mean"] for c in categories) if complete else None
    return {
        "label": label,
        "per_category": per_category,
        "overall": overall,
        "n_scored": len(values),
        "n_failed": len(failed),
        "failed_ids": _ranges(failed),
        "n_missing": len(missing),
        "missing_ids": _ranges(missing),
        "note": None if complete else "overall not computed: every one of the 1000 prompt ids needs a parsed score",
    }


def _legacy_value(rec: Mapping) -> float | None:
    vals = [rec.get(k) for k in LEGACY_KEYS]
    if any(v is None for v in vals):
        return None
    return wiscore(*vals)


def _verified_value(rec: Mapping) -> float | None:
    v = rec.get("score")
    if v is None:
        return None
    if v not in (0, 1) or isinstance(v, bool):
        raise WiseDataError(f"prompt {rec.get('prompt_id')!r}: verified score must be 0 or 1, got {v!r}")
    return float(v)


def legacy_summary(records: Iterable[Mapping]) -> dict:
    """Per-category mean WiScore and the weighted overall ("WISE (GPT-4o legacy)").

    Records need ``prompt_id`` and ``consistency``/``realism``/``aesthetic_quality`` (None, or ``ok`` False,
    marks a failure). The overall is given only when all 1000 ids have a score; otherwise it is None and
    ``missing_ids`` / ``failed_ids`` say why.
    """
    return _summary(records, WISE_LEGACY_CATEGORIES, _legacy_value, LEGACY_LABEL)


def verified_summary(records: Iterable[Mapping]) -> dict:
    """Per-category mean binary score and the weighted overall ("WISE_Verified"); same rules as legacy."""
    return _summary(records, WISE_VERIFIED_CATEGORIES, _verified_value, VERIFIED_LABEL)


# ----------------------------------------------------------------------------------------- the judge

Judge = Callable[[bytes, dict], str]

_LEGACY_SYSTEM = (
    "You audit generated images for quality. Be severe and follow the scoring protocol to the letter."
)
_LEGACY_USER = """Score the attached image against the prompt below. Reply with the three scores only.

You are judging a text-to-image model. Hold it to the highest standard: the top score is for images that are
outstanding on that criterion, and when in doubt choose the lower score.

Criteria, each an integer from 0 to 2:

Consistency: does the image show what the PROMPT asks for (the EXPLANATION says what is meant)?
  0 = key elements are missing or contradict the prompt.
  1 = some elements are right but others are missing, inaccurate or off the prompt's intent.
  2 = every element and nuance of the prompt is shown correctly and unambiguously.

Realism: how believable is the rendering?
  0 = clearly artificial, physically impossible or visually broken.
  1 = mostly believable, with visible flaws or unrealistic details.
  2 = looks like a real photograph: correct physics, lighting, materials and spatial layout, no generation
      artefacts.

Aesthetic Quality: how good is the image as a picture?
  0 = poor composition, unpleasant to look at.
  1 = acceptable composition and colours, nothing special.
  2 = exceptional: striking composition, harmonious colours, a clear artistic vision.

A 2 should be rare on every criterion: it needs flawless adherence to the prompt (Consistency), photographic
fidelity (Realism) or real artistic merit, not just a pleasant look (Aesthetic Quality).

Answer with exactly three lines and nothing else, in this form:
Consistency: <0-2>
Realism: <0-2>
Aesthetic Quality: <0-2>

PROMPT: "{prompt}"
EXPLANATION: "{explanation}"
"""

_VERIFIED_SYSTEM = (
    "You check whether a generated image correctly shows the world knowledge that a prompt asks for."
)
_VERIFIED_USER = """The prompt below describes its subject indirectly; the explanation says what a correct image
must show. Decide whether the attached image is a correct and usable answer.

Give 1 only if both hold:
- the image shows the intended subject, attributes and situation described by the explanation, with no
  factual error about them (world-knowledge correctness);
- the image is realistic and usable: the subject is recognisable and not ruined by artefacts, distortion or
  garbled content.
Otherwise give 0.

PROMPT: "{prompt}"
EXPLANATION: "{explanation}"

Reply with one line only: "Score: 1" or "Score: 0".
"""


def judge_messages(png: bytes, prompt: Mapping, protocol: str = "legacy") -> list[dict]:
    """Chat messages for one image: a system turn, then a user turn with the instructions and the image as a
    base64 PNG data URL (the official message layout)."""
    if protocol not in PROTOCOLS:
        raise UsageError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    system, user = (_LEGACY_SYSTEM, _LEGACY_USER) if protocol == "legacy" else (_VERIFIED_SYSTEM, _VERIFIED_USER)
    text = user.format(prompt=prompt["Prompt"], explanation=prompt["Explanation"])
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return [
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]},
    ]


class OpenAIJudge:
    """A judge behind an OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, ...), via urllib.

    ``base_url`` is the API root, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
    Defaults follow the protocol: legacy max_tokens 2000; verified max_tokens 500 and, unless ``extra_body``
    is given, ``{"chat_template_kwargs": {"enable_thinking": False}}`` (vLLM's switch for Qwen thinking).
    The API key is only sent when given.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        *,
        protocol: str = "legacy",
        timeout: float = 120.0,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise UsageError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.temperature = temperature
        self.max_tokens = max_tokens if max_tokens is not None else (2000 if protocol == "legacy" else 500)
        self.protocol = protocol
        self.timeout = timeout
        if extra_body is None and protocol == "verified":
            extra_body = {"chat_template_kwargs": {"enable_thinking": False}}
        self.extra_body = dict(extra_body or {})

    def payload(self, png: bytes, prompt: Mapping) -> dict:
        body = {
            "model": self.model,
            "messages": judge_messages(png, prompt, self.protocol),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        body.update(self.extra_body)
        return body

    def __call__(self, png: bytes, prompt: dict) -> str:
        data = json.dumps(self.payload(png, prompt)).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # http(s) only: checked in __init__
                body = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:500].decode("utf-8", "replace")
            raise JudgeError(f"{self.url}: HTTP {err.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise JudgeError(f"{self.url}: request failed: {short_cause(err)}") from None
        try:
            content = json.loads(body)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"{self.url}: not a chat completion: {body[:300]!r}") from None
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise JudgeError(f"{self.url}: message content is {type(content).__name__}, expected text")
        return content


# ------------------------------------------------------------------------------------------- scoring


def _image_bytes(images: Mapping[int, Any] | str | os.PathLike[str], pid: int) -> bytes | None:
    if isinstance(images, (str, os.PathLike)):
        path = Path(images) / f"{pid}.png"
        return path.read_bytes() if path.is_file() else None
    if pid not in images:
        return None
    item = images[pid]
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    return Path(item).read_bytes()


def score_wise(
    images: Mapping[int, Any] | str | os.PathLike[str],
    prompts: Sequence[dict],
    judge: Judge,
    protocol: str = "legacy",
    retries: int = 3,
    *,
    max_workers: int = 1,
    backoff: Backoff | None = None,
) -> list[dict]:
    """Judge every prompt that has an image; one record per judged image, sorted by prompt_id.

    ``images`` maps prompt_id to PNG bytes or a file path, or is a folder holding ``{prompt_id}.png``.
    Each image gets at most ``retries`` judge calls (the official loop counts attempts); a call that raises or
    whose answer does not parse counts as a failed attempt. ``backoff`` (``irisbench.core.retry.Backoff``), when
    given, sets the number of calls and the waits between them; without it the calls follow each other at
    once, as in the official loop. After the last failed attempt the record has ``ok=False``, the metric
    fields None, ``error`` listing every attempt and ``cause`` the last one: it is counted as a failure by the
    summaries, never as 0. Prompts without an image get no record (the summaries list them as missing).
    """
    if protocol not in PROTOCOLS:
        raise UsageError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if retries < 1:
        raise UsageError(f"retries must be >= 1, got {retries}")
    backoff = backoff or Backoff(attempts=retries, first_wait=0.0)
    retries = backoff.attempts
    judge_protocol = getattr(judge, "protocol", None)
    if judge_protocol is not None and judge_protocol != protocol:
        raise UsageError(f"judge was built for protocol {judge_protocol!r} but protocol={protocol!r}")
    by_id: dict[int, dict] = {}
    for index, prompt in enumerate(prompts):
        validate_prompt(prompt, f"prompts[{index}]")
        if prompt["prompt_id"] in by_id:
            raise WiseDataError(f"prompts[{index}].prompt_id: {prompt['prompt_id']} appears twice")
        by_id[prompt["prompt_id"]] = prompt
    if not isinstance(images, (str, os.PathLike)):
        extra = sorted(set(images) - set(by_id), key=str)
        if extra:
            raise WiseDataError(f"images given for prompt ids with no prompt: {extra[:10]}")
    parse = parse_legacy_judgement if protocol == "legacy" else parse_verified_judgement
    fields = LEGACY_KEYS if protocol == "legacy" else ("score",)

    jobs: list[tuple[int, bytes]] = []
    for pid in sorted(by_id):
        png = _image_bytes(images, pid)
        if png is None:
            continue
        if not png.startswith(PNG_SIGNATURE):
            raise WiseDataError(f"image for prompt_id {pid}: not a PNG file (the judge is sent a PNG data URL)")
        jobs.append((pid, png))

    def run(job: tuple[int, bytes]) -> dict:
        pid, png = job
        prompt = by_id[pid]
        record: dict[str, Any] = {"prompt_id": pid, "Subcategory": prompt["Subcategory"], "protocol": protocol}
        errors: list[str] = []
        raw: str | None = None
        for attempt in range(1, retries + 1):
            try:
                raw = judge(png, prompt)
            except Exception as err:  # any judge failure is a failed attempt
                errors.append(f"{type(err).__name__}: {err}")
            else:
                parsed = parse(raw)
                if parsed is not None:
                    record.update(parsed)
                    if protocol == "legacy":
                        record["wiscore"] = wiscore(*(parsed[k] for k in LEGACY_KEYS))
                    record.update(ok=True, attempts=attempt, error=None, cause=None, raw=raw)
                    return record
                errors.append(f"unparseable answer {raw[:200]!r}")
            backoff.pause(attempt)
        record.update({k: None for k in fields})
        if protocol == "legacy":
            record["wiscore"] = None
        record.update(ok=False, attempts=retries, raw=raw, cause=errors[-1],
                      error="; ".join(f"attempt {k}: {e}" for k, e in enumerate(errors, 1)))
        return record

    if max_workers <= 1:
        return [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        return list(pool.map(run, jobs))
