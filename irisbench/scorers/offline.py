"""Scorer weights come from this machine only: the hub's offline switches, local-only loads, one-line errors.

irisbench never downloads a model (docs/scorers.md; ``irisbench scorers check`` lists what each real-image
scorer would load, and ``eval`` runs the same check first: ``irisbench.scorers.weights.require_weights``). Every
loader of ``irisbench.scorers.geneval_real`` / ``compbench_real``:

- calls ``go_offline()`` before its first hub import: ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set
  to 1 by irisbench itself (whatever the user's environment says), and so is ``huggingface_hub``'s constant
  when the library was imported earlier (it reads the variable once, at import);
- passes ``LOCAL_ONLY`` (``local_files_only=True``) to every ``from_pretrained``;
- gives open_clip a local file only (``irisbench.metrics.clip_score.load_clip`` resolves a pretrained tag
  through the local caches and refuses what is not there);
- runs inside ``loading(scorer, option, source)``, which turns any failure of the load (a missing or corrupt
  file, a config transformers cannot read) into one ``ScorerWeightsError`` line naming the scorer, what it
  tried to load and the ``--scorer-option`` that changes it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from irisbench.core.errors import IrisbenchError, UsageError

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
LOCAL_ONLY = {"local_files_only": True}
NEVER_DOWNLOADS = ("irisbench loads local weights only and never downloads (`irisbench scorers check` shows what each "
                   "scorer would load)")


class ScorerWeightsError(UsageError):
    """A real-image scorer's weights are missing, in the wrong place, or cannot be loaded."""


def go_offline() -> None:
    """Switch the Hugging Face hub (and transformers, which asks it) to offline mode for this process."""
    for var in OFFLINE_VARS:
        os.environ[var] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # imported before: it read the variables at import time
        constants.HF_HUB_OFFLINE = True


def _cause(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@contextmanager
def loading(scorer: str, option: str, source: object) -> Iterator[None]:
    """Load one model of ``scorer`` (chosen by ``--scorer-option option=...``) from ``source``; a failure is one
    ``ScorerWeightsError`` line. The project's own errors (a checkpoint that is not a COCO model...) pass."""
    go_offline()
    try:
        yield
    except IrisbenchError as err:
        raise ScorerWeightsError(f"scorer {scorer!r}: {err} (set --scorer-option {option}=...)") from None
    except Exception as err:  # noqa: BLE001 - any failure to load weights is the user's folder, said in one line
        raise ScorerWeightsError(
            f"scorer {scorer!r}: cannot load {source} ({type(err).__name__}: {_cause(err)}); {NEVER_DOWNLOADS}, "
            f"or set --scorer-option {option}=PATH") from None
