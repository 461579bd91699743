"""The ``tunesmith`` command line (Click + Rich).

Start-up stays light: this module imports click, rich and the plugin registry only. torch,
transformers, peft, trl and datasets are imported inside the commands that train or evaluate.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import typing
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tunesmith import __version__
from tunesmith.errors import TunesmithError
from tunesmith.kinds import KIND
from tunesmith.plugins import Plugins
from tunesmith.ui import Quiet

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class RichUI(Quiet):
    """Pipeline messages as Rich lines and progress bars (on stderr when stdout carries data)."""

    def __init__(self, out: Console | None = None) -> None:
        self.console = out or console

    def step(self, text: str) -> None:
        self.console.print(f"[bold cyan]▸[/] {text}")

    def note(self, text: str) -> None:
        self.console.print(f"  [dim]{text}[/]")

    def warn(self, text: str) -> None:
        self.console.print(f"  [yellow]warning:[/] {text}")

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        ) as bar:
            task = bar.add_task(description, total=total)

            def update(completed: int, total: int | None = None) -> None:
                if total:
                    bar.update(task, completed=completed, total=total)
                else:
                    bar.update(task, completed=completed)

            yield update


class TunesmithGroup(click.Group):
    """Turns user mistakes into a short message and exit code 2; bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TunesmithError as exc:
            err_console.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
            for line in exc.details:
                err_console.print(f"  {line}", markup=False, soft_wrap=True)
            sys.exit(2)


def _plugins(ctx: click.Context) -> Plugins:
    return ctx.find_root().obj


def _quiet_libraries() -> None:
    """Library deprecation chatter is not the user's business; real warnings still show."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*Adapter default was active.*")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging  # the commands calling this load it anyway

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@click.group(cls=TunesmithGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tunesmith")
def cli() -> None:
    """tunesmith: fine-tune large language models with plugins.

    \b
    Start here:
      tunesmith init               write a commented starter config
      tunesmith plugins list       what methods, objectives, evaluators... are installed
      tunesmith data check CONFIG  validate the data before spending compute
      tunesmith run CONFIG         train, evaluate, write a run directory
    """


# ------------------------------------------------------------------------------------------ plugins


@cli.group()
def plugins() -> None:
    """List installed plugins and the components they provide."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins_list(ctx: click.Context, as_json: bool) -> None:
    """Plugins, their components and their status (without importing torch)."""
    registry = _plugins(ctx)
    if as_json:
        out = {
            "plugins": [
                {
                    "name": i.name,
                    "distribution": i.distribution,
                    "version": i.version,
                    "module": i.module,
                    "status": i.status,
                    "stage": i.stage,
                    "error": i.error,
                    "problems": i.problems,
                    "components": [{"kind": k, "name": n} for k, n in i.components],
                }
                for i in registry.infos
            ],
            "components": [
                {
                    "kind": kind,
                    "name": name,
                    "plugin": registry.owner(kind, name).name,
                    "distribution": registry.owner(kind, name).distribution,
                    "version": registry.owner(kind, name).version,
                    "status": registry.owner(kind, name).status,
                    "summary": cls.summary(),
                }
                for kind, comps in registry.components.items()
                for name, cls in sorted(comps.items())
            ],
            "warnings": registry.warnings,
        }
        click.echo(json.dumps(out, indent=2))
        return
    table = Table(title="Components", title_justify="left")
    for col in ("kind", "name", "plugin", "distribution", "summary"):
        table.add_column(col, no_wrap=col != "summary")
    for kind, comps in registry.components.items():
        for name, cls in sorted(comps.items()):
            owner = registry.owner(kind, name)
            table.add_row(
                KIND[kind].label,
                name,
                owner.name,
                f"{owner.distribution} {owner.version}",
                Text(cls.summary()),
            )
    console.print(table)
    for line in registry.warnings:
        RichUI(console).warn(line)
    odd = [i for i in registry.infos if i.status != "ok" or i.problems]
    if odd:
        problems = Table(title="Plugins needing attention", title_justify="left")
        for col in ("plugin", "distribution", "status", "detail"):
            problems.add_column(col)
        for i in odd:
            detail = "; ".join(([f"{i.stage}: {i.error}"] if i.error else []) + i.problems)
            problems.add_row(i.name, f"{i.distribution} {i.version}", i.status, detail or "")
        console.print(problems)


