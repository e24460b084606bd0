"""The shipped tiny Janus of the shapes world (``irisbench.policies.janus_shapes``): it loads with transformers'
own ``from_pretrained``, its image codes are the world's pixels, it scores above the random policy, its
pretraining loss is the teacher-forced cross-entropy of the sequences ``JanusPolicy.sample`` draws, and one
verifier GRPO step through the Janus path raises the log-probability of the rewarded rollouts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from irisbench.evaluation.evaluate import EvalOptions, evaluate
from irisbench.policies import load_policy
from irisbench.policies.janus_shapes import SHIPPED_JANUS_SHAPES, JanusShapesBatches, JanusShapesPolicy, create
from irisbench.train.pretrain import BatchMaker, PretrainConfig, run_pretrain
from irisbench.world.tokenizer import fit_patch_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def shipped() -> JanusShapesPolicy:
    return load_policy("janus-shapes", device="cpu")


def test_the_shipped_folder_is_a_plain_transformers_janus(shipped: JanusShapesPolicy) -> None:
    from transformers import JanusForConditionalGeneration, JanusProcessor

    model = JanusForConditionalGeneration.from_pretrained(SHIPPED_JANUS_SHAPES, local_files_only=True,
                                                          use_safetensors=True, trust_remote_code=False)
    JanusProcessor.from_pretrained(SHIPPED_JANUS_SHAPES, local_files_only=True, trust_remote_code=False)
    for (name, a), (_, b) in zip(model.state_dict().items(), shipped.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    size = sum(f.stat().st_size for f in SHIPPED_JANUS_SHAPES.iterdir())
    assert size < 8_000_000
    # the folder's name resolves to this policy, also when given as a path
    assert type(load_policy(str(SHIPPED_JANUS_SHAPES), device="cpu")) is JanusShapesPolicy


def test_image_codes_are_the_world_pixels_and_the_cot_is_a_plan(shipped: JanusShapesPolicy) -> None:
    from irisbench.policies.base import IMAGE, TEXT

    r = shipped.sample(["a photo of a red circle", "a photo of two squares"], n=2, seed=3)
    codes = np.stack([r.tokens[i][r.token_mask[i] & (r.modality[i] == IMAGE)] for i in range(len(r))])
    assert codes.shape == (4, 64)
    # the world tokenizer is lossless on rendered patches: re-encoding the image gives back the drawn codes
    assert np.array_equal(shipped.image_tokenizer.encode(np.stack(r.images)), codes)
    assert all(img.shape == (32, 32, 3) and img.dtype == np.uint8 for img in r.images)
    for i, plan in enumerate(r.plans):  # the CoT the model wrote, decoded, is what the image prompt quoted
        cot = r.tokens[i][r.token_mask[i] & (r.modality[i] == TEXT)]
        assert shipped.tokenizer.decode(cot.tolist(), skip_special_tokens=True).strip() == plan
        assert r.extras["image_prompt_ids"][i] == shipped.encode(f"<|User|>: {r.prompts[i]}. {plan}\n\n"
                                                                 "<|Assistant|>:") + [shipped.boi_id]


def test_the_shipped_janus_scores_above_the_random_policy(shipped: JanusShapesPolicy, tmp_path: Path) -> None:
    """GenEval val, 8 prompts per tag x 2 images, the same seed for both: the shipped folder scores 0.24 on 24
    prompts per tag x 4 images where the random policy scores 0.05 (its README); a folder that draws no better
    than chance fails the 0.1 margin."""
    opts = {"split": "val", "limit_per_tag": 8, "images_per_prompt": 2, "save_images": False}
    janus = evaluate(EvalOptions(policy="janus-shapes", **opts), tmp_path / "j", policy=shipped, progress=False)
    rnd = evaluate(EvalOptions(policy="random", **opts), tmp_path / "r", progress=False)
    assert janus["world"] == "shapes"
    j, r = janus["scores"]["overall"], rnd["scores"]["overall"]
    assert j["n_images"] == r["n_images"] == 6 * 8 * 2
    assert j["score"] > r["score"] + 0.1, (j, r)


@pytest.mark.parametrize("cot_rows", [None, 2])
def test_pretraining_loss_is_the_cross_entropy_of_the_sampled_layout(cot_rows: int | None) -> None:
    """``JanusShapesBatches.loss`` against a hand-built reference: one plain forward of the concatenated
    sequences through the language model, cross-entropy of ``lm_head`` on the plan and EOS and of
    ``generation_head`` on the codes, with the unconditional rows' prompts replaced by PAD."""
    import torch.nn.functional as F

    tok = fit_patch_tokenizer(n_scenes=200, seed=0)
    pol = create(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=1)
    cfg = PretrainConfig(batch_size=6, uncond_prob=0.5, seed=4, arch="janus", cot_rows=cot_rows)
    batches = JanusShapesBatches(BatchMaker(cfg, None, pol.image_tokenizer), pol)
    loss, parts = batches.loss(0)
    r = batches.rollout(0)
    model, lm = pol.model, pol.model.model.language_model
    nll = []
    n_uncond = 0
    for i in range(len(r)):
        n = r.extras["text_lengths"][i]
        cot, codes = r.tokens[i][:n].tolist(), r.tokens[i][n:n + 64].tolist()
        if cot_rows is None or i < cot_rows:  # the CoT is trained on the first cot_rows rows
            seq = torch.tensor([r.extras["cot_prompt_ids"][i] + cot])
            hid = lm(inputs_embeds=model.get_input_embeddings()(seq)).last_hidden_state
            logits = model.lm_head(hid[0, -n - 1:-1])
            nll.append(F.cross_entropy(logits, torch.tensor(cot), reduction="none"))
        req = r.extras["image_prompt_ids"][i]
        n_uncond += set(req[1:-1]) == {pol.pad_id}
        emb = torch.cat([model.get_input_embeddings()(torch.tensor([req])),
                         model.prepare_embeddings_for_image_generation(torch.tensor([codes]))], dim=1)
        hid = lm(inputs_embeds=emb).last_hidden_state
        logits = model.model.generation_head(hid[0, len(req) - 1:len(req) + 63])
        nll.append(F.cross_entropy(logits, torch.tensor(codes), reduction="none"))
    assert 0 < n_uncond < len(r)
    assert float(loss.detach()) == pytest.approx(float(torch.cat(nll).detach().mean()), rel=1e-5)
    assert math.isfinite(parts["loss_plan"]) and math.isfinite(parts["loss_image"])


