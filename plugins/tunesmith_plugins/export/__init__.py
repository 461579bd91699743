"""``tunesmith export`` (GGUF for llama.cpp and Ollama) and ``tunesmith push`` (the Hugging Face hub).

Both start from a finished run. An adapter is first folded into its base by
:func:`tunesmith.merged_model_dir` (the method's merge, kept as ``RUN/merged`` for the next export). gguf, torch,
transformers and huggingface_hub are imported inside the commands: listing plugins stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith import TunesmithError, hookimpl, merged_model_dir

FORMATS = ("gguf",)


@hookimpl
def register_commands(cli: Any) -> None:
    import click

    from tunesmith_plugins.export.to_gguf import QUANTS

    @cli.command("export")
    @click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--format", "fmt", type=click.Choice(FORMATS), default="gguf", show_default=True)
    @click.option(
        "--quant",
        type=click.Choice(QUANTS),
        default="f16",
        show_default=True,
        help="Weight type: f32 and f16 keep the values, q8_0 quantises (1-D tensors stay f32).",
    )
    @click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The .gguf file to write (default: RUN_DIR/gguf/<run>-<quant>.gguf); a Modelfile goes beside it.",
    )
    def export(run_dir: Path, fmt: str, quant: str, output: Path | None) -> None:
        """Export a run's model (merged with its base) as a GGUF file with an Ollama Modelfile."""
        from rich.console import Console

        from tunesmith_plugins.export.modelfile import write_modelfile
        from tunesmith_plugins.export.to_gguf import export_gguf

        try:
            import gguf  # noqa: F401
        except ImportError:
            raise TunesmithError(
                "GGUF export needs the gguf package (llama.cpp's Python library)",
                details=['pip install "tunesmith[gguf]"'],
            ) from None
        complete_run(run_dir)
        out = output or run_dir / "gguf" / f"{run_dir.name}-{quant}.gguf"
        console = Console(highlight=False)
        model_dir = merged_model_dir(run_dir, log=lambda line: console.print(f"  [dim]{line}[/]"))
        result = export_gguf(model_dir, out, quant=quant, name=run_dir.name)
        modelfile, templated = write_modelfile(out, model_dir, add_bos=result.add_bos)
        for note in result.notes:
            console.print(f"  [dim]{note}[/]")
        console.print(f"[green]wrote[/] {out} ({len(result.tensors)} tensors, {quant}) and {modelfile}")
        if not templated:
            console.print(
                "  [yellow]warning:[/] the chat template could not be written as an Ollama TEMPLATE; "
                "the Modelfile relies on the template stored in the GGUF"
            )
        console.print(f"  ollama create {run_dir.name} -f {modelfile}")

    @cli.command("push")
    @click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
    @click.argument("repo_id")
    @click.option("--merged", is_flag=True, help="Push the model merged with its base instead of final/.")
    @click.option("--private", is_flag=True, help="Create the repository as private.")
    @click.option("--token", envvar="HF_TOKEN", help="Hugging Face token (default: HF_TOKEN or the login).")
    def push(run_dir: Path, repo_id: str, merged: bool, private: bool, token: str | None) -> None:
        """Publish a run's final/ folder (or its merged model) to the Hugging Face hub (needs network)."""
        from rich.console import Console

        from tunesmith_plugins.export.hub import check_folder, push_folder

        complete_run(run_dir)
        message = f"Upload {run_dir.name} ({'merged model' if merged else 'final/'}) from tunesmith"
        console = Console(highlight=False)
        folder = run_dir / "final"
        if merged:
            folder = merged_model_dir(run_dir, log=lambda line: console.print(f"  [dim]{line}[/]"))
        check_folder(folder)
        url = push_folder(folder, repo_id, private=private, token=token, message=message)
        console.print(f"[green]pushed[/] {folder} to {repo_id}: {url}")


def complete_run(run_dir: Path) -> None:
    """Refuse anything but a complete run directory before any work."""
    try:
        status = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError):
        raise TunesmithError(f"no run directory at {run_dir}") from None
    if status != "complete":
        raise TunesmithError(f"{run_dir} is not a complete run (status: {status})")