@plugins.command("show")
@click.argument("name")
@click.pass_context
def plugins_show(ctx: click.Context, name: str) -> None:
    """A component's description and its options (defaults and help)."""
    registry = _plugins(ctx)
    found = registry.find(name)
    if not found:
        everything = sorted({n for comps in registry.components.values() for n in comps})
        import difflib

        match = difflib.get_close_matches(name, everything, n=1)
        hint = f" (did you mean '{match[0]}'?)" if match else ""
        raise TunesmithError(
            f"no component named '{name}'{hint}", details=[f"installed: {', '.join(everything)}"]
        )
    for cls in found:
        owner = registry.owner(cls.kind, cls.name)
        console.print(
            f"[bold]{cls.name}[/] — {KIND[cls.kind].label} from {owner.name} "
            f"({owner.distribution} {owner.version})"
        )
        console.print(Text(cls.description()))
        console.print()
        console.print(options_table(cls.Config, f"{cls.kind} options"))


def options_table(config_cls: type, title: str) -> Table:
    from tunesmith.coerce import describe_type
    from tunesmith.options import describe_range

    table = Table(title=title, title_justify="left")
    for col in ("option", "type", "default", "help"):
        table.add_column(col)
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        kind = f.metadata.get("component")
        if kind:
            label = KIND[kind].label
            kind_type = f"list of {label}s" if f.metadata.get("many") else label
        bounds = describe_range(f.metadata)
        table.add_row(
            f.name,
            kind_type if kind else describe_type(hints[f.name]) + (f", {bounds}" if bounds else ""),
            Text(_default(f)),
            Text(f.metadata.get("help", "")),
        )
    if not dataclasses.fields(config_cls):
        table.add_row("(none)", "", "", "")
    return table


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "(required)"


# --------------------------------------------------------------------------------------------- init


@cli.command()
@click.argument("path", default="tunesmith.yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing file.")
def init(path: Path, force: bool) -> None:
    """Write a commented starter config to PATH (default: tunesmith.yaml)."""
    from tunesmith.starter import STARTER_CONFIG

    if path.exists() and not force:
        raise TunesmithError(f"{path} already exists (use --force to replace it)")
    path.write_text(STARTER_CONFIG, encoding="utf-8")
    console.print(f"wrote {path}; next: [bold]tunesmith data check {path}[/]")


# --------------------------------------------------------------------------------------------- data


@cli.group()
def data() -> None:
    """Inspect and validate training data."""


def _load(ctx: click.Context, config: Path | None, overrides: tuple[str, ...], ui: Any = None) -> Any:
    """The resolved config; first, one warning line per broken plugin or mistyped plugin variable."""
    from tunesmith.config import load_config

    registry = _plugins(ctx)
    for line in registry.attention():
        (ui or RichUI(err_console)).warn(line)
    return load_config(config, list(overrides), registry)


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set training.learning_rate=1e-4 (repeatable).",
)