def test_the_shipped_janus_samples_what_its_pretraining_loss_scores(shipped: JanusShapesPolicy) -> None:
    """The sampling loops (CoT from ``lm_head``, image codes from ``generation_head`` under CFG 3) and the
    teacher-forced pass the pretraining loss and GRPO read give the same log-probability to every drawn token
    of the shipped weights (fp32): the low score is not a sampling path that disagrees with training."""
    from irisbench.policies.base import IMAGE, TEXT

    r = shipped.sample(["a photo of a red circle", "a photo of a blue triangle and a green square"], n=2, seed=1)
    with torch.no_grad():
        tf = shipped.token_logits(r)
    mask = torch.as_tensor(r.token_mask)
    modality = torch.as_tensor(r.modality)[mask]
    gap = (tf.logp - torch.as_tensor(r.logp))[mask].abs()
    assert (modality == TEXT).any() and (modality == IMAGE).sum() == 4 * 64
    assert float(gap.max()) < 1e-4, float(gap.max())


def test_a_new_janus_passes_image_codes_and_logits_at_the_text_scale() -> None:
    """From scratch, the image path starts as an embedding table and a one-layer head (``init_image_path``):
    image-code embeddings reach the language model at the text embeddings' scale and full rank, and the image
    logits have the scale of the text logits. transformers' default init of Janus's two-layer aligner and
    head gives embeddings ~40x smaller and logits ~10x smaller (measured: 5e-4 vs 0.02 and 0.03 vs 0.23),
    and pretrained from there the image-code embeddings collapse to a few directions."""
    tok = fit_patch_tokenizer(n_scenes=200, seed=0)
    model = create(tok, hidden_size=64, num_layers=1, num_heads=2, intermediate_size=64, seed=0).model
    with torch.no_grad():
        text = model.get_input_embeddings().weight
        image = model.prepare_embeddings_for_image_generation(torch.arange(tok.codebook_size))
        ratio = float(image.pow(2).mean().sqrt() / text.pow(2).mean().sqrt())
        sv = torch.linalg.svdvals(image - image.mean(0))
        hidden = torch.randn(256, 64, generator=torch.Generator().manual_seed(0))
        logit_ratio = float(model.model.generation_head(hidden).std() / model.lm_head(hidden).std())
    assert 0.5 < ratio < 2.0, ratio
    assert float(sv[-1] / sv[0]) > 0.1  # every direction of the code embeddings survives the aligner
    assert 0.3 < logit_ratio < 3.0, logit_ratio


