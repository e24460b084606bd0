"""Options that apply and options that do not: ``--device`` on every command that loads a model (eval with every
suite, WISE included, probe, metrics: one definition), and ``eval``'s options refused with one line, never
ignored, where the suite does not read them (WISE-only options elsewhere, the others under ``--suite wise``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import irisbench.core.devices as devices
import irisbench.policies as policies
from irisbench.cli import app
from irisbench.cli.options import DEVICE_HELP

runner = CliRunner()
no_gpu = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a host without GPU")


@pytest.fixture
def wise_file(tmp_path: Path) -> Path:
    file = tmp_path / "wise.json"
    file.write_text(json.dumps([{"Prompt": "a photo of a red circle", "Explanation": "", "Category": "c",
                                 "Subcategory": "s", "prompt_id": 1}]))
    return file


@pytest.fixture
def wise_images(tmp_path: Path) -> Path:
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(folder / "1.png")
    return folder


@pytest.fixture
def fake_gpu(monkeypatch) -> list:
    """``cuda:1`` resolves as if that GPU existed (and is recorded as such); other specs resolve as usual.
    Returns the specs the resolver was asked for."""
    asked: list = []
    real = devices.resolve_device

    def resolve(spec=None, *, flag="--device"):
        asked.append(spec)
        return "cuda:1" if spec == "cuda:1" else real(spec, flag=flag)

    monkeypatch.setattr(devices, "resolve_device", resolve)
    monkeypatch.setattr(devices, "device_record", lambda device: {"device": device})
    return asked


@pytest.fixture
def policy_devices(monkeypatch) -> list:
    """The ``device`` every ``load_policy`` call was given (the policy itself is loaded as usual, on the CPU)."""
    got: list = []
    real = policies.load_policy

    def load(name, model=None, *, device=None, **kwargs):
        got.append(device)
        return real(name, model, **kwargs)

    monkeypatch.setattr(policies, "load_policy", load)
    return got


def one_line(output: str) -> str:
    lines = [x for x in output.splitlines() if x.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_device_is_one_option_with_one_help_text():
    group = typer.main.get_command(app)
    for name in ("eval", "train", "pretrain", "experiment", "probe", "metrics"):
        param = next(p for p in group.commands[name].params if p.name == "device")
        assert param.opts == ["--device"] and param.default is None and param.help == DEVICE_HELP, name


def test_wise_generates_on_the_given_device_and_records_it(wise_file, tmp_path: Path, fake_gpu, policy_devices):
    base = ["eval", "--suite", "wise", "--policy", "oracle", "--prompts", str(wise_file), "--judge", "stub-for-tests"]
    result = runner.invoke(app, [*base, "--device", "cuda:1", "--out", str(tmp_path / "gpu")])
    assert result.exit_code == 0, result.output
    assert fake_gpu == ["cuda:1"] and policy_devices == ["cuda:1"]
    assert json.loads((tmp_path / "gpu" / "env.json").read_text())["device"] == "cuda:1"
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "default")])  # the tests' default: cpu
    assert result.exit_code == 0, result.output
    assert fake_gpu[-1] is None and policy_devices[-1] == "cpu"
    assert json.loads((tmp_path / "default" / "env.json").read_text())["device"] == "cpu"


@no_gpu
@pytest.mark.parametrize("command", ["wise", "probe", "metrics"])
def test_cuda_without_a_gpu_is_one_line(command, wise_file, tmp_path: Path):
    out = tmp_path / "run"
    args = {"wise": ["eval", "--suite", "wise", "--policy", "oracle", "--prompts", str(wise_file), "--judge",
                     "stub-for-tests", "--out", str(out)],
            "probe": ["probe", "--policy", "oracle", "--out", str(out)],
            "metrics": ["metrics", str(out), "--metrics", "clip"]}[command]
    result = runner.invoke(app, [*args, "--device", "cuda"])
    assert result.exit_code == 2
    assert "--device cuda: no CUDA GPU is visible here" in one_line(result.output) and not out.exists()


NOT_FOR_WISE = [
    (["--split", "val"], "--split"), (["--category", "color"], "--category"),
    (["--no-save-images"], "--no-save-images"),
    (["--metrics", "clip"], "--metrics"), (["--clip-model", "ViT-B-32"], "--clip-model"),
    (["--clip-pretrained", "w.safetensors"], "--clip-pretrained"), (["--clip-scale", "raw"], "--clip-scale"),
    (["--fid-reference", "."], "--fid-reference"), (["--scorer-option", "a=b"], "--scorer-option"),
    (["--allow-missing"], "--allow-missing"),  # generated: every prompt has its image
]
NOT_FOR_WISE_IMAGES = [
    (["--policy", "oracle"], "--policy"), (["--model", "m"], "--model"), (["--cfg", "3"], "--cfg"),
    (["--temperature", "1"], "--temperature"), (["--top-k", "5"], "--top-k"), (["--batch-size", "8"], "--batch-size"),
    (["--device", "cpu"], "--device"),
]


@pytest.mark.parametrize("extra, flag", NOT_FOR_WISE)
def test_wise_refuses_what_it_does_not_read(extra, flag, wise_file, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", "--suite", "wise", "--policy", "oracle", "--prompts", str(wise_file),
                                 "--judge", "stub-for-tests", *extra, "--out", str(out)])
    assert result.exit_code == 2
    assert f"{flag} does not apply to --suite wise" in one_line(result.output) and not out.exists()


@pytest.mark.parametrize("extra, flag", NOT_FOR_WISE_IMAGES)
def test_wise_on_a_folder_refuses_the_generation_options(extra, flag, wise_file, wise_images, tmp_path: Path):
    out = tmp_path / "run"
    args = ["eval", "--suite", "wise", "--prompts", str(wise_file), "--images", str(wise_images), "--judge",
            "stub-for-tests", "--out", str(out)]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 2
    assert f"{flag} does not apply to --suite wise --images" in one_line(result.output) and not out.exists()
    result = runner.invoke(app, [*args, "--allow-missing"])  # what a folder does take
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("extra, flag", [
    (["--judge", "stub-for-tests"], "--judge"), (["--judge-model", "m"], "--judge-model"),
    (["--judge-api-key-env", "KEY"], "--judge-api-key-env"), (["--judge-workers", "1"], "--judge-workers"),
    (["--wise-protocol", "legacy"], "--wise-protocol"), (["--judge-retries", "3"], "--judge-retries"),
    (["--judge-backoff", "2"], "--judge-backoff"), (["--allow-failures"], "--allow-failures"),
])
@pytest.mark.parametrize("suite", [[], ["--suite", "compbench"]])
def test_other_suites_refuse_the_wise_options(suite, extra, flag, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", *suite, "--policy", "oracle", *extra, "--out", str(out)])
    assert result.exit_code == 2
    line = one_line(result.output)
    assert f"{flag} is read by --suite wise only (this is --suite {suite[1] if suite else 'geneval'})" in line
    assert not out.exists()


def test_probe_runs_its_policy_and_clip_on_the_given_device(tmp_path: Path, fake_gpu, policy_devices, monkeypatch):
    import irisbench.metrics.clip_score as clip_score

    clip_devices: list = []
    real = clip_score.load_clip

    def load_clip(*args, device="cpu", **kwargs):
        clip_devices.append(device)
        return real(*args, **kwargs)

    monkeypatch.setattr(clip_score, "load_clip", load_clip)
    out = tmp_path / "probe"
    result = runner.invoke(app, ["probe", "--prompts", "2", "--g", "2", "--rewards", "nsc", "--n-resamples", "10",
                                 "--device", "cuda:1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert fake_gpu[0] == "cuda:1" and policy_devices == ["cuda:1"] and clip_devices == ["cuda:1"]
    assert json.loads((out / "env.json").read_text())["device"] == "cuda:1"


def test_metrics_runs_clip_on_the_given_device(tmp_path: Path, fake_gpu, monkeypatch):
    pytest.importorskip("open_clip")
    import irisbench.metrics.clip_score as clip_score
    from irisbench.evaluation.evaluate import EvalOptions, evaluate

    evaluate(EvalOptions(policy="oracle", limit=1, images_per_prompt=1), tmp_path / "run", progress=False)
    clip_devices: list = []
    real = clip_score.load_clip

    def load_clip(*args, device="cpu", **kwargs):
        clip_devices.append(device)
        return real(*args, **kwargs)

    monkeypatch.setattr(clip_score, "load_clip", load_clip)
    result = runner.invoke(app, ["metrics", str(tmp_path / "run"), "--metrics", "clip", "--device", "cuda:1"])
    assert result.exit_code == 0, result.output
    assert fake_gpu[-1] == "cuda:1" and clip_devices == ["cuda:1"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["metrics"]["computed"]["device"] == "cuda:1" and "clip" in saved["metrics"]
