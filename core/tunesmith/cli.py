"""The ``tunesmith`` command line (Click + Rich).

Start-up stays at the cost of importing click: Rich is imported when something is printed with it,
the plugin listing comes from a cache (:mod:`tunesmith.invocation`), and the plugin registry, torch,
transformers, peft, trl and datasets are imported inside the commands that need them.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import typing
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tunesmith import __version__
from tunesmith.errors import TunesmithError
from tunesmith.invocation import Registry, asks_for_help
from tunesmith.ui import Quiet

if TYPE_CHECKING:  # pragma: no cover - typing only
    from rich.console import Console

    from tunesmith.plugins import Plugins
    from tunesmith.registry_cache import Listing


class _LazyConsole:
    """A Rich console created on first use: printing nothing (``--help``) imports no Rich."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


def Table(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - rich.table.Table, imported on first use
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)


def Text(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - rich.text.Text, imported on first use
    from rich.text import Text as RichText

    return RichText(*args, **kwargs)


console: Any = _LazyConsole(highlight=False)
err_console: Any = _LazyConsole(stderr=True, highlight=False)


class RichUI(Quiet):
    """Pipeline messages as Rich lines and progress bars (on stderr when stdout carries data)."""

    def __init__(self, out: Any = None) -> None:
        out = out or console
        self.console = out.get() if isinstance(out, _LazyConsole) else out

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

    # Plugin commands: listed and their help shown from the cached listing; anything else runs the real one.

    def list_commands(self, ctx: click.Context) -> list[str]:
        registry = ctx.obj
        if isinstance(registry, Registry) and not registry.built:
            return sorted({*self.commands, *(c["name"] for c in registry.listing().commands)})
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        registry = ctx.obj
        if cmd_name not in self.commands and isinstance(registry, Registry) and not registry.built:
            return registry.cached_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        registry = ctx.obj
        if args and args[0] not in self.commands and isinstance(registry, Registry) and not registry.built:
            stand_in = registry.cached_command(args[0])
            if stand_in is None or not asks_for_help(stand_in, args[1:]):
                registry.plugins()  # it runs: the real registry, whose plugins add their real commands
        return super().resolve_command(ctx, args)


def _plugins(ctx: click.Context) -> Plugins:
    """The real plugin registry (built on first use when the CLI runs from :func:`main`)."""
    registry = ctx.find_root().obj
    return registry.plugins() if isinstance(registry, Registry) else registry


def _listing(ctx: click.Context) -> Listing:
    """What ``plugins list`` and ``plugins show`` print: from the cache unless the registry is built."""
    registry = ctx.find_root().obj
    if isinstance(registry, Registry):
        return registry.listing()
    from tunesmith.registry_cache import Listing

    return Listing.of(registry)


def _quiet_libraries() -> None:
    """Library deprecation chatter is not the user's business; real warnings still show."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*Adapter default was active.*")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes warns at import on CPUs with AVX512-BF16 that an optional kernel download is missing.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
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
    listing = _listing(ctx)
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
                    "commands": i.commands,
                }
                for i in listing.plugins
            ],
            "components": [
                {
                    "kind": c.kind,
                    "name": c.name,
                    "plugin": listing.owner(c).name,
                    "distribution": listing.owner(c).distribution,
                    "version": listing.owner(c).version,
                    "status": listing.owner(c).status,
                    "summary": c.summary,
                }
                for c in listing.components
            ],
            "warnings": listing.warnings,
        }
        click.echo(json.dumps(out, indent=2))
        return
    _print_page(ctx, "plugins list", lambda: _print_plugins(listing))


def _print_plugins(listing: Listing) -> None:
    table = Table(title="Components", title_justify="left")
    for col in ("kind", "name", "plugin", "distribution", "summary"):
        table.add_column(col, no_wrap=col != "summary")
    for c in listing.components:
        owner = listing.owner(c)
        table.add_row(c.label, c.name, owner.name, f"{owner.distribution} {owner.version}", Text(c.summary))
    console.print(table)
    adding = [i for i in listing.plugins if i.commands]
    if adding:
        commands = Table(title="Commands added by plugins", title_justify="left")
        for col in ("command", "plugin", "distribution"):
            commands.add_column(col, no_wrap=True)
        for i in adding:
            for name in i.commands:
                commands.add_row(f"tunesmith {name}", i.name, f"{i.distribution} {i.version}")
        console.print(commands)
    for line in listing.warnings:
        RichUI(console).warn(line)
    odd = [i for i in listing.plugins if i.status != "ok" or i.problems]
    if odd:
        problems = Table(title="Plugins needing attention", title_justify="left")
        for col in ("plugin", "distribution", "status", "detail"):
            problems.add_column(col)
        for i in odd:
            detail = "; ".join(([f"{i.stage}: {i.error}"] if i.error else []) + i.problems)
            problems.add_row(i.name, f"{i.distribution} {i.version}", i.status, detail or "")
        console.print(problems)


def _print_page(ctx: click.Context, command: str, render: typing.Callable[[], None]) -> None:
    """Print a listing page; from :func:`main`, a page printed before on this terminal is reprinted
    from the registry cache (no Rich import, no rendering)."""
    registry = ctx.find_root().obj
    if isinstance(registry, Registry):
        registry.print_page(command, render, console.get)
    else:
        render()


@plugins.command("show")
@click.argument("name")
@click.pass_context
def plugins_show(ctx: click.Context, name: str) -> None:
    """A component's description and its options (defaults and help)."""
    listing = _listing(ctx)
    found = listing.find(name)
    if not found:
        everything = sorted({c.name for c in listing.components})
        import difflib

        match = difflib.get_close_matches(name, everything, n=1)
        hint = f" (did you mean '{match[0]}'?)" if match else ""
        raise TunesmithError(
            f"no component named '{name}'{hint}", details=[f"installed: {', '.join(everything)}"]
        )

    def render() -> None:
        for c in found:
            owner = listing.owner(c)
            console.print(
                f"[bold]{c.name}[/] — {c.label} from {owner.name} ({owner.distribution} {owner.version})"
            )
            console.print(Text(c.description))
            console.print()
            console.print(options_table(c.options, f"{c.kind} options"))

    _print_page(ctx, f"plugins show {name}", render)


def options_table(rows: list[list[str]], title: str) -> Any:
    """A component's options (rows from :func:`tunesmith.registry_cache.option_rows`) as a Rich table."""
    table = Table(title=title, title_justify="left")
    for col in ("option", "type", "default", "help"):
        table.add_column(col)
    for option, described, default, help_text in rows:
        table.add_row(option, described, Text(default), Text(help_text))
    if not rows:
        table.add_row("(none)", "", "", "")
    return table


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
            "cache": prepared.cache,
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
    _print_mixed_sources(prepared.stats)
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


def _print_mixed_sources(stats: dict[str, Any]) -> None:
    """Per-source counts of the splits that mix several sources."""
    mixed = {split: s["sources"] for split, s in stats.items() if s.get("sources")}
    if not mixed:
        return
    table = Table(title="Mixed sources", title_justify="left")
    names = ("split", "source", "formatter")
    for col in (*names, "weight", "share", "examples", "sequences", "tokens", "trained"):
        table.add_column(col, justify="left" if col in names else "right")
    for split, sources in mixed.items():
        total = sum(p["examples"] for p in sources) or 1
        for p in sources:
            table.add_row(
                split,
                p["source"],
                p["formatter"],
                f"{p['weight']:g}",
                f"{100 * p['examples'] / total:.1f}%",
                str(p["examples"]),
                str(p["sequences"]),
                str(p["tokens"]),
                str(p["trained_tokens"]),
            )
    console.print(table)


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
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes on this machine, one per GPU (on CPU they share the cores); starts torchrun for you.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what would be launched (command, distributed settings, DeepSpeed JSON) as JSON; train nothing.",
)
@click.pass_context
def run(
    ctx: click.Context,
    config: Path | None,
    overrides: tuple[str, ...],
    overwrite: bool,
    resume: Path | None,
    nproc: int,
    dry_run: bool,
) -> None:
    """Train and evaluate as CONFIG says; writes a run directory.

    \b
    On several devices (the main process alone prints and writes the run directory):
      tunesmith run CONFIG --nproc 4                      4 GPUs of this machine
      torchrun --nproc-per-node 4 -m tunesmith.cli run CONFIG      the same, by hand
      torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
               --rdzv-endpoint HOST:29500 -m tunesmith.cli run CONFIG     on each of 2 machines
      accelerate launch --num_processes 4 -m tunesmith.cli run CONFIG
    DDP by default; FSDP or DeepSpeed with training.distributed.strategy. See docs/distributed.md.
    """
    import logging

    from tunesmith.distributed import Ranks

    args = [str(config)] if config is not None else []
    args += [f"--set={o}" for o in overrides]
    args += ["--overwrite"] * overwrite + ([f"--resume={resume}"] if resume is not None else [])
    if dry_run:
        from tunesmith.launch import dry_run as describe_launch

        _quiet_libraries()
        loaded = _load(ctx, config or (resume / "config.yaml" if resume else None), overrides)
        click.echo(json.dumps(describe_launch(nproc, ["run", *args], loaded, _plugins(ctx)), indent=2))
        return
    if nproc > 1 and "LOCAL_RANK" not in os.environ:  # not yet launched: become the launcher
        from tunesmith.launch import launch

        ctx.exit(launch(nproc, ["run", *args]))
    if Ranks.from_env().is_main:
        _run(ctx, config, overrides, overwrite, resume)
        return
    # Another process of a distributed run: it trains and evaluates its share silently; the main
    # process reports, errors included (this one exits 2 like it, without printing them again).
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)  # library warnings: the main process shows them once
    try:
        _run(ctx, config, overrides, overwrite, resume, ui=Quiet())
    except TunesmithError:
        sys.exit(2)