def test_pretrain_arch_janus_writes_a_loadable_janus_and_resumes(tmp_path: Path) -> None:
    cfg = PretrainConfig.for_world("shapes", {"steps": 2, "batch_size": 2, "hidden_size": 32, "intermediate_size": 64,
                                              "tokenizer_scenes": 200, "checkpoint_every": 1, "log_every": 1,
                                              "warmup_steps": 1}, arch="janus")
    last = run_pretrain(cfg, tmp_path / "p", progress=False, device="cpu")
    assert last.name == "step-2"
    meta = json.loads((last / "irisbench_policy.json").read_text())
    assert meta["policy"] == "janus-shapes" and meta["world"] == "shapes"
    pol = load_policy(str(last), device="cpu")
    assert type(pol) is JanusShapesPolicy and pol.model.config.text_config.hidden_size == 32
    assert pol.sample(["a photo of a cube"], n=1, seed=0).images[0].shape == (32, 32, 3)
    # re-running resumes: nothing left to do, the same last checkpoint; another recipe is refused in one line
    assert run_pretrain(cfg, tmp_path / "p", progress=False, device="cpu") == last
    from irisbench.train.pretrain import PretrainError

    with pytest.raises(PretrainError, match="different recipe"):
        run_pretrain(PretrainConfig.for_world("shapes", {**cfg.__dict__, "hidden_size": 64}), tmp_path / "p",
                     progress=False, device="cpu")


def _teacher_forced_row_logp(policy: JanusShapesPolicy, rollout: object) -> torch.Tensor:
    with torch.no_grad():
        tf = policy.token_logits(rollout)
    return (tf.logp * tf.mask).sum(dim=1)


@pytest.mark.parametrize("preset", ["janus-shapes-iris", "janus-shapes-verifier"])
def test_one_grpo_step_raises_the_logp_of_the_rewarded_rollouts(preset: str, tmp_path: Path) -> None:
    """The trainer's own step (sampling, reward, group advantages, ``grpo_loss``, backward, AdamW) on the
    Janus path, with IRIS's reward and with the verifier: the rows with a positive advantage gain
    log-probability, those with a negative one lose it (a flipped loss sign does the opposite)."""
    from irisbench.train.config import resolve_config
    from irisbench.train.trainer import GRPOTrainer

    cfg = resolve_config(preset, ["steps=1", "prompts_per_step=4", "num_generations=8", "eval_every=0",
                                  "checkpoint_every=1", "lr=1e-5", "num_threads=1"])
    trainer = GRPOTrainer(cfg, tmp_path / "run", progress=False)
    trainer._setup()
    seen: dict[str, object] = {}
    generate = trainer._generate

    def recording(step: int) -> object:
        batch = generate(step)
        seen["batch"], seen["before"] = batch, _teacher_forced_row_logp(trainer.policy, batch.rollout)
        return batch

    trainer._generate = recording  # type: ignore[method-assign]
    trainer.step(0)
    batch = seen["batch"]
    adv = torch.cat([batch.advantages[k].cpu() for k in range(len(batch.micro))])
    assert (adv > 0).any() and (adv < 0).any(), "no reward spread: the step would train on nothing"
    delta = _teacher_forced_row_logp(trainer.policy, batch.rollout) - seen["before"]
    assert float(delta[adv > 0].mean()) > 0 > float(delta[adv < 0].mean())
    assert float((adv * delta).sum()) > 0


