"""GRPO step cost on this machine, printed as JSON.

- one step's time split into sampling, reward, teacher-forced pass, backward and optimizer;
- the intrinsic reward's self-certainty taken from the same teacher-forced pass that gives the log-probs
  (``sc_source=teacher-forced``) against IRIS's extra forward pass just for it (``second-pass``): the ratio;
- step time against the group size G (2, 4, 8, 16) at a fixed number of prompts.

Usage: ``python benchmarks/bench_grpo.py [--policy shapes-base|PATH] [--steps 3] [--prompts 4]``.
Without the shipped base it falls back to a randomly initialised policy of the same size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def _policy_path(name: str) -> str:
    from irisbench.policies.shapes_lm import SHIPPED_BASE

    if name != "shapes-base" or (SHIPPED_BASE / "model.safetensors").is_file():
        return name
    from irisbench.policies.shapes_lm import ShapesLMPolicy
    from irisbench.world.tokenizer import fit_patch_tokenizer

    path = Path(tempfile.mkdtemp()) / "random-base"
    ShapesLMPolicy.create(fit_patch_tokenizer(n_scenes=4000, seed=0), seed=0).save(path)
    return str(path)


def measure(policy: str, *, steps: int, prompts: int, generations: int, sc_source: str) -> dict:
    from irisbench.train.config import resolve_config
    from irisbench.train.trainer import GRPOTrainer, read_metrics

    out = Path(tempfile.mkdtemp()) / "run"
    cfg = resolve_config("iris-shapes", {"policy": policy, "steps": steps, "prompts_per_step": prompts,
                                         "num_generations": generations, "eval_every": 0,
                                         "checkpoint_every": 10_000, "sc_source": sc_source})
    GRPOTrainer(cfg, out, progress=False).train()
    rows = read_metrics(out)[1:] or read_metrics(out)  # the first step pays one-off warm-up costs
    keys = ("s_per_step", "t_sample", "t_reward", "t_forward", "t_backward", "t_optimizer")
    return {k: round(statistics.median(r[k] for r in rows), 4) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--policy", default="shapes-base")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--groups", default="2,4,8,16")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    policy = _policy_path(args.policy)
    started = time.perf_counter()
    split = measure(policy, steps=args.steps, prompts=args.prompts, generations=8, sc_source="teacher-forced")
    second = measure(policy, steps=args.steps, prompts=args.prompts, generations=8, sc_source="second-pass")
    by_g = {g: measure(policy, steps=args.steps, prompts=args.prompts, generations=g, sc_source="teacher-forced")
            for g in (int(x) for x in args.groups.split(","))}
    reward_and_tf = split["t_reward"] + split["t_forward"]
    reward_and_tf_2 = second["t_reward"] + second["t_forward"]
    print(json.dumps({
        "policy": args.policy, "prompts_per_step": args.prompts, "threads": torch.get_num_threads(),
        "step_split_G8": split,
        "sc_from_same_pass_vs_second_pass": {
            "teacher_forced_s": split, "second_pass_s": second,
            "forward_plus_reward_ratio_second_over_same": round(reward_and_tf_2 / reward_and_tf, 3),
            "step_ratio_second_over_same": round(second["s_per_step"] / split["s_per_step"], 3)},
        "step_time_by_G": {str(g): v["s_per_step"] for g, v in by_g.items()},
        "sampling_time_by_G": {str(g): v["t_sample"] for g, v in by_g.items()},
        "note": "the shapes world has a fixed image length (64 tokens); time per step grows with rollouts G x prompts",
        "wall_s": round(time.perf_counter() - started, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