def _run(
    ctx: click.Context,
    config: Path | None,
    overrides: tuple[str, ...],
    overwrite: bool,
    resume: Path | None,
    ui: Quiet | None = None,
) -> None:
    _quiet_libraries()
    from tunesmith.pipeline import run as run_pipeline

    if config is None and resume is None:
        raise TunesmithError("give a CONFIG file, or --resume RUN_DIR")
    if resume is not None and config is None:
        config = resume / "config.yaml"
        if not config.is_file():
            raise TunesmithError(f"no run to resume at {resume}")
    main = ui is None
    ui = ui or RichUI()
    resolved = _load(ctx, config, overrides, ui)
    result = run_pipeline(resolved, _plugins(ctx), overwrite=overwrite, resume=resume, ui=ui)
    if not main:
        return
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


# -------------------------------------------------------------------------------------------- cache


@cli.group()
def cache() -> None:
    """What tunesmith keeps under $TUNESMITH_CACHE (default ~/.cache/tunesmith), and clearing it."""


@cache.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def cache_info(as_json: bool) -> None:
    """Entries and sizes per kind (prepared data, ...), and the total."""
    import dataclasses
    import json

    from tunesmith import cache as store

    usage = store.usage()
    if as_json:
        click.echo(json.dumps({"root": str(store.root()), "kinds": [dataclasses.asdict(u) for u in usage]}))
        return
    table = Table(title=f"Cache: {store.root()}", title_justify="left")
    for col in ("kind", "entries", "size", "incomplete"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for u in usage:
        table.add_row(u.kind, str(u.entries), store.human(u.bytes), str(u.incomplete))
    table.add_row("total", str(sum(u.entries for u in usage)), store.human(sum(u.bytes for u in usage)), "")
    console.print(table)


@cache.command("clear")
@click.option("--data", "what", flag_value="data", default=True, help="Prepared data only (the default).")
@click.option("--all", "what", flag_value="all", help="Everything under the cache root.")
def cache_clear(what: str) -> None:
    """Delete cached entries; they are rebuilt when next needed."""
    from tunesmith import cache as store

    freed = store.clear(None if what == "all" else [what])
    what = "everything" if what == "all" else what
    console.print(f"cleared {what} under {store.root()}: {store.human(freed)} freed")


# ---------------------------------------------------------------------------------------- entry


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: a fresh plugin registry per invocation, built as far as the command
    needs (listings and help come from the cached listing)."""
    group = copy.copy(cli)  # plugin commands go on this invocation's copy, never on the module's group
    group.commands = dict(cli.commands)
    group.main(args=argv, obj=Registry(group), prog_name="tunesmith")


if __name__ == "__main__":  # pragma: no cover
    main()