def _plan_share(cfg: PretrainConfig, policy: JanusShapesPolicy) -> tuple[float, float]:
    """(the plan tokens' total weight in ``JanusShapesBatches.loss``, their share of the tokens): the loss's
    derivative with respect to each token's ``-logp``, summed over the plan tokens (the weights sum to 1)."""
    import irisbench.policies.janus_shapes as js

    leaves: list[torch.Tensor] = []
    real = js._nll

    def recording(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        leaves.append(real(logits, tokens).detach().requires_grad_(True))
        return leaves[-1]

    js._nll = recording
    try:
        loss, _ = JanusShapesBatches(BatchMaker(cfg, None, policy.image_tokenizer), policy).loss(0)
    finally:
        js._nll = real
    loss.backward()
    image, text = leaves  # the loss reads the image part first
    lengths = JanusShapesBatches(BatchMaker(cfg, None, policy.image_tokenizer), policy).rollout(0).extras[
        "text_lengths"][:text.shape[0]]
    plan = float(text.grad.sum())  # padding positions past a row's CoT get no weight
    assert plan + float(image.grad.sum()) == pytest.approx(1.0, rel=1e-5)
    return plan, sum(lengths) / (sum(lengths) + image.numel())


def test_the_janus_recipe_gives_the_plan_its_own_share_of_the_loss() -> None:
    """The cause of a CoT that ignores its prompt: in one token mean, the plan words of the ``cot_rows`` rows
    are ~4% of the tokens against 64 image codes on every row, so the plan's gradient is swamped (measured on
    the 700-step recipe: held-out plan loss 1.195 with the true prompts, 1.410 with a batch's prompts shuffled;
    at 250 steps 1.368 vs 1.371). The shipped recipe weighs the plan's mean and the image's mean by
    ``plan_weight`` (0.5): both shares are checked against the derivative of the loss itself."""
    from irisbench.train.pretrain import ARCH_RECIPES

    tok = fit_patch_tokenizer(n_scenes=200, seed=0)
    pol = create(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=1)
    recipe = PretrainConfig.for_world("shapes", {"batch_size": 16, "cot_rows": 4}, arch="janus")
    assert recipe.plan_weight == ARCH_RECIPES["janus"]["plan_weight"] == 0.5
    plan, token_share = _plan_share(recipe, pol)
    assert plan == pytest.approx(0.5, rel=1e-5)
    assert token_share < 0.05  # what a token mean would give the plan
    # plan_weight None: the token mean, every token weighs the same
    plan, token_share = _plan_share(PretrainConfig.for_world("shapes", {"batch_size": 16, "cot_rows": 4,
                                                                          "plan_weight": None}, arch="janus"), pol)
    assert plan == pytest.approx(token_share, rel=1e-5)


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "half"])
def test_plan_weight_is_checked(bad: object) -> None:
    from irisbench.train.pretrain import PretrainError

    with pytest.raises(PretrainError, match="plan_weight"):
        PretrainConfig.for_world("shapes", {"plan_weight": bad}, arch="janus").check()
    with pytest.raises(PretrainError, match="arch 'janus' only"):
        PretrainConfig.for_world("shapes", {"plan_weight": 0.5}).check()
