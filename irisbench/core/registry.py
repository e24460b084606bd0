"""Name -> implementation registries (policies, suites, scorers, metrics, rewards), resolved lazily.

Entries are ``"module:attr"`` strings so that listing them (``irisbench ls``) imports nothing heavy;
an unknown name raises ``UnknownNameError`` with "did you mean" suggestions.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from irisbench.core.errors import IrisbenchError, did_you_mean


class UnknownNameError(IrisbenchError, ValueError):
    """A name that is not registered; the message lists close matches and the valid names."""


class NotBuiltError(IrisbenchError, NotImplementedError):
    """A registered name whose implementation is planned, not built."""


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:attribute"
    summary: str
    available: bool = True  # False: planned, not built yet (resolving it says so)
    world: str | None = None  # policies: the world they draw in ("shapes" or "open")

    def load(self) -> Any:
        if not self.available:
            raise NotBuiltError(f"{self.name!r} is registered but not built yet: {self.summary}")
        module, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


class Registry:
    def __init__(self, kind: str, entries: list[Entry]):
        self.kind = kind
        self._entries = {e.name: e for e in entries}

    @property
    def plural(self) -> str:
        return plural(self.kind)

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise UnknownNameError(unknown_name_message(self.kind, name, self.names()))
        return self._entries[name]

    def load(self, name: str) -> Any:
        return self.get(name).load()


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    return (f"unknown {kind} {name!r}.{did_you_mean(name, valid, cutoff=0.5)} "
            f"Valid {plural(kind)}: {', '.join(valid)}.")


def plural(kind: str) -> str:
    """``policy`` -> ``policies``, ``suite`` -> ``suites``."""
    return kind[:-1] + "ies" if kind.endswith("y") and kind[-2:-1] not in "aeiou" else kind + "s"


POLICIES = Registry(
    "policy",
    [
        Entry("shapes-base", "irisbench.policies.shapes_lm:load_shipped_base",
              "the shipped shapes-world base model (a ~2M-parameter Llama writing a plan, then 64 image codes)",
              world="shapes"),
        Entry("textures-base", "irisbench.policies.shapes_lm:load_textures_base",
              "the shipped textures-world base (the shapes world with per-patch shading and a lossy tokenizer)",
              world="shapes"),
        Entry("shapes-lm", "irisbench.policies.shapes_lm:ShapesLMPolicy.load",
              "a shapes-world model from a checkpoint folder (--model PATH)", world="shapes"),
        Entry("oracle", "irisbench.policies.reference:OraclePolicy",
              "renders a ground-truth scene for the prompt (shapes world; sanity upper bound)", world="shapes"),
        Entry("random", "irisbench.policies.reference:RandomPolicy",
              "renders a random scene ignoring the prompt (shapes world; sanity lower bound)", world="shapes"),
        Entry("janus-pro", "irisbench.policies.janus:JanusPolicy.from_pretrained",
              "Janus-Pro through transformers (--model deepseek-ai/Janus-Pro-1B or a local folder)", world="open"),
        Entry("janus-shapes", "irisbench.policies.janus_shapes:load_janus_shapes",
              "the shipped tiny Janus (transformers' Janus classes, CoT plan then CFG image tokens) pretrained on the "
              "shapes world (or --model a folder of it)", world="shapes"),
    ],
)

SCORERS = Registry(
    "scorer",
    [
        Entry("shapes-exact", "irisbench.scorers.shapes:ShapesGenEvalScorer",
              "exact detector + GenEval judge for shapes-world images"),
        Entry("shapes-compbench", "irisbench.scorers.shapes_compbench:ShapesCompBenchScorer",
              "exact detector and VQA oracle feeding the T2I-CompBench rules (shapes world)"),
        Entry("geneval-mask2former", "irisbench.scorers.geneval_real:Mask2FormerScorer",
              "Mask2Former instance segmentation + CLIP color classifier for real images (needs cached weights)"),
        Entry("compbench-real", "irisbench.scorers.compbench_scorer:CompBenchScorer",
              "BLIP-VQA, OWLv2 (for UniDet) and CLIP feeding the T2I-CompBench rules (needs cached weights)"),
    ],
)

METRICS = Registry(
    "metric",
    [
        Entry("geneval", "irisbench.core.stats:geneval_summary",
              "per-tag accuracy, overall = unweighted mean of tags, cluster-bootstrap 95% CIs"),
        Entry("compbench", "irisbench.core.stats:score_summary",
              "per-category mean score, cluster-bootstrap 95% CIs; 'mean of 6 (IRIS-style)' when all six exist"),
        Entry("clip", "irisbench.metrics.clip_score:clip_score",
              "CLIP score (open_clip or the shipped shapes CLIP): eval --metrics clip"),
        Entry("fid", "irisbench.metrics.fid:fid",
              "FID on CLIP or Inception features (torchmetrics): eval --metrics fid"),
        Entry("kid", "irisbench.metrics.fid:kid", "KID, mean and std over subsets (torchmetrics): eval --metrics kid"),
        Entry("pickscore", "irisbench.metrics.preference:load_pickscore",
              "PickScore_v1, logit_scale.exp() * cos (local CLIPModel folder): eval --metrics pickscore"),
        Entry("hpsv2", "irisbench.metrics.preference:load_hpsv2",
              "HPS v2.1, cos in open_clip ViT-H-14 (local weights file): eval --metrics hpsv2"),
    ],
)
