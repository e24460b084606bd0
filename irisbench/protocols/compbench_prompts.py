"""T2I-CompBench(++) categories and the official prompt files: names, scoring rules, strict readers.

``load_prompt_file`` reads an official ``*_val.txt`` file exactly as the official scripts index it (one
prompt per line, duplicates kept) and refuses, naming file and line, anything that would shift that index or
break the ``{prompt}_{index:06d}.png`` image naming.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from irisbench.core.errors import IrisbenchError, UsageError, read_utf8


@dataclass(frozen=True)
class Category:
    """One T2I-CompBench(++) sub-category: its official val prompt file, scoring rule, mean-of-6 membership."""

    name: str
    val_file: str
    rule: str  # "blip_vqa" | "unidet_2d" | "clip" | "three_in_one" | "unidet_3d" | "numeracy"
    in_mean_of_6: bool
    plus_plus_only: bool = False


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category("color", "color_val.txt", "blip_vqa", True),
        Category("shape", "shape_val.txt", "blip_vqa", True),
        Category("texture", "texture_val.txt", "blip_vqa", True),
        Category("spatial", "spatial_val.txt", "unidet_2d", True),
        Category("non_spatial", "non_spatial_val.txt", "clip", True),
        Category("complex", "complex_val.txt", "three_in_one", True),
        Category("3d_spatial", "3d_spatial_val.txt", "unidet_3d", False, plus_plus_only=True),
        Category("numeracy", "numeracy_val.txt", "numeracy", False, plus_plus_only=True),
    )
}
MEAN_OF_6 = tuple(name for name, c in CATEGORIES.items() if c.in_mean_of_6)
MEAN_OF_6_LABEL = "mean of 6 (IRIS-style)"
COLOR_VERSIONS = {"current": "color_val.txt", "pre-2025-09": "color_val.pre-2025-09.txt"}
COMPLEX_SUBSET_FILES = {"spatial": "complex_val_spatial.txt", "action": "complex_val_action.txt"}
NUMERACY_OBJECTS_FILE = "new_objects.txt"


class PromptFileError(IrisbenchError, ValueError):
    """An official-style prompt file that cannot be read as one prompt per line (message names file:line)."""


class PromptParseError(IrisbenchError, ValueError):
    """A prompt the official rule cannot score (the official script would crash or misalign)."""


def category_file(category: str, *, color_version: str = "current") -> str:
    """File name of the official val prompt file of ``category``.

    ``color_version="pre-2025-09"`` selects the color file as it was before the 2025-09-03 "remove duplicates"
    edit (used by papers before Sept 2025, IRIS and T2I-R1 included); it only applies to ``color``.
    """
    if category not in CATEGORIES:
        raise UsageError(f"unknown T2I-CompBench category {category!r}; known: {list(CATEGORIES)}")
    if color_version not in COLOR_VERSIONS:
        raise UsageError(f"color_version must be one of {list(COLOR_VERSIONS)}, got {color_version!r}")
    if category == "color":
        return COLOR_VERSIONS[color_version]
    return CATEGORIES[category].val_file


def load_prompt_file(path: str | os.PathLike[str]) -> list[str]:
    """Read an official ``*_val.txt`` prompt file: one prompt per line, in file order, duplicates kept.

    Accepts LF or CRLF line endings (mixed too), a missing final newline and a UTF-8 BOM. Prompts are kept
    verbatim apart from the line ending. Rejected with ``PromptFileError`` (naming file:line): a file that is
    not UTF-8, an empty file, a blank line anywhere (none of the official files has one, and a blank line
    would shift the prompt index that the 10-images-per-prompt naming and the 3-in-1 slicing rely on), a stray
    carriage return inside a line, and a prompt containing "_" or "/" (the official scripts take the prompt
    back from the image file name ``{prompt}_{index:06d}.png`` by splitting at the first "_").
    """
    text = read_utf8(path, PromptFileError, "prompt file", "a prompt .txt file")
    if not text.strip():
        raise PromptFileError(f"{path}: prompt file is empty")
    lines = text.split("\n")
    if lines[-1] == "":  # the final newline, when present
        lines.pop()
    prompts: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        where = f"{path}:{lineno}"
        if not line.strip():
            raise PromptFileError(f"{where}: blank line (each line must hold one prompt)")
        if "\r" in line:
            raise PromptFileError(f"{where}: stray carriage return inside the line")
        for bad in ("_", "/"):
            if bad in line:
                raise PromptFileError(
                    f"{where}: prompt contains {bad!r}, which breaks the official '{{prompt}}_{{index}}.png' "
                    f"image naming: {line!r}"
                )
        prompts.append(line)
    return prompts


def load_category_prompts(
    folder: str | os.PathLike[str], category: str, *, color_version: str = "current"
) -> list[str]:
    """``load_prompt_file`` of the official val file of ``category`` inside ``folder``."""
    return load_prompt_file(os.path.join(folder, category_file(category, color_version=color_version)))
