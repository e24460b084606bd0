"""Does a shapes-world Janus read its prompt? Held-out figures of a ``janus-shapes`` folder, printed as JSON.

- ``plan_loss_true`` / ``plan_loss_shuffled``: the teacher-forced CoT (plan) loss of fresh held-out scenes
  (``BatchMaker`` batches of a seed pretraining never drew), once with each row's own CoT request and once with
  the batch's requests permuted among its rows. A CoT that ignores the prompt scores the same on both; the gap
  is what the prompt tells the plan.
- ``image_given_true_plan``: the share of held-out scenes judged correct (exact detector, GenEval rules) when
  the image is drawn (CFG, the policy's defaults) from the image request that quotes the scene's true plan;
  ``image_given_own_cot``: the same prompts through ``sample`` (the model writes its own CoT). The second is at
  most about the first times the share of right plans.

    python benchmarks/janus_prompt_reading.py [FOLDER] --scenes 48
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np


def prompt_reading(policy: Any, *, scenes: int = 48, plan_batches: int = 3, seed: int = 12345) -> dict[str, Any]:
    """The figures of the module docstring for a loaded ``JanusShapesPolicy``."""
    import torch

    from irisbench.policies.janus import image_request
    from irisbench.policies.janus_decode import sample_image_tokens
    from irisbench.policies.janus_shapes import JanusShapesBatches
    from irisbench.protocols.geneval import judge
    from irisbench.train.pretrain import BatchMaker, PretrainConfig
    from irisbench.world.detector import detect_batch
    from irisbench.world.plan import plan_text

    def maker(batch: int, s: int) -> BatchMaker:
        cfg = PretrainConfig.for_world("shapes", {"seed": s, "batch_size": batch, "uncond_prob": 0.0}, arch="janus")
        return BatchMaker(cfg, None, policy.image_tokenizer)

    batches = JanusShapesBatches(maker(32, seed), policy)

    def plan_loss(shuffle: bool) -> float:
        nll = []
        for step in range(plan_batches):
            r = batches.rollout(step)
            if shuffle:
                ids = r.extras["cot_prompt_ids"]
                r.extras["cot_prompt_ids"] = [ids[i] for i in np.random.default_rng(step).permutation(len(ids))]
            with torch.no_grad():
                t = policy.part_logits(r, parts=("text",), logits=True)
            logp = torch.log_softmax(t["text"].float(), -1).gather(-1, t["text_tokens"].unsqueeze(-1)).squeeze(-1)
            nll.append(-logp[t["text_mask"]])
        return float(torch.cat(nll).mean())

    mds, drawn, _, _, _ = maker(scenes, seed + 1).draws(0)
    req = [policy.encode(image_request(md["prompt"], plan_text(s))) + [policy.boi_id] for md, s in zip(mds, drawn,
                                                                                                       strict=True)]
    out = sample_image_tokens(policy.model, req, policy._generators(list(range(len(req)))),
                              num_tokens=policy.num_image_tokens, cfg=policy.cfg, bos_id=policy.bos_id,
                              boi_id=policy.boi_id, pad_id=policy.pad_id, temperature=policy.temperature,
                              top_k=policy.top_k)
    given = detect_batch(np.stack(policy.decode_pixels(out.tokens)))
    own = detect_batch(np.stack(policy.sample([md["prompt"] for md in mds], n=1, seed=0).images))
    return {"plan_loss_true": plan_loss(False), "plan_loss_shuffled": plan_loss(True), "scenes": scenes,
            "image_given_true_plan": float(np.mean([judge(md, d).correct for md, d in zip(mds, given, strict=True)])),
            "image_given_own_cot": float(np.mean([judge(md, d).correct for md, d in zip(mds, own, strict=True)]))}


def main() -> None:
    import torch

    from irisbench.policies.janus_shapes import SHIPPED_JANUS_SHAPES, load_janus_shapes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=str(SHIPPED_JANUS_SHAPES))
    ap.add_argument("--scenes", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    policy = load_janus_shapes(args.folder, device="cpu")
    print(json.dumps({"folder": args.folder, **prompt_reading(policy, scenes=args.scenes)}))


if __name__ == "__main__":
    main()
