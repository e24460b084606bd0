"""The reward-quality alignment probe on a synthetic policy whose alignment is known by construction.

The fake policy draws groups with a fixed correctness pattern; its image tokens are more certain on
correct images (self-certainty 5 + 1 * correct), so IRIS's ``nsc-balanced`` (minimise self-certainty)
must rank correct images *last* and the verifier *first*. Expected advantages are computed by hand
from the GRPO formula A = (r - mean) / (std_unbiased + 1e-4).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from irisbench.policies.base import IMAGE, TEXT, Rollout
from irisbench.train.alignment import EMPTY, probe_alignment, summarise, write_outputs

# per prompt: the correctness of its 4 rollouts, and its tag
PATTERNS = {"a photo of a red circle": ([1, 1, 0, 0], "x"), "a photo of a blue square": ([1, 0, 1, 0], "x"),
            "a photo of a green diamond": ([1, 1, 1, 1], "y")}
G = 4
N_IMG = 3


class FakePolicy:
    name, world = "fake", "shapes"

    def sample(self, prompts, n=1, seed=0, **kw):  # noqa: ANN001, ANN003, ANN201
        rows = [(p, c) for p in prompts for c in PATTERNS[p][0]]
        assert n == G and len(rows) == len(prompts) * G
        plan_lens = [2 + (1 - c) for _, c in rows]  # wrong images carry one more plan token
        width = max(plan_lens) + N_IMG
        b = len(rows)
        tokens = np.zeros((b, width), np.int64)
        mask = np.zeros((b, width), bool)
        modality = np.full((b, width), TEXT, np.int8)
        sc = np.zeros((b, width), np.float32)
        for r, ((_, c), pl) in enumerate(zip(rows, plan_lens, strict=True)):
            mask[r, : pl + N_IMG] = True
            modality[r, pl: pl + N_IMG] = IMAGE
            sc[r, :pl] = 2.0
            sc[r, pl: pl + N_IMG] = 5.0 + 1.0 * c
        images = [np.array([[[c, 1 + 2 * (1 - c), 0]]], np.uint8) for _, c in rows]  # (correct, objects)
        return Rollout(prompts=[p for p, _ in rows], seeds=list(seed), images=images, plans=[""] * b,
                       tokens=tokens, token_mask=mask, modality=modality, logp=np.zeros_like(sc),
                       self_certainty=sc, entropy=np.zeros_like(sc),
                       settings={"vocab_size": {"text": 10, "image": 100}})


def _judge(meta, image):  # noqa: ANN001, ANN202
    return bool(image[0, 0, 0])


def _count(image):  # noqa: ANN001, ANN202
    return int(image[0, 0, 1])


ITEMS = [{"prompt": p, "tag": tag} for p, (_, tag) in PATTERNS.items()]


def test_probe_recovers_the_known_alignment() -> None:
    res = probe_alignment(FakePolicy(), ITEMS, ["nsc-balanced", "verifier"], g=G, judge=_judge, count_objects=_count,
                          prompts_per_batch=2, n_resamples=200)
    s = math.sqrt(1 / 3)  # unbiased std of [1, 1, 0, 0]
    # nsc-balanced: r = const - 0.5 * correct -> A(correct) = -0.25 / (0.5 s + 1e-4) in a 2-of-4 group
    a_nsc = 0.25 / (0.5 * s + 1e-4)
    a_ver = 0.5 / (s + 1e-4)  # verifier: r = correct
    nsc, ver = res["summary"]["nsc-balanced"]["overall"], res["summary"]["verifier"]["overall"]
    # the all-correct group has equal rewards (advantage 0) and no ranking: left out of rho, kept in means
    assert nsc["rho_correct"]["n"] == 2 and nsc["rho_correct"]["mean"] == pytest.approx(-1.0)
    assert (nsc["rho_correct"]["lo"], nsc["rho_correct"]["hi"]) == pytest.approx((-1.0, -1.0))
    assert ver["rho_correct"]["mean"] == pytest.approx(1.0)
    assert nsc["adv_correct"]["mean"] == pytest.approx(4 * -a_nsc / 8)  # 8 correct images, 4 of them at 0
    assert nsc["adv_incorrect"]["mean"] == pytest.approx(a_nsc)
    assert nsc["adv_gap"]["mean"] == pytest.approx(-a_nsc / 2 - a_nsc)
    assert nsc["adv_gap"]["lo"] <= nsc["adv_gap"]["mean"] <= nsc["adv_gap"]["hi"] < 0
    assert ver["adv_correct"]["mean"] == pytest.approx(4 * a_ver / 8)
    assert ver["adv_incorrect"]["mean"] == pytest.approx(-a_ver)
    # longer plans and more objects go with wrong images
    assert nsc["rho_plan_len"]["mean"] == pytest.approx(1.0) and ver["rho_plan_len"]["mean"] == pytest.approx(-1.0)
    assert nsc["rho_objects"]["mean"] == pytest.approx(1.0) and ver["rho_objects"]["mean"] == pytest.approx(-1.0)
    # per tag: "y" holds only the all-correct prompt: no ranking, no incorrect images
    y = res["summary"]["nsc-balanced"]["y"]
    assert y["rho_correct"]["mean"] is None and y["adv_incorrect"]["mean"] is None
    assert y["adv_correct"]["mean"] == 0.0
    assert res["summary"]["nsc-balanced"]["x"]["adv_correct"]["mean"] == pytest.approx(-a_nsc)
    assert res["accuracy"]["overall"] == pytest.approx(8 / 12)
    row = res["rows"][0]
    assert row["correct"] and row["plan_len"] == 2 and row["objects"] == 1
    assert row["adv:nsc-balanced"] == pytest.approx(-a_nsc)


def _clip(images, prompts):  # noqa: ANN001, ANN202
    """A stand-in CLIP score: 0.3 for a correct image, 0.1 for a wrong one (channel 0 holds correctness)."""
    assert len(images) == len(prompts)
    return [0.1 + 0.2 * float(im[0, 0, 0]) for im in images]


class OpenWorldPolicy(FakePolicy):
    name, world = "fake-open", "open"


def test_probe_correlates_the_advantage_with_a_clip_score() -> None:
    res = probe_alignment(FakePolicy(), ITEMS, ["nsc-balanced", "verifier"], g=G, judge=_judge, count_objects=_count,
                          clip_score=_clip, n_resamples=100)
    nsc, ver = res["summary"]["nsc-balanced"]["overall"], res["summary"]["verifier"]["overall"]
    # the clip score ranks images as correctness does: the same within-group correlations, the same groups
    assert nsc["rho_clip"]["mean"] == pytest.approx(-1.0) and ver["rho_clip"]["mean"] == pytest.approx(1.0)
    assert nsc["rho_clip"]["n"] == 2  # the all-correct group has a constant score: no ranking
    assert res["rows"][0]["clip"] == pytest.approx(0.3) and res["rows"][2]["clip"] == pytest.approx(0.1)
    # without a CLIP the column is empty, and so is the object count without a detector
    bare = probe_alignment(FakePolicy(), ITEMS, ["verifier"], g=G, judge=_judge, n_resamples=50)
    assert bare["summary"]["verifier"]["overall"]["rho_clip"] == EMPTY
    assert bare["summary"]["verifier"]["overall"]["rho_objects"] == EMPTY and bare["rows"][0]["objects"] is None


def test_a_probed_clip_reward_reads_the_batch_scores_of_the_clip_column() -> None:
    calls: list[int] = []

    def counted(images, prompts):  # noqa: ANN001, ANN202
        calls.append(len(images))
        return _clip(images, prompts)

    res = probe_alignment(FakePolicy(), ITEMS, ["clip", "verifier"], g=G, judge=_judge, clip_score=counted,
                          n_resamples=50, prompts_per_batch=2)
    assert calls == [G * len(ITEMS[s:s + 2]) for s in range(0, len(ITEMS), 2)]  # each image scored once
    row = res["rows"][0]
    assert row["reward:clip"] == pytest.approx(row["clip"])  # the reward is that score (raw scale)


def test_an_open_world_policy_is_probed_against_the_clip_score_alone() -> None:
    from irisbench.train.rewards import RewardInputError

    res = probe_alignment(OpenWorldPolicy(), ITEMS, ["nsc-balanced"], g=G, clip_score=_clip, n_resamples=100)
    m = res["summary"]["nsc-balanced"]["overall"]
    assert res["accuracy"] is None and res["rows"][0]["correct"] is None
    assert all(m[k] == EMPTY for k in ("rho_correct", "adv_correct", "adv_incorrect", "adv_gap", "rho_objects"))
    assert m["rho_clip"]["mean"] == pytest.approx(-1.0) and m["rho_plan_len"]["mean"] == pytest.approx(1.0)
    with pytest.raises(RewardInputError, match="judge"):  # the open world has no judge for the verifier
        probe_alignment(OpenWorldPolicy(), ITEMS, ["verifier"], g=G, clip_score=_clip)
    with pytest.raises(ValueError, match="judge of correctness or a CLIP score"):
        probe_alignment(OpenWorldPolicy(), ITEMS, ["nsc"], g=G)


def test_probe_uses_the_trainer_reward_registry_and_refuses_bad_input() -> None:
    from irisbench.train.rewards import UnknownRewardError

    with pytest.raises(UnknownRewardError, match="nsk"):
        probe_alignment(FakePolicy(), ITEMS, ["nsk"], g=G, judge=_judge, count_objects=_count)
    with pytest.raises(ValueError, match="at least 2 rollouts"):
        probe_alignment(FakePolicy(), ITEMS, ["nsc"], g=1, judge=_judge, count_objects=_count)


def test_probe_gives_the_null_rewards_the_rows_keys() -> None:
    """The probe's random reward is each row's own draw (probe seed, step 0, prompt index, rollout index), and the
    shuffled nsc keeps each group's nsc values."""
    from irisbench.policies.base import derive_seed

    res = probe_alignment(FakePolicy(), ITEMS, ["random", "shuffled-nsc", "nsc"], g=G, seed=4, judge=_judge,
                          count_objects=_count, prompts_per_batch=2, n_resamples=50)
    for rec in res["rows"]:
        want = np.random.default_rng(derive_seed(4, "random-reward", 0, rec["group"], rec["row"])).standard_normal()
        assert rec["reward:random"] == want
    for group in range(len(ITEMS)):
        rows = [r for r in res["rows"] if r["group"] == group]
        assert sorted(r["reward:shuffled-nsc"] for r in rows) == sorted(r["reward:nsc"] for r in rows)