@data.command("check")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout (progress on stderr).")
@click.option("--show", default=1, show_default=True, help="Training examples to show with their masking.")
@click.pass_context
def data_check(
    ctx: click.Context, config: Path, overrides: tuple[str, ...], as_json: bool, show: int
) -> None:
    """Validate every split of CONFIG's data: counts, token lengths, rendered examples with what is trained."""
    _quiet_libraries()
    from tunesmith.data import trained_segments
    from tunesmith.data_checks import describe
    from tunesmith.prepare import prepare

    ui = RichUI(err_console if as_json else console)
    resolved = _load(ctx, config, overrides, ui)
    prepared, tokenizer = prepare(resolved, ui, _plugins(ctx))
    shown = [(t.origin, trained_segments(t, tokenizer)) for t in prepared.tokenized["train"][: max(show, 0)]]
    if as_json:
        report = {
            "splits": {
                split: {
                    "source": resolved.sources[split].describe(),
                    "examples": len(prepared.examples[split]),
                    "dropped": prepared.dropped.get(split, 0),
                    **{("sequences" if k == "count" else k): v for k, v in stats.items()},
                }
                for split, stats in prepared.stats.items()
            },
            "examples": [
                {"origin": origin, "segments": [{"text": t, "trained": bool(on)} for t, on in segments]}
                for origin, segments in shown
            ],
            "data_checks": prepared.checks.to_dict() if prepared.checks else None,
        }
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    table = Table(title="Data", title_justify="left")
    columns = ("split", "source", "examples", "sequences", "dropped", "min", "mean", "p95", "max")
    for col in (*columns, "trained tokens", "truncated"):
        table.add_column(col, justify="right" if col not in ("split", "source") else "left")
    for split, stats in prepared.stats.items():
        table.add_row(
            split,
            resolved.sources[split].describe(),
            str(len(prepared.examples[split])),
            str(stats["count"]),
            str(prepared.dropped.get(split, 0)),
            str(stats["min_tokens"]),
            f"{stats['mean_tokens']:.1f}",
            str(stats["p95_tokens"]),
            str(stats["max_tokens"]),
            str(stats["trained_tokens"]),
            str(stats["truncated"]),
        )
    console.print(table)
    checks = prepared.checks.to_dict() if prepared.checks else {}
    console.print(f"Data checks ({checks.get('seconds', 0):.2f} s):")
    for line, findings in describe(checks) or [("none ran", [])]:
        console.print(Text(f"  {line}"), soft_wrap=True)
        for finding in findings:
            console.print(Text(f"    {finding}"), soft_wrap=True)
    for origin, segments in shown:
        text = Text()
        for piece, trained in segments:
            text.append(piece, style="bold green" if trained else "dim")
        console.print(f"Training example ({origin}); [bold green]trained tokens[/] vs [dim]context[/]:")
        console.print(text)
    console.print("[green]data OK[/]")


# ---------------------------------------------------------------------------------------------- run


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@set_option
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    help="Continue RUN_DIR from its last complete checkpoint (refused if inputs changed).",
)
@click.pass_context
def run(
    ctx: click.Context, config: Path | None, overrides: tuple[str, ...], overwrite: bool, resume: Path | None
) -> None:
    """Train and evaluate as CONFIG says; writes a run directory."""
    _quiet_libraries()
    from tunesmith.pipeline import run as run_pipeline

    if config is None and resume is None:
        raise TunesmithError("give a CONFIG file, or --resume RUN_DIR")
    if resume is not None and config is None:
        config = resume / "config.yaml"
        if not config.is_file():
            raise TunesmithError(f"no run to resume at {resume}")
    ui = RichUI()
    resolved = _load(ctx, config, overrides, ui)
    result = run_pipeline(resolved, _plugins(ctx), overwrite=overwrite, resume=resume, ui=ui)
    print_metrics(result.metrics)
    console.print(f"[green]run complete:[/] {result.run_dir} (report: {result.run_dir / 'report.md'})")
    failed = [g for g in result.metrics.get("gates", []) if not g["passed"]]
    for g in failed:
        level = "[red]gate failed:[/]" if g.get("fail_run") else "[yellow]gate warning:[/]"
        console.print(f"{level} {g['evaluator']}: {g['name']} ({g['split']}): {g['detail']}")
    if any(g.get("fail_run") for g in failed):
        ctx.exit(3)  # the run is complete; a gate says the model should not ship


def print_metrics(metrics: dict[str, Any]) -> None:
    from tunesmith.report import fmt, metric_rows

    table = Table(title="Held-out metrics", title_justify="left")
    for col in ("split", "metric", "base", "tuned"):
        table.add_column(col, justify="left" if col in ("split", "metric") else "right")
    for split, name, base, tuned in metric_rows(metrics):
        table.add_row(split, name, fmt(base), fmt(tuned))
    console.print(table)


# --------------------------------------------------------------------------------------------- eval


@cli.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--evaluator", "evaluators", multiple=True, help="Evaluator name (repeatable); default: the run's."
)
@click.option("--split", "splits", multiple=True, help="Split to score (repeatable); default: the run's.")
@click.option("--no-base", is_flag=True, help="Skip scoring the base model.")
@click.pass_context
def eval_command(
    ctx: click.Context, run_dir: Path, evaluators: tuple[str, ...], splits: tuple[str, ...], no_base: bool
) -> None:
    """Re-run evaluators on a finished run (base model and tuned model)."""
    _quiet_libraries()
    from tunesmith.evaluate_run import evaluate_run

    metrics = evaluate_run(
        run_dir,
        _plugins(ctx),
        evaluators=list(evaluators),
        splits=list(splits),
        compare_base=not no_base,
        ui=RichUI(),
    )
    print_metrics(metrics)


