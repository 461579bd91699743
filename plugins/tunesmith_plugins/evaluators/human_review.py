"""The ``human-review`` evaluator: a blind side-by-side sheet of base and tuned answers for people to rate."""

from __future__ import annotations

import csv
import html
import io
import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import EvalContext, EvalExample, Evaluator, Register, TunesmithError, hookimpl, option
from tunesmith_plugins.evaluators.review_sheet import (
    COLUMNS,
    KEY_FILE,
    RESULTS_FILE,
    REVIEW_DIR,
    SHEET_CSV,
    SHEET_HTML,
)


class HumanReview(Evaluator):
    """A blind side-by-side review sheet: the base and the tuned model's answers to the same prompts.

    On the base model's pass it saves the base answers; on the tuned model's pass it writes, in the run's
    ``review/`` directory, ``review.csv`` (columns id, prompt, response_a, response_b, rating),
    ``review.html`` (the same, side by side) and ``review_key.json`` (which side is which). Which model
    is ``a`` is drawn per item with a seeded random generator, so raters cannot tell. Fill the rating
    column with a, b or tie and run ``tunesmith review import RUN_DIR review.csv`` for the tuned
    model's win/tie/loss rates. Needs ``evaluation.compare_base``. Metric: ``items``, the number of
    prompts on the sheet for the split. Writes nothing where the engine gives no output directory.
    """

    name = "human-review"
    cache_base = False  # the base pass saves the answers the tuned pass pairs with

    @dataclass
    class Config:
        seed: int = option(0, help="seed for which side (a or b) each model's answer goes on")
        max_items: int | None = option(None, help="at most this many prompts per split (default: all)")
        max_new_tokens: int | None = option(None, help="generation length limit (default: the run's)")

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        cfg = self.config
        out = getattr(ctx, "output_dir", None)
        if out is None and getattr(ctx, "world_size", 1) == 1:
            return {}
        examples = [ex for ex in ctx.examples if ex.prompt]
        if cfg.max_items is not None:
            examples = examples[: max(cfg.max_items, 0)]
        if not examples:
            raise TunesmithError("human-review: no evaluation examples have a prompt to answer")
        prompts = [ex.prompt for ex in examples]
        answers = ctx.generate(prompts, max_new_tokens=cfg.max_new_tokens)  # on every process
        if out is None or not getattr(ctx, "is_main", True):
            return {"items": len(examples)}  # another process writes the sheet
        out = Path(out)
        base_file = out / f"base-{_safe(ctx.split)}.json"
        if ctx.label == "base":
            _write(base_file, json.dumps({"split": ctx.split, "prompts": prompts, "answers": answers}))
            return {"items": len(examples)}
        if not base_file.is_file():
            raise TunesmithError(
                f"human-review: no base-model answers for split '{ctx.split}' in {out}",
                details=["the sheet compares base and tuned answers: set evaluation.compare_base: true"],
            )
        base = json.loads(base_file.read_text(encoding="utf-8"))
        if base.get("prompts") != prompts:
            raise TunesmithError(
                f"human-review: the base-model answers in {base_file} are for other prompts; "
                "run the base and tuned evaluation together"
            )
        pairs = {
            "split": ctx.split,
            "items": [
                {"prompt": _display(ex), "origin": ex.origin, "base": b, "tuned": t}
                for ex, b, t in zip(examples, base["answers"], answers, strict=True)
            ],
        }
        _write(out / f"pairs-{_safe(ctx.split)}.json", json.dumps(pairs, indent=1))
        write_sheet(out, cfg.seed)
        return {"items": len(examples)}


def write_sheet(out: Path, seed: int) -> int:
    """(Re)write the sheet, the page and the key from every split's saved pairs; returns the item count."""
    rows: list[dict[str, str]] = []
    key: dict[str, dict[str, str]] = {}
    for path in sorted(out.glob("pairs-*.json")):
        pairs = json.loads(path.read_text(encoding="utf-8"))
        split = pairs["split"]
        rng = random.Random(f"{seed}:{split}")  # per split, so adding a split never reshuffles another
        for number, item in enumerate(pairs["items"], start=1):
            item_id = f"{split}-{number}"
            base_first = rng.random() < 0.5
            a, b = ("base", "tuned") if base_first else ("tuned", "base")
            key[item_id] = {"a": a, "b": b, "split": split, "origin": item["origin"]}
            rows.append(
                {
                    "id": item_id,
                    "prompt": item["prompt"],
                    "response_a": item[a],
                    "response_b": item[b],
                    "rating": "",
                }
            )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    _write(out / SHEET_CSV, buffer.getvalue())
    _write(out / SHEET_HTML, render_html(rows))
    _write(out / KEY_FILE, json.dumps({"seed": seed, "items": key}, indent=1))
    return len(rows)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Blind review</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; }}