def test_summarise_matches_scipy_on_random_groups() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    adv, correct = rng.normal(size=40), rng.random(40) < 0.5
    plan, objects = rng.integers(2, 9, 40), rng.integers(1, 5, 40)
    out = summarise(adv, correct, plan, objects, 8, n_resamples=100)
    want = [spearmanr(adv[i:i + 8], correct[i:i + 8]).statistic for i in range(0, 40, 8)
            if 0 < correct[i:i + 8].sum() < 8]
    assert out["rho_correct"]["mean"] == pytest.approx(np.mean(want)) and out["rho_correct"]["n"] == len(want)
    assert out["adv_correct"]["mean"] == pytest.approx(adv[correct].mean())
    want_plan = np.mean([spearmanr(adv[i:i + 8], plan[i:i + 8]).statistic for i in range(0, 40, 8)])
    assert out["rho_plan_len"]["mean"] == pytest.approx(want_plan)


def test_outputs_are_written(tmp_path: Path) -> None:
    res = probe_alignment(FakePolicy(), ITEMS, ["verifier"], g=G, judge=_judge, count_objects=_count,
                          n_resamples=50)
    paths = write_outputs(res, tmp_path)
    assert [p.name for p in paths] == ["alignment.json", "alignment.csv", "alignment_rows.csv"]
    assert json.loads(paths[0].read_text())["summary"]["verifier"]["overall"]["rho_correct"]["mean"] == 1.0
    assert paths[1].read_text().splitlines()[0] == "reward,tag,metric,mean,lo,hi,n"
    assert len(paths[2].read_text().splitlines()) == 1 + 12