# ------------------------------------------------------------------------------------------ compare


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def compare(run_dirs: tuple[Path, ...], as_json: bool) -> None:
    """Held-out metrics of finished runs side by side, with the base model's as a first row."""
    from tunesmith.compare import compare_runs
    from tunesmith.report import fmt

    result = compare_runs(list(run_dirs))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    table = Table(title="Held-out metrics (tuned model per run)", title_justify="left")
    table.add_column("run")
    for column in result.columns:  # split on its own header line, evaluator/metric below it
        table.add_column(column.replace("/", "\n", 1), justify="right", overflow="fold")
    for row in result.rows:
        name = Text(row["name"], style="dim" if row["name"] == "base" else "")
        table.add_row(name, *(fmt(row["metrics"].get(c)) for c in result.columns))
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")


# ------------------------------------------------------------------------------ merge, generate, chat


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the merged model.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.pass_context
def merge(ctx: click.Context, run_dir: Path, output: Path, overwrite: bool) -> None:
    """Fold a run's trained weights into its base model (a plain transformers model in OUTPUT)."""
    _quiet_libraries()
    from tunesmith.runs import merge_run

    out = merge_run(run_dir, output, _plugins(ctx), overwrite=overwrite)
    console.print(
        f"[green]merged model written to[/] {out} (loads with AutoModelForCausalLM.from_pretrained)"
    )


adapter_option = click.option(
    "--adapter", help="With several runs: the run (directory name) to use first; 'base' for the base model."
)


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("-p", "--prompt", "prompts", multiple=True, required=True, help="A user message (repeatable).")
@click.option("--system", help="A system message.")
@click.option("--max-new-tokens", default=128, show_default=True)
@adapter_option
@click.pass_context
def generate(
    ctx: click.Context,
    run_dirs: tuple[Path, ...],
    prompts: tuple[str, ...],
    system: str | None,
    max_new_tokens: int,
    adapter: str | None,
) -> None:
    """Answer prompts with a tuned model, rendered with the run's chat template."""
    _quiet_libraries()
    from tunesmith.inference import load_session

    session = load_session(list(run_dirs), _plugins(ctx), active=adapter)
    for prompt, answer in zip(
        prompts, session.generate(list(prompts), max_new_tokens=max_new_tokens, system=system), strict=True
    ):
        if len(prompts) > 1:
            console.print(f"[dim]> {prompt}[/]", markup=True)
        click.echo(answer)


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--system", help="A system message.")
@click.option("--max-new-tokens", default=256, show_default=True)
@adapter_option
@click.pass_context
def chat(
    ctx: click.Context,
    run_dirs: tuple[Path, ...],
    system: str | None,
    max_new_tokens: int,
    adapter: str | None,
) -> None:
    """Talk to a tuned model. Commands: /adapter NAME, /adapters, /reset, /exit."""
    _quiet_libraries()
    from tunesmith.inference import load_session

    session = load_session(list(run_dirs), _plugins(ctx), active=adapter)
    console.print(f"[dim]adapters: {', '.join(session.names)} (using {session.active}); /exit to quit[/]")
    while True:
        try:
            message = click.prompt(f"{session.active}>", prompt_suffix=" ", default="", show_default=False)
        except (EOFError, click.Abort):
            break
        message = message.strip()
        if not message:
            continue
        if message in ("/exit", "/quit"):
            break
        if message == "/reset":
            session.history.clear()
            continue
        if message == "/adapters":
            console.print(", ".join(session.names))
            continue
        if message.startswith("/adapter"):
            try:
                session.use(message.split(maxsplit=1)[1].strip())
                session.history.clear()
            except (IndexError, TunesmithError) as exc:
                console.print(f"[red]{exc}[/]" if isinstance(exc, TunesmithError) else "usage: /adapter NAME")
            continue
        click.echo(session.reply(message, max_new_tokens=max_new_tokens, system=system))


# ---------------------------------------------------------------------------------------- entry


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: a fresh plugin registry per invocation."""
    registry = Plugins()
    group = copy.copy(cli)  # plugin commands go on this invocation's copy, never on the module's group
    group.commands = dict(cli.commands)
    registry.add_commands(group)
    group.main(args=argv, obj=registry, prog_name="tunesmith")


if __name__ == "__main__":  # pragma: no cover
    main()