.item {{ border-top: 1px solid #ccc; padding: 1rem 0; }}
.pair {{ display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }}
pre {{ white-space: pre-wrap; word-wrap: break-word; background: #f6f6f6; padding: .75rem; margin: 0; }}
h2 {{ font-size: 1rem; }} h3 {{ font-size: .9rem; margin: .5rem 0; }}
.note {{ background: #fff8dc; padding: .75rem 1rem; }}
</style>
</head>
<body>
<h1>Blind review ({count} items)</h1>
<p class="note">For each item, read the prompt and the two responses, then write <b>a</b>, <b>b</b> or
<b>tie</b> in the <code>rating</code> column of <code>review.csv</code> on the row with the same id.
Responses A and B come from two models in an order drawn at random for each item: judge the
answers, not their position. When done: <code>tunesmith review import RUN_DIR review.csv</code>.</p>
{items}
</body>
</html>
"""

ITEM = """<section class="item" id="{id}">
<h2>{id}</h2>
<pre>{prompt}</pre>
<div class="pair">
<div><h3>Response A</h3><pre>{response_a}</pre></div>
<div><h3>Response B</h3><pre>{response_b}</pre></div>
</div>
</section>"""


def render_html(rows: list[dict[str, str]]) -> str:
    """A static page with every item; all text is HTML-escaped."""
    items = "\n".join(ITEM.format(**{k: html.escape(v) for k, v in row.items()}) for row in rows)
    return PAGE.format(count=len(rows), items=items)


def _display(ex: EvalExample) -> str:
    """The prompt as a rater should read it: the messages, not the chat template's markup."""
    if not ex.messages:
        return ex.prompt
    if len(ex.messages) == 1 and ex.messages[0].get("role") == "user":
        return ex.messages[0].get("content", "")
    return "\n\n".join(f"[{m.get('role', '')}] {m.get('content', '')}" for m in ex.messages)


def _safe(split: str) -> str:
    return re.sub(r"[^\w.-]", "_", split)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


@hookimpl
def register_evaluators(register: Register[Evaluator]) -> None:
    register(HumanReview)


@hookimpl
def register_commands(cli: Any) -> None:
    """``tunesmith review import``: score a filled sheet (click and rich are imported only here)."""
    import click

    @cli.group()
    def review() -> None:
        """Blind human review of base vs tuned answers (the human-review evaluator writes the sheet)."""

    @review.command("import")
    @click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
    @click.argument("ratings_csv", type=click.Path(dir_okay=False, path_type=Path))
    def review_import(run_dir: Path, ratings_csv: Path) -> None:
        """Score a filled review sheet (ratings a, b or tie): the tuned model's win/tie/loss rates."""
        from rich.console import Console
        from rich.table import Table

        from tunesmith_plugins.evaluators.review_sheet import import_ratings

        r = import_ratings(run_dir, ratings_csv)
        table = Table(title=f"Tuned vs base, {r['rated']} rated of {r['items']}", title_justify="left")
        for col in ("split", "rated", "tuned wins", "ties", "tuned losses"):
            table.add_column(col, justify="left" if col == "split" else "right")
        for split, t in [*r["by_split"].items(), *([("all", r)] if len(r["by_split"]) > 1 else [])]:
            table.add_row(
                split,
                str(t["rated"]),
                f"{t['win_rate']:.1%} ({t['tuned_wins']})",
                f"{t['tie_rate']:.1%} ({t['ties']})",
                f"{t['loss_rate']:.1%} ({t['tuned_losses']})",
            )
        console = Console(highlight=False)
        console.print(table)
        console.print(f"wrote {run_dir / REVIEW_DIR / RESULTS_FILE}")