@pytest.mark.slow
def test_probe_command_on_the_shipped_base(tmp_path: Path) -> None:
    from irisbench.cli import app

    out = tmp_path / "probe"
    res = CliRunner().invoke(app, ["probe", "--prompts", "6", "--g", "4", "--rewards", "nsc,verifier,clip",
                                   "--n-resamples", "50", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "alignment of the GRPO advantage" in res.output
    data = json.loads((out / "alignment.json").read_text())
    assert data["prompts"] == 6 and len(data["rows"]) == 24 and data["config"]["split"] == "val"
    # the clip reward is the shipped shapes-clip's score, as is the probe's CLIP column: its advantage ranks
    # every group's images exactly as that score does
    clip = data["summary"]["clip"]["overall"]["rho_clip"]
    assert clip["n"] >= 1 and clip["mean"] == pytest.approx(1.0) and clip["lo"] == pytest.approx(1.0)
    rows = data["rows"]
    assert all(r["reward:clip"] == pytest.approx(r["clip"], abs=1e-6) for r in rows)
    assert data["summary"]["verifier"]["overall"]["rho_correct"]["mean"] in (None, pytest.approx(1.0))
    bad = CliRunner().invoke(app, ["probe", "--policy", "oracle", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0


@pytest.mark.slow
def test_probe_command_on_an_open_world_policy_uses_the_clip_score(tiny_janus, tiny_clip, tmp_path: Path) -> None:
    from clip_tiny import TINY_CLIP
    from safetensors.torch import save_file

    from irisbench.cli import app

    folder, _ = tiny_janus
    weights = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}, str(weights))
    meta = tmp_path / "metadata.jsonl"
    meta.write_text("".join(json.dumps({"tag": "single_object", "include": [{"class": c, "count": 1}],
                                        "prompt": f"a photo of a {c}"}) + "\n" for c in ("cat", "dog")))
    base = ["probe", "--policy", "janus-pro", "--model", str(folder), "--prompts-file", str(meta), "--g", "2",
            "--n-resamples", "20"]
    no_clip = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "x")])
    assert no_clip.exit_code == 2 and "--clip-model" in no_clip.output and "Traceback" not in no_clip.output
    out = tmp_path / "probe"
    res = CliRunner().invoke(app, [*base, "--rewards", "nsc,clip", "--clip-model", TINY_CLIP, "--clip-pretrained",
                                   str(weights), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "no judge" in res.output
    data = json.loads((out / "alignment.json").read_text())
    assert data["accuracy"] is None and len(data["rows"]) == 4 and data["config"]["clip"]["model"] == TINY_CLIP
    assert all(r["correct"] is None and r["objects"] is None and r["plan_len"] > 0 for r in data["rows"])
    # the clip reward uses the probe's CLIP (the tiny one, raw cosine): reward and score agree per image
    assert all(r["reward:clip"] == pytest.approx(r["clip"], abs=1e-6) for r in data["rows"])
    nsc = data["summary"]["nsc"]["overall"]
    assert nsc["rho_correct"]["mean"] is None and nsc["rho_clip"]["n"] == 2
