"""Reference policies for the shapes world: the sanity bounds that every report carries.

- ``oracle`` parses the prompt back into GenEval metadata and renders a random ground-truth scene for
  it: an upper bound that checks the pipeline (its GenEval score must be ~1).
- ``random`` renders a random scene that ignores the prompt: a lower bound (chance level).

Neither draws tokens, so their rollouts carry no per-token statistics (T = 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from irisbench.policies.base import Rollout, check_sampling_args, row_seeds


class _ScenePolicy:
    world = "shapes"
    name = "scene"

    def __init__(self, **_: Any) -> None:
        pass

    def _scene(self, prompt: str, rng: np.random.Generator):  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(
        self,
        prompts: Sequence[str],
        n: int = 1,
        seed: int | Sequence[int] = 0,
        *,
        cfg: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
    ) -> Rollout:
        from irisbench.world.plan import plan_text
        from irisbench.world.scene import render

        check_sampling_args(n, cfg, temperature, top_k)
        seeds = row_seeds(len(prompts), n, seed)
        rows = [p for p in prompts for _ in range(n)]
        images, plans = [], []
        for prompt, s in zip(rows, seeds, strict=True):
            scene = self._scene(prompt, np.random.default_rng(s))
            images.append(render(scene))
            plans.append(plan_text(scene))
        return Rollout(prompts=rows, seeds=seeds, images=images, plans=plans,
                       settings={"policy": self.name})

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "world": self.world, "parameters": 0}


class OraclePolicy(_ScenePolicy):
    """Renders a ground-truth scene for the prompt."""

    name = "oracle"

    def _scene(self, prompt: str, rng: np.random.Generator):
        from irisbench.world.prompts import parse_prompt
        from irisbench.world.sampler import scene_for

        return scene_for(parse_prompt(prompt), rng)

    def check_prompts(self, prompts: Sequence[str]) -> None:
        from irisbench.world.prompts import parse_prompt

        for p in prompts:
            parse_prompt(p)


class RandomPolicy(_ScenePolicy):
    """Renders a random scene whatever the prompt."""

    name = "random"

    def _scene(self, prompt: str, rng: np.random.Generator):
        from irisbench.world.sampler import random_scene

        return random_scene(rng)
