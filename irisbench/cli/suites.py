"""What is there: ``suites`` (ls, show, validate, build, overlap), ``scorers check``, ``ls`` and ``env``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from irisbench.cli.options import ScorerOptionFlag, command, option
from irisbench.cli.shared import Command, app, console, err, guard, scorers_app, suites_app
from irisbench.core.errors import parse_key_values


@suites_app.command("ls", cls=Command)
def suites_ls() -> None:
    """List the registered suites."""
    from irisbench.suites import load_suite, suite_names

    table = Table(title="suites")
    for col in ("name", "protocol", "images/prompt", "worlds", "description"):
        table.add_column(col)
    for name in suite_names():
        s = load_suite(name)
        table.add_row(s.name, s.protocol, str(s.images_per_prompt), ", ".join(s.prompts), s.description)
    table.add_row("wise", "wise-legacy, wise-verified", "1", "open (your prompt files)",
                  "WISE: world knowledge, scored by a judge model (eval --suite wise --prompts FILE --judge URL)")
    console.print(table)


@suites_app.command("show", cls=Command)
def suites_show(name: str, world: str = typer.Option("shapes", help="shapes or open"),
                split: str = typer.Option(None, help="Split to summarise (default: the suite's).")) -> None:
    """Show a suite: its spec and the resolved prompt set (counts per tag, split kinds, sha256)."""

    def body() -> None:
        from collections import Counter

        from irisbench.suites import load_suite, resolve_prompts

        s = load_suite(name)
        items, prov = resolve_prompts(s, world, split)
        console.print(f"[bold]{s.name}[/]: {s.description}")
        console.print(f"protocol {s.protocol}, {s.images_per_prompt} images per prompt, "
                      f"scorer {s.scorer.get(world)}")
        console.print_json(json.dumps(prov))
        table = Table(title=f"prompts per tag ({world} world, {prov['split']})")
        table.add_column("tag")
        table.add_column("entries", justify="right")
        table.add_column("distinct prompts", justify="right")
        if world == "shapes":
            table.add_column("split kind")
            from irisbench.world.prompts import SPLIT_KIND
        by_tag = Counter(it["tag"] for it in items)
        for tag, count in by_tag.items():
            distinct = len({it["prompt"] for it in items if it["tag"] == tag})
            row = [tag, str(count), str(distinct)]
            if world == "shapes":
                row.append(SPLIT_KIND.get(tag, "?"))
            table.add_row(*row)
        console.print(table)
        if world == "shapes" and prov.get("split") in ("val", "test"):
            from irisbench.world.prompts import build_splits, split_overlap

            train = build_splits(seed=s.source("shapes").seed)["train"]
            shared = split_overlap(train, items)
            console.print(f"prompt texts shared with the RL-training split: {len(shared)}"
                          + (f" ({', '.join(repr(t) for t in shared[:3])}, ...)" if shared else ""))

    guard(body)


@suites_app.command("validate", cls=Command)
def suites_validate(
    file: Path,
    world: str = typer.Option("open", help="Vocabulary to check classes against: open (COCO) or shapes."),
) -> None:
    """Check a suite YAML or an official-format GenEval metadata JSONL; report the first error precisely."""

    def body() -> None:
        if file.suffix in (".yaml", ".yml"):
            from irisbench.suites import load_suite

            s = load_suite(file)
            console.print(f"[green]ok[/]: suite {s.name!r} ({s.protocol})")
            return
        from collections import Counter

        from irisbench.protocols.geneval import load_metadata
        from irisbench.suites import world_classes

        items = load_metadata(file, classes=world_classes(world))
        tags = Counter(it["tag"] for it in items)
        console.print(f"[green]ok[/]: {len(items)} prompts in {file} ({dict(tags)})")

    guard(body)


def _prompt_texts(file: Path) -> list[tuple[int, str]]:
    """(line number, prompt text) of a ``.txt`` prompt file (one per line) or a GenEval metadata JSONL."""
    from irisbench.core.errors import UsageError

    if not file.is_file():
        raise UsageError(f"{file}: no such file")
    if file.suffix == ".txt":
        lines = file.read_text(encoding="utf-8").splitlines()
        return [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
    out = []
    for i, line in enumerate(file.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["prompt"]
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"{file}: line {i + 1} is not a JSON object with a 'prompt' field (a .txt file "
                             "holds one prompt per line)") from None
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"{file}: line {i + 1}: field 'prompt' must be a non-empty string")
        out.append((i + 1, text))
    return out


@suites_app.command("overlap", cls=Command)
def suites_overlap(
    train: Path = typer.Argument(..., help="The RL-training prompts (.txt, one per line, or GenEval JSONL)."),
    held_out: list[Path] = typer.Argument(..., help="Evaluation prompt files (val, test) to check against it."),
) -> None:
    """Prompt texts an RL run trains on that also appear in evaluation files (case and spacing ignored).
    Exits 1 when any text is shared; a training file that repeats a text is refused."""

    def body() -> None:
        from irisbench.core.errors import UsageError
        from irisbench.core.stats import prompt_key as norm

        seen: dict[str, int] = {}
        for line, text in _prompt_texts(train):
            if norm(text) in seen:
                raise UsageError(f"{train}: line {line} repeats the prompt of line {seen[norm(text)]} ({text!r}); "
                                 "a training prompt file lists each text once")
            seen[norm(text)] = line
        table = Table(title=f"prompt texts shared with {train} ({len(seen)} texts)")
        for col in ("file", "entries", "distinct texts", "shared"):
            table.add_column(col, justify="left" if col == "file" else "right")
        total = 0
        examples: list[str] = []
        for f in held_out:
            texts = [norm(t) for _, t in _prompt_texts(f)]
            shared = sorted(set(texts) & set(seen))
            total += len(shared)
            examples += [f"{f}: {t!r} (training line {seen[t]})" for t in shared[:3]]
            table.add_row(str(f), str(len(texts)), str(len(set(texts))), str(len(shared)))
        console.print(table)
        for e in examples:
            console.print(e, soft_wrap=True)
        if total:
            raise typer.Exit(1)

    guard(body)


@suites_app.command("build", cls=Command)
def suites_build(
    name: str = typer.Argument("geneval"),
    world: str = typer.Option("open", help="open: the official prompts; shapes: the shapes-world splits."),
    out: Path = typer.Option(None, help="Output file (open) or folder (shapes). Default: results/prompts/."),
) -> None:
    """Regenerate a suite's prompt files with the project's own generator (GenEval: sha256-checked)."""

    def body() -> None:
        import hashlib

        from irisbench.suites import load_suite

        s = load_suite(name)
        if s.protocol != "geneval":
            raise ValueError(f"suite {name!r}: building is implemented for GenEval suites")
        if world == "open":
            from irisbench.protocols.geneval_prompts import generate_official_metadata, write_metadata_jsonl

            src = s.source("open")
            path = out or Path("results/prompts/evaluation_metadata.jsonl")
            path.parent.mkdir(parents=True, exist_ok=True)
            items = generate_official_metadata(seed=src.seed)
            write_metadata_jsonl(items, path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            ok = digest == src.sha256
            console.print(f"wrote {len(items)} prompts to {path}\nsha256 {digest} "
                          + ("[green](matches the official file)" if ok else f"[red](expected {src.sha256})"))
            if not ok:
                raise typer.Exit(1)
        elif world == "shapes":
            from irisbench.protocols.geneval_prompts import write_metadata_jsonl
            from irisbench.world.prompts import build_splits

            folder = out or Path("results/prompts/shapes")
            folder.mkdir(parents=True, exist_ok=True)
            for split, items in build_splits(seed=s.source("shapes").seed).items():
                write_metadata_jsonl(items, folder / f"{split}.jsonl")
                console.print(f"{split}: {len(items)} prompts -> {folder / f'{split}.jsonl'}")
        else:
            raise ValueError(f"unknown world {world!r} (shapes or open)")

    guard(body)


@dataclass(kw_only=True)
class ScorersCheckArgs(ScorerOptionFlag):
    scorer: list[str] = option([], "Scorer to check (repeatable; default: geneval-mask2former, compbench-real and "
                                   "the preference models pickscore, hpsv2).")
    as_json: bool = option(False, "Print JSON.", "--json")


@command("check", ScorersCheckArgs, on=scorers_app)
def scorers_check(args: ScorersCheckArgs) -> None:
    """Which local weights each real-model scorer would load, and whether they are there (nothing is loaded or
    downloaded). Exits 1 when something is missing."""

    def body() -> list[Any]:
        from irisbench.scorers.weights import check_scorers

        return check_scorers(args.scorer or None, parse_key_values(args.scorer_option, "--scorer-option",
                                                                   numbers=False))

    found = guard(body)
    if args.as_json:
        from irisbench.scorers.weights import as_dicts

        console.print_json(json.dumps(as_dicts(found)))
    else:
        console.print(weights_table(found))
    missing = [c for c in found if not c.ok]
    if missing:
        err.print(f"[bold red]{len(missing)} of {len(found)} model(s) missing[/]", highlight=False)
        raise typer.Exit(1)


def weights_table(found: list[Any]) -> Table:
    """The ``scorers check`` table, readable at 80 columns: one row per model, the long text in one column."""
    table = Table(title="scorer weights", show_lines=True)
    table.add_column("scorer / model", overflow="fold", max_width=24)
    table.add_column("status", no_wrap=True)
    table.add_column("option · would load · found / why not", overflow="fold", ratio=1)
    for c in found:
        where = f"found: {c.path} ({c.detail})" if c.ok else (f"found: {c.path}\n" if c.path else "") + c.detail
        table.add_row(f"{c.scorer}\n{c.component}", "[green]ok" if c.ok else "[red]MISSING",
                      f"--scorer-option {c.options}\n{c.source}\n{where}")
    return table


@app.command("ls", cls=Command)
def ls_cmd() -> None:
    """List registered policies, scorers, metrics, rewards and suites."""
    from irisbench.core.registry import METRICS, POLICIES, SCORERS
    from irisbench.scorers.weights import REAL_SCORERS, weights_status
    from irisbench.suites import suite_names
    from irisbench.train.rewards import REWARDS

    for reg in (POLICIES, SCORERS, METRICS):
        table = Table(title=reg.plural)
        table.add_column("name")
        table.add_column("status")
        table.add_column("what")
        for e in reg.entries():
            status, summary = ("ready" if e.available else "[yellow]planned"), e.summary
            if reg is SCORERS and e.available and e.name in REAL_SCORERS:
                ready, detail = weights_status(e.name)
                if not ready:
                    status, summary = "[red]no weights", f"{summary}; {detail} (see `irisbench scorers check`)"
            table.add_row(e.name, status, summary)
        console.print(table)
    table = Table(title="rewards (train --set reward=NAME)")
    table.add_column("name")
    table.add_column("what")
    for name, (_, summary) in REWARDS.items():
        table.add_row(name, summary)
    console.print(table)
    console.print(f"suites: {', '.join(suite_names())}")


@app.command("env", cls=Command)
def env_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Versions, devices and the git hash: what a run records as provenance."""
    import torch  # noqa: F401  (so env_info can report devices)

    from irisbench.core.devices import cpu_has_native_bf16
    from irisbench.core.provenance import env_info

    info = env_info()
    info["torch_threads"] = torch.get_num_threads()
    info["cuda_available"] = torch.cuda.is_available()
    info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    info["cpu_native_bf16"] = cpu_has_native_bf16()
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    table = Table(title="irisbench environment")
    table.add_column("key")
    table.add_column("value")
    for k, v in info.items():
        table.add_row(k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v))
    console.print(table)
