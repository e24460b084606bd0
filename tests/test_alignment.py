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

from irisbench.alignment import probe_alignment, summarise, write_outputs
from irisbench.policies.base import IMAGE, TEXT, Rollout

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


def test_probe_uses_the_trainer_reward_registry_and_refuses_bad_input() -> None:
    from irisbench.rewards import UnknownRewardError

    with pytest.raises(UnknownRewardError, match="nsk"):
        probe_alignment(FakePolicy(), ITEMS, ["nsk"], g=G, judge=_judge, count_objects=_count)
    with pytest.raises(ValueError, match="at least 2 rollouts"):
        probe_alignment(FakePolicy(), ITEMS, ["nsc"], g=1, judge=_judge, count_objects=_count)


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
    res = CliRunner().invoke(app, ["probe", "--prompts", "3", "--g", "2", "--rewards", "nsc,verifier",
                                   "--n-resamples", "50", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "alignment of the GRPO advantage" in res.output
    data = json.loads((out / "alignment.json").read_text())
    assert data["prompts"] == 3 and len(data["rows"]) == 6 and data["config"]["split"] == "val"
    bad = CliRunner().invoke(app, ["probe", "--policy", "oracle", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0
