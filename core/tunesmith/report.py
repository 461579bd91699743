"""The human-readable report of a run: ``report.md`` with the base-vs-tuned table and a loss curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.config import Resolved
from tunesmith.rundir import write_atomic


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str, float | None, float | None]]:
    """(split, metric, base, tuned) for every metric scored, in a stable order."""
    rows = []
    base, tuned = metrics.get("base", {}), metrics.get("tuned", {})
    for split in sorted(set(base) | set(tuned)):
        names = list(dict.fromkeys([*tuned.get(split, {}), *base.get(split, {})]))
        for name in names:
            rows.append((split, name, base.get(split, {}).get(name), tuned.get(split, {}).get(name)))
    return rows


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"


def read_losses(run_dir: Path, key: str = "loss") -> list[tuple[int, float]]:
    """``(step, value)`` of ``key`` in the training log: ``loss`` (training) or ``eval_loss`` (validation)."""
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if key in entry:
            points.append((entry["step"], entry[key]))
    return points


def plot_losses(
    points: list[tuple[int, float]], path: Path, validation: list[tuple[int, float]] | None = None
) -> bool:
    if len(points) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([s for s, _ in points], [v for _, v in points], marker=".", label="training")
    if validation:
        ax.plot([s for s, _ in validation], [v for _, v in validation], marker="o", label="validation")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def overfitting_note(train: list[tuple[int, float]], validation: list[tuple[int, float]]) -> str | None:
    """A sentence when the validation loss rose clearly (5 %) after its best while training loss fell."""
    if len(validation) < 2 or len(train) < 2:
        return None
    best_step, best = min(validation, key=lambda p: p[1])
    last_step, last = validation[-1]
    train_then = [v for s, v in train if s <= best_step] or [train[0][1]]
    if last > best * 1.05 and train[-1][1] < train_then[-1]:
        return (
            f"The validation loss rose from {best:.4f} (step {best_step}) to {last:.4f} (step {last_step}) "
            "while the training loss fell: the model overfits. `training.early_stopping_patience` stops such "
            "a run and keeps the best checkpoint."
        )
    return None


def data_check_lines(run_dir: Path, shown: int = 20) -> list[str]:
    """The "Data checks" section: which checks ran before the model loaded and what each found (from
    ``data_checks.json``; nothing for a run that has none)."""
    from tunesmith.data_checks import describe

    path = run_dir / "data_checks.json"
    if not path.is_file():
        return []
    checks = json.loads(path.read_text(encoding="utf-8"))
    lines = ["", "## Data checks", ""]
    if not checks.get("checks"):
        return [*lines, "No data check ran (all turned off in the `data` section)."]
    lines += [
        f"Duplicates and contamination, checked in {checks.get('seconds', 0):.2f} s before training:",
        "",
    ]
    for line, findings in describe(checks, shown):
        lines.append(f"- {line}")
        lines += [f"  - `{finding}`" for finding in findings]
    if checks.get("dropped"):
        lines += [
            "",
            f"{len(checks['dropped'])} training example(s) dropped; all are listed in `data_checks.json`.",
        ]
    return lines


def mixed_source_lines(data: dict[str, Any]) -> list[str]:
    """Per-source counts of the splits that mix several sources (``data.train`` given as a list)."""
    lines: list[str] = []
    for split, st in data.items():
        sources = st.get("sources") or []
        if not sources:
            continue
        total = sum(p["examples"] for p in sources) or 1
        lines += [
            "",
            f"Sources mixed into {split}:",
            "",
            "| source | formatter | weight | share | examples | tokens | trained tokens |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| `{p['source']}` | {p['formatter']} | {p['weight']:g} | {100 * p['examples'] / total:.1f}% | "
            f"{p['examples']} | {p['tokens']} | {p['trained_tokens']} |"
            for p in sources
        ]
    return lines


def write_report(run_dir: Path, resolved: Resolved, metrics: dict[str, Any], samples: dict[str, Any]) -> None:
    cfg = resolved.config
    params = metrics["parameters"]
    train = metrics["train"]
    lines = [
        f"# Run `{cfg.name}`",
        "",
        f"- base model: `{cfg.model.path}`",
        f"- method: `{resolved.method.name}` · objective: `{resolved.objective.name}` · "
        f"formatter: `{resolved.formatter.name}`",
        f"- trainable parameters: {params['trainable']:,} of {params['total']:,} "
        f"({100 * params['trainable'] / max(params['total'], 1):.4f}%)",
        f"- base model memory: {params['base_memory_bytes'] / 2**20:.1f} MiB",
        f"- learning rate {resolved.training.learning_rate:g}, batch {cfg.training.batch_size} × "
        f"{cfg.training.gradient_accumulation_steps}, epochs {cfg.training.epochs:g}, seed {cfg.training.seed}",
        f"- training: {train.get('wall_seconds', 0):.1f} s, {train.get('rows', 0)} rows"
        + (f", {train['tokens_per_second']:,.0f} tokens/s" if "tokens_per_second" in train else ""),
        "",
        "## Held-out metrics",
        "",
        "| split | metric | base | tuned |",
        "|---|---|---|---|",
    ]
    cached = metrics.get("evaluation", {}).get("base_cache", {}).get("reused", [])
    reused = {(r["split"], r["evaluator"]) for r in cached}
    lines += [
        f"| {s} | {m} | {fmt(b)}{' (cached)' if (s, m.split('/')[0]) in reused else ''} | {fmt(t)} |"
        for s, m, b, t in metric_rows(metrics)
    ]
    if reused:
        lines += [
            "",
            "Base scores marked (cached) were reused from an earlier run with the same base model, "
            "evaluation data, evaluator options and generation settings (`evaluation.cache_base`).",
        ]
    if metrics.get("errors"):
        lines += ["", "## Evaluator errors", ""] + [f"- {e}" for e in metrics["errors"]]
    if metrics.get("gates"):
        lines += ["", "## Gates", "", "| gate | split | result | detail |", "|---|---|---|---|"]
        for g in metrics["gates"]:
            result = "pass" if g["passed"] else ("**FAIL**" if g.get("fail_run") else "**warn**")
            lines.append(f"| {g['evaluator']}: {g['name']} | {g['split']} | {result} | {g['detail']} |")
    if metrics.get("plugin_errors"):
        lines += ["", "## Plugin hooks that failed (disabled for the rest of the run)", ""]
        lines += [f"- {e}" for e in metrics["plugin_errors"]]
    lines += [
        "",
        "## Data",
        "",
        "| split | examples | dropped | mean tokens | max tokens | truncated |",
        "|---|---|---|---|---|---|",
    ]
    for split, st in metrics["data"].items():
        lines.append(
            f"| {split} | {st.get('count', '?')} | {st.get('dropped', 0)} | {fmt(st.get('mean_tokens'))} | "
            f"{st.get('max_tokens', '?')} | {st.get('truncated', 0)} |"
        )
    lines += mixed_source_lines(metrics["data"])
    lines += data_check_lines(run_dir)
    train, validation = read_losses(run_dir), read_losses(run_dir, "eval_loss")
    if plot_losses(train, run_dir / "loss.png", validation):
        title = "Training and validation loss" if validation else "Training loss"
        lines += ["", f"## {title}", "", f"![{title.lower()}](loss.png)"]
    if validation:
        best_step, best = min(validation, key=lambda p: p[1])
        lines += ["", f"Best validation loss {best:.4f} at step {best_step} ({len(validation)} evaluations)."]
        note = overfitting_note(train, validation)
        if note:
            lines += ["", note]
    shown = [(split, name, s) for split, per in samples.items() for name, items in per.items() for s in items]
    if shown:
        lines += ["", "## Sample predictions (tuned)", ""]
        for split, name, s in shown[:6]:
            lines += [
                f"- **{split} / {name}** {'✓' if s.get('match') else '✗'}",
                f"  - reference: `{s.get('reference')}`",
                f"  - prediction: `{s.get('prediction')}`",
            ]
    write_atomic(run_dir / "report.md", "\n".join(lines) + "\n")
