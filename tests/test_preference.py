"""Preference models (PickScore, HPS v2.1) as scores, rewards, ``eval --metrics`` entries and ``scorers check``
rows, on tiny random models of the real architectures (tests/preference_tiny.py). The reference scores are
computed here from the models' own forward passes and the official formulas: PickScore's model card
(``logit_scale.exp() * text_embs @ image_embs.T``, i.e. CLIPModel's ``logits_per_image``) and hpsv2's
``img_score.py`` (``diagonal(image_features @ text_features.T)`` of the normalised features)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("transformers")
pytest.importorskip("open_clip")

from preference_tiny import build_tiny_hps, build_tiny_pickscore  # noqa: E402

from irisbench.cli import app  # noqa: E402
from irisbench.metrics.preference import PreferenceModelError, load_hpsv2, load_pickscore  # noqa: E402
from irisbench.metrics.suite_metrics import MetricOptions, SuiteMetrics  # noqa: E402
from irisbench.policies.base import Rollout  # noqa: E402
from irisbench.scorers.weights import check_scorers  # noqa: E402
from irisbench.train.rewards import PREFERENCE_SCORES, RewardError, build_reward, reward_context  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["a red cube", "two blue balls", "a red cube"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("preference")
    name, pt, st = build_tiny_hps(root / "hps")
    return {"pickscore": build_tiny_pickscore(root / "pickscore"), "hps_backbone": name, "hps_pt": pt,
            "hps_st": st, "root": root}


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in PROMPTS]


def test_pickscore_is_logit_scale_times_cosine(tiny, images):
    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    got = load_pickscore(str(tiny["pickscore"]), None).score(images, PROMPTS)
    model = CLIPModel.from_pretrained(tiny["pickscore"], local_files_only=True).eval()
    proc = CLIPProcessor.from_pretrained(tiny["pickscore"], local_files_only=True)
    pil = [Image.fromarray(im) for im in images]
    with torch.no_grad():  # the model card's call: one forward pass, logits = logit_scale.exp() * cos
        out = model(**proc(text=PROMPTS, images=pil, padding=True, truncation=True, max_length=16,
                           return_tensors="pt"))
    expected = torch.diagonal(out.logits_per_image).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # by hand: normalised tower embeddings, cosine, times exp(logit_scale) (= e^3 in the tiny config)
    img = out.image_embeds.numpy() / np.linalg.norm(out.image_embeds.numpy(), axis=1, keepdims=True)
    txt = out.text_embeds.numpy() / np.linalg.norm(out.text_embeds.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(got, np.exp(3.0) * (img * txt).sum(1), rtol=1e-5, atol=1e-5)
    assert got[0] != pytest.approx(got[2])  # same prompt, different image: the image matters


def test_hps_is_the_cosine_without_logit_scale(tiny, images):
    import open_clip
    import torch
    from PIL import Image

    pickled = load_hpsv2(str(tiny["hps_pt"]), tiny["hps_backbone"], allow_pickle=True)
    got = pickled.score(images, PROMPTS)
    net, _, preprocess = open_clip.create_model_and_transforms(tiny["hps_backbone"], pretrained=None,
                                                               output_dict=True)  # as hpsv2 builds it
    state = torch.load(tiny["hps_pt"], weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    net.eval()
    tokenizer = open_clip.get_tokenizer(tiny["hps_backbone"])
    expected = []
    for im, prompt in zip(images, PROMPTS, strict=True):  # hpsv2 img_score.py, one image at a time
        with torch.no_grad():
            out = net(preprocess(Image.fromarray(im)).unsqueeze(0), tokenizer([prompt]))
            expected.append(torch.diagonal(out["image_features"] @ out["text_features"].T).item())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(got) <= 1.0)  # a cosine: no logit scale
    safe = load_hpsv2(str(tiny["hps_st"]), tiny["hps_backbone"]).score(images, PROMPTS)
    np.testing.assert_allclose(safe, got, rtol=0, atol=1e-7)
    assert pickled.describe()["weights_sha256"] and pickled.scale == 1.0


def test_wrong_architecture_and_bad_files_are_one_line(tiny, tmp_path: Path):
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(bert)
    with pytest.raises(PreferenceModelError, match=r"is a 'bert' model \(BertModel\), not a CLIPModel") as e:
        load_pickscore(str(bert), str(tiny["pickscore"]))
    assert "\n" not in str(e.value) and "--metric-option pickscore_model=FOLDER" in str(e.value)
    with pytest.raises(PreferenceModelError, match="neither a local folder nor in the local Hugging Face cache"):
        load_pickscore(str(tmp_path / "nowhere"), None)
    with pytest.raises(PreferenceModelError, match="refusing the pickle weights file"):
        load_hpsv2(str(tiny["hps_pt"]), tiny["hps_backbone"])
    # the tiny model's weights in a bigger architecture: named, not loaded
    with pytest.raises(PreferenceModelError, match=r"is not a state dict of open_clip ViT-B-32: \d+ missing keys") as e:
        load_hpsv2(str(tiny["hps_st"]), "ViT-B-32")
    assert "\n" not in str(e.value) and "backbone: NAME" in str(e.value)


def _rollout(images: list[np.ndarray]) -> Rollout:
    b = len(images)
    return Rollout(prompts=list(PROMPTS), seeds=list(range(b)), images=images, plans=[""] * b,
                   tokens=np.zeros((b, 0), np.int64), token_mask=np.zeros((b, 0), bool),
                   modality=np.zeros((b, 0), np.int8), logp=np.zeros((b, 0), np.float32),
                   self_certainty=np.zeros((b, 0), np.float32), entropy=np.zeros((b, 0), np.float32))


def test_rewards_read_the_models_through_the_reward_context(tiny, images):
    options = {"pickscore": {"model": str(tiny["pickscore"]), "processor": str(tiny["pickscore"])},
               "hpsv2": {"model": str(tiny["hps_st"]), "backbone": tiny["hps_backbone"]}}
    reward = build_reward(["pickscore", "hpsv2"], weights=[0.5, 2.0], options=options)
    context = reward_context(reward, "open")
    assert set(context[PREFERENCE_SCORES]) == {"pickscore", "hpsv2"}
    total, parts = reward.evaluate(_rollout(images), context)
    pick = load_pickscore(str(tiny["pickscore"]), None).score(images, PROMPTS)
    hps = load_hpsv2(str(tiny["hps_st"]), tiny["hps_backbone"]).score(images, PROMPTS)
    np.testing.assert_allclose(parts["pickscore"], pick, rtol=1e-6)
    np.testing.assert_allclose(parts["hpsv2"], hps, rtol=1e-6)
    np.testing.assert_allclose(total, 0.5 * pick + 2.0 * hps, rtol=1e-6)
    with pytest.raises(RewardError, match=r"reward 'hpsv2': hpsv2: unknown option\(s\) \['pretrained'\]"):
        build_reward("hpsv2", options={"hpsv2": {"pretrained": "x"}})
    with pytest.raises(PreferenceModelError, match="is a 'bert' model|neither a local folder"):
        reward_context(build_reward("pickscore", options={"pickscore": {"model": str(tiny["root"] / "no")}}), "open")


def test_suite_metrics_score_every_image_and_average_by_prompt(tiny, images):
    opts = MetricOptions(("pickscore", "hpsv2"), preference={
        "pickscore": {"model": str(tiny["pickscore"]), "processor": str(tiny["pickscore"])},
        "hpsv2": {"model": str(tiny["hps_pt"]), "backbone": tiny["hps_backbone"], "allow_pickle": "true"}})
    metrics = SuiteMetrics(opts, "open")  # no CLIP needed on the open world for these two
    rows = metrics.per_image(images, PROMPTS)
    pick = load_pickscore(str(tiny["pickscore"]), None).score(images, PROMPTS)
    assert [r["pickscore"] for r in rows] == pytest.approx(list(pick), rel=1e-6)
    records = [{"prompt_index": i // 2, **r} for i, r in enumerate(rows)]
    out = metrics.finalize(Path("."), records, [], seed=0)
    assert out["pickscore"]["mean"] == pytest.approx(float(np.mean(pick)))
    assert out["hpsv2"]["n_images"] == 3 and out["hpsv2"]["formula"].startswith("cos(image, text)")
    assert out["identity"]["hpsv2"]["weights_file"] == str(tiny["hps_pt"]) and "clip" not in out["identity"]


def test_eval_metrics_on_a_run_and_a_wrong_folder(tiny, tmp_path: Path):
    from irisbench.evaluation.evaluate import EvalOptions, evaluate

    folder = ["--metric-option", f"pickscore_model={tiny['pickscore']}",
              "--metric-option", f"pickscore_processor={tiny['pickscore']}"]
    opts = EvalOptions(policy="oracle", limit=1, images_per_prompt=2, metrics=MetricOptions(()))
    evaluate(opts, tmp_path / "run", progress=False)
    result = runner.invoke(app, ["metrics", str(tmp_path / "run"), "--metrics", "pickscore", *folder])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["pickscore"]) for r in records)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]["pickscore"]
    assert saved["mean"] == pytest.approx(np.mean([r["pickscore"] for r in records]))

    bad = tmp_path / "clip-vision-only"
    shutil.copytree(tiny["pickscore"], bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "model_type": "clip_vision_model"}))
    out = tmp_path / "new-run"
    result = runner.invoke(app, ["eval", "--policy", "oracle", "--limit", "1", "--metrics", "pickscore", "--out",
                                 str(out), "--metric-option", f"pickscore_model={bad}"])
    assert result.exit_code == 2
    assert "is a 'clip_vision_model' model" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()  # nothing written
    result = runner.invoke(app, ["eval", "--policy", "oracle", "--metrics", "pickscore", "--metric-option",
                                 "hpsv2_model=x"])
    assert result.exit_code == 2 and "not an option of the asked metrics" in result.output


def test_scorers_check_lists_what_each_preference_model_would_load(tiny, tmp_path: Path):
    options = {"pickscore_model": str(tiny["pickscore"]), "pickscore_processor": str(tiny["pickscore"]),
               "hpsv2_model": str(tiny["hps_pt"]), "hpsv2_backbone": tiny["hps_backbone"]}
    rows = check_scorers(["pickscore", "hpsv2"], options)
    assert [(r.scorer, r.ok) for r in rows] == [("pickscore", True), ("pickscore", True), ("hpsv2", False)]
    assert "pickle file: set hpsv2_allow_pickle=true" in rows[2].detail
    rows = check_scorers(["hpsv2"], {**{k: v for k, v in options.items() if k.startswith("hps")},
                                     "hpsv2_allow_pickle": "true"})
    assert rows[0].ok and rows[0].path == str(tiny["hps_pt"])
    vision_only = shutil.copytree(tiny["pickscore"], tmp_path / "v")
    (vision_only / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    (vision_only / "model.safetensors").unlink()
    (row, _) = check_scorers(["pickscore"], {"pickscore_model": str(vision_only)})
    assert not row.ok and "model.safetensors" in row.detail and "this one is 'clip_vision_model'" in row.detail
    result = runner.invoke(app, ["scorers", "check", "--scorer", "hpsv2", "--scorer-option", "hpsv2_modell=x"])
    assert result.exit_code == 2 and "not an option of hpsv2" in result.output


def test_train_with_unusable_hps_weights_is_one_line_and_leaves_no_run_folder(tiny, tiny_janus, tmp_path: Path):
    folder, prompts = tiny_janus
    out = tmp_path / "run"
    base = ["train", "-c", "janus-pro-1b-t2i-r1", "--out", str(out), "--no-progress", "--set", f"model={folder}",
            "--set", f"prompts_file={prompts}", "--set", "steps=1", "--set", "prompts_per_step=2",
            "--set", "num_generations=2"]
    for options, message in ((["reward_options.hpsv2.model=/no/HPS_v2.1_compressed.pt"], "does not exist"),
                             ([f"reward_options.hpsv2.model={tiny['hps_pt']}"], "refusing the pickle"),
                             ([f"reward_options.hpsv2.model={tiny['hps_st']}", "reward_options.hpsv2.backbone=RN50"],
                              "is not a state dict of open_clip RN50")):
        result = runner.invoke(app, [*base, *[x for o in options for x in ("--set", o)]])
        assert result.exit_code == 2, result.output
        lines = [x for x in result.output.splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], result.output
        assert not out.exists()  # the run folder this command made is removed again
