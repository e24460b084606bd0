"""T2I-CompBench's official score files, written from a run's per-image records.

Each official evaluation script writes, inside the category folder that holds ``samples/`` (its
``--out_dir``/``--outpath``), a JSON list of ``{"question_id", "answer"}`` (one per image) and a text file
with the average. The paths, the ``question_id`` and the number formats are the scripts' (checked against
Karine-Huang/T2I-CompBench):

- BLIP-VQA (``BLIPvqa_eval/BLIP_vqa.py``; color, shape, texture): ``annotation_blip/vqa_result.json``,
  question_id = the image's position in index order, answer = a 4-decimal string ("0.1234");
  ``blip_vqa_score.txt`` = "BLIP-VQA score:{avg}".
- UniDet 2D (``UniDet_eval/2D_spatial_eval.py``; spatial): ``labels/annotation_obj_detection_2d/``
  ``vqa_result.json`` (question_id = the file name's index, answer a float), ``mapping.json`` ({image,
  question_id}) and ``avg_score.txt`` = "score avg:{avg}".
- CLIP (``CLIPScore_eval/CLIP_similarity.py``; non_spatial): ``annotation_clip/vqa_result.json``
  (question_id = position), ``score_avg.txt`` = "score avg:{avg}".
- 3-in-1 (``3_in_1_eval/3_in_1.py``; complex): ``annotation_3_in_1/vqa_result.json`` (question_id =
  position), ``vqa_score.txt`` = "score avg:{avg}".
- numeracy (``UniDet_eval/numeracy_eval.py``): ``annotation_num/vqa_result.json`` (question_id = the file
  name's index), ``score.txt`` = "total:{total} num:{n} avg:{avg}".

Departures: the answers are irisbench's per-image scores (``records.jsonl`` ``score``), so where the
perception differs (OWLv2 for UniDet in the open world, the exact shapes detector in the shapes world) the
numbers differ as the records do; the files are only the official format. The BLIP average is taken over the
4-decimal strings, as the official script sums them. Only images present are listed (an incomplete folder
scored with ``--allow-missing`` gives fewer entries, as the official scripts, which list ``samples/``, would).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from irisbench.core.records import atomic_write_text
from irisbench.protocols.compbench_prompts import CATEGORIES

# rule -> (folder of vqa_result.json, question_id is the file index (else the position), average file)
OFFICIAL_FILES: dict[str, tuple[str, bool, str]] = {
    "blip_vqa": ("annotation_blip", False, "blip_vqa_score.txt"),
    "unidet_2d": ("labels/annotation_obj_detection_2d", True, "avg_score.txt"),
    "clip": ("annotation_clip", False, "score_avg.txt"),
    "three_in_one": ("annotation_3_in_1", False, "vqa_score.txt"),
    "numeracy": ("annotation_num", True, "score.txt"),
    "unidet_3d": ("labels/annotation_obj_detection_3d", True, "avg_result.txt"),
}


def _average_text(rule: str, answers: list[Any]) -> str:
    values = [float(a) for a in answers]
    total, avg = sum(values), sum(values) / len(values)
    if rule == "blip_vqa":
        return "BLIP-VQA score:" + str(avg)
    if rule == "numeracy":
        return f"total:{total} num:{len(values)} avg:{avg}"
    if rule == "unidet_3d":
        return f"avg score is {avg}"
    return "score avg:" + str(avg)


def write_compbench_files(run: Path, items: list[dict], records: list[dict], n: int) -> dict[str, dict]:
    """Write each category's official ``vqa_result.json`` and average file under ``run/compbench/<category>/``;
    returns {category: {"file", "average_file", "images", "average"}}."""
    from irisbench.evaluation.layouts import file_prompt

    within: dict[int, int] = {}
    counts: dict[str, int] = {}
    for i, item in enumerate(items):
        within[i] = counts.get(item["tag"], 0)
        counts[item["tag"]] = within[i] + 1
    by_category: dict[str, list[tuple[int, str, float]]] = {}
    for r in records:
        i, j = r["prompt_index"], r["sample_index"]
        index = n * within[i] + j
        name = f"{file_prompt(items[i])}_{index:06d}.png"
        by_category.setdefault(items[i]["tag"], []).append((index, name, float(r["score"])))
    out: dict[str, dict] = {}
    for category, rows in by_category.items():
        rule = CATEGORIES[category].rule if category in CATEGORIES else None
        if rule not in OFFICIAL_FILES:
            continue
        folder, by_index, average_file = OFFICIAL_FILES[rule]
        rows.sort()
        answers: list[Any] = [f"{s:.4f}" if rule == "blip_vqa" else s for _, _, s in rows]
        result = [{"question_id": index if by_index else k, "answer": a}
                  for k, ((index, _, _), a) in enumerate(zip(rows, answers, strict=True))]
        base = run / "compbench" / category / folder
        base.mkdir(parents=True, exist_ok=True)
        atomic_write_text(base / "vqa_result.json", json.dumps(result))
        atomic_write_text(base / average_file, _average_text(rule, answers))
        if rule == "unidet_2d":
            atomic_write_text(base / "mapping.json", json.dumps([{"image": name, "question_id": index}
                                                                 for index, name, _ in rows]))
        rel = f"compbench/{category}/{folder}"
        out[category] = {"file": f"{rel}/vqa_result.json", "average_file": f"{rel}/{average_file}",
                         "images": len(rows), "average": sum(float(a) for a in answers) / len(answers)}
    return out
