"""The run, top to bottom: data → tokenizer → run directory → model → method → objective → evaluation.

Everything that can be wrong with the user's input (config, data, tokenizer) is checked before the run
directory is created or a model is loaded, so a mistake costs seconds and leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.components import Example, RecordProblem
from tunesmith.config import Resolved
from tunesmith.errors import TunesmithError
from tunesmith.plugins import Plugins
from tunesmith.rundir import RunDir, write_json
from tunesmith.ui import Quiet

MAX_PROBLEMS_SHOWN = 50


# ------------------------------------------------------------------------------------------- data


@dataclass
class PreparedData:
    """Validated examples and their tokenization, per split."""

    examples: dict[str, list[Example]]
    tokenized: dict[str, list[Any]] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    problems: list[RecordProblem] = field(default_factory=list)


def check_problems(resolved: Resolved, prepared: PreparedData) -> None:
    """Raise one error listing every bad record, unless data.on_invalid is drop (then they are counted)."""
    problems = prepared.problems
    if problems and resolved.config.data.on_invalid != "drop":
        shown = [str(p) for p in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            shown.append(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
        shown.append("fix the records, or set data.on_invalid: drop to skip them (they are counted)")
        raise TunesmithError(f"{len(problems)} invalid record(s) in the data:", details=shown)
    if not prepared.examples.get("train") or (prepared.tokenized and not prepared.tokenized.get("train")):
        raise TunesmithError("the training split has no usable examples")


def read_data(resolved: Resolved) -> PreparedData:
    """Read and format every split, collecting (not raising) bad records so all are reported at once."""
    from tunesmith.data import read_split

    prepared = PreparedData(examples={})
    for split, source in resolved.sources.items():
        examples, bad = read_split(source, resolved.formatter)
        prepared.examples[split] = examples
        prepared.dropped[split] = len(bad)
        prepared.problems.extend(bad)
    if prepared.examples.get("train"):
        _check_kinds(resolved, prepared.examples["train"])
    return prepared


def _check_kinds(resolved: Resolved, examples: list[Example]) -> None:
    """The formatter's examples must be what the objective trains on (e.g. DPO needs preference pairs)."""
    wanted = resolved.objective.example_kinds
    found = sorted({ex.kind for ex in examples})
    wrong = [k for k in found if k not in wanted]
    if wrong:
        raise TunesmithError(
            f"objective '{resolved.objective.name}' trains on {' or '.join(wanted)} examples, but formatter "
            f"'{resolved.formatter.name}' produced {', '.join(wrong)} examples",
            details=["choose a formatter that produces the right kind (see: tunesmith plugins list)"],
        )


def tokenize_data(resolved: Resolved, tokenizer: Any, prepared: PreparedData) -> PreparedData:
    """Tokenize and mask every split; over-long records are problems unless data.truncate is set."""
    from tunesmith.data import tokenize_split

    d = resolved.config.data
    chat = chat_format(resolved, tokenizer)
    for split, examples in prepared.examples.items():
        tokenized, bad, stats = tokenize_split(
            examples,
            tokenizer,
            max_length=d.max_length,
            train_on_prompt=d.train_on_prompt,
            truncate=d.truncate,
            chat=chat,
        )
        prepared.tokenized[split] = tokenized
        prepared.stats[split] = dataclasses.asdict(stats)
        prepared.dropped[split] = prepared.dropped.get(split, 0) + len(bad)
        prepared.problems.extend(bad)
    return prepared


def chat_format(resolved: Resolved, tokenizer: Any) -> Any:
    """How this run renders chats: the tokenizer's template under the config's ``template`` policy."""
    from tunesmith.chat import ChatFormat, ChatPolicy

    return ChatFormat(tokenizer, ChatPolicy.from_config(resolved.config.template))


def training_rows(resolved: Resolved, tokenized: list[Any]) -> list[dict[str, Any]]:
    from tunesmith.data import pack

    d = resolved.config.data
    if d.packing:
        return pack(tokenized, d.max_length)
    return [{"input_ids": t.input_ids, "labels": t.labels} for t in tokenized]


# ------------------------------------------------------------------------------------- evaluation


def evaluation_splits(resolved: Resolved, prepared: PreparedData) -> list[str]:
    wanted = [s for s in resolved.config.evaluation.splits if s in prepared.examples and s != "train"]
    if not wanted and "validation" in prepared.examples:
        wanted = ["validation"]
    return wanted


def evaluate(
    model: Any,
    tokenizer: Any,
    resolved: Resolved,
    prepared: PreparedData,
    label: str,
    ui: Any,
    output_dir: Path | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, Any], list[str]]:
    """Score ``model`` with every evaluator on every evaluation split.

    Returns (metrics per split, samples per split, errors). An evaluator that raises is reported and
    skipped: a broken third-party metric must not throw away a finished training run.
    """
    from tunesmith.evaluation import run_evaluators, to_eval_examples

    e = resolved.config.evaluation
    chat = chat_format(resolved, tokenizer)
    stop = chat.stop_token_ids(model)
    metrics: dict[str, dict[str, float]] = {}
    samples: dict[str, Any] = {}
    errors: list[str] = []
    for split in evaluation_splits(resolved, prepared):
        examples = prepared.examples[split][: e.max_examples or None]
        eval_examples = to_eval_examples(examples, tokenizer, chat)
        metrics[split], samples[split] = {}, {}
        for evaluator in resolved.evaluators:
            with ui.progress(f"{label}: {evaluator.name} on {split}", None) as update:
                done = [0]

                def on_batch(n: int, done: list[int] = done, update: Any = update) -> None:
                    done[0] += n
                    update(done[0])

                try:
                    result = run_evaluators(
                        model,
                        tokenizer,
                        [evaluator],
                        eval_examples,
                        split=split,
                        label=label,
                        batch_size=e.batch_size,
                        max_new_tokens=e.max_new_tokens,
                        output_dir=output_dir,
                        on_batch=on_batch,
                        stop_token_ids=stop,
                        final_answer=chat.final_answer if e.strip_reasoning else None,
                    )
                except Exception as exc:  # noqa: BLE001 - see docstring
                    errors.append(
                        f"evaluator '{evaluator.name}' failed on {split} ({label}): {type(exc).__name__}: {exc}"
                    )
                    ui.warn(errors[-1])
                    continue
            metrics[split].update(result.metrics)
            samples[split].update(result.samples)
    return metrics, samples, errors


# ------------------------------------------------------------------------------------------- run


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


def prepare(
    resolved: Resolved, ui: Any, plugins: Plugins | None = None
) -> tuple[PreparedData, Any, str, list[str]]:
    """Data and tokenizer, validated: everything a run or ``data check`` needs before any model loads."""
    from tunesmith.models import load_tokenizer, model_path

    ui.step("Reading and validating data")
    prepared = read_data(resolved)
    ui.step("Loading tokenizer")
    path = model_path(resolved.config.model, log=ui.note, plugins=plugins)
    tokenizer, notes = load_tokenizer(resolved.config.model, path, resolved.config.template.chat_template)
    for note in notes:
        ui.warn(note)
    prepared = tokenize_data(resolved, tokenizer, prepared)
    check_problems(resolved, prepared)
    for split, n in prepared.dropped.items():
        if n:
            ui.warn(f"{split}: dropped {n} invalid record(s) (data.on_invalid: drop)")
    return prepared, tokenizer, path, notes


def run(
    resolved: Resolved,
    plugins: Plugins,
    *,
    overwrite: bool = False,
    resume: Path | None = None,
    ui: Any = None,
) -> RunResult:
    """Run one fine-tuning job described by ``resolved``; returns where it was written and its metrics."""
    from tunesmith.manifest import build_manifest, hash_examples, hash_tokenizer

    ui = ui or Quiet()
    cfg = resolved.config
    for warning in resolved.warnings:
        ui.warn(warning)
    prepared, tokenizer, path, _ = prepare(resolved, ui, plugins)
    manifest = build_manifest(
        seed=cfg.training.seed,
        data_hashes={split: hash_examples(ex) for split, ex in prepared.examples.items()},
        tokenizer_hash=hash_tokenizer(tokenizer),
        model=cfg.model.path,
    )
    # Whether training chats were rendered with thinking on: generate and chat prompt the same way.
    chat = chat_format(resolved, tokenizer)
    manifest["thinking"] = any(
        chat.thinking_for(chat.prepare(ex.messages)) for ex in prepared.examples["train"] if ex.messages
    )
    config_dict = resolved.to_dict()
    if resume is not None:
        run_dir, resume_from = _check_resume(Path(resume), config_dict, manifest)
    else:
        run_dir, resume_from = RunDir.create(cfg.run_dir, overwrite=overwrite), None
        run_dir.write_config(config_dict)
        write_json(run_dir.path / "manifest.json", manifest)
    try:
        metrics = _train_and_evaluate(resolved, plugins, prepared, tokenizer, path, run_dir, resume_from, ui)
    except BaseException as exc:
        run_dir.set_status("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    plugins.call("on_run_end", run_dir=str(run_dir.path), metrics=metrics)
    return RunResult(run_dir.path, metrics)


def _check_resume(path: Path, config: dict[str, Any], manifest: dict[str, Any]) -> tuple[RunDir, str]:
    """Refuse to resume when config, data or tokenizer changed; otherwise the last whole checkpoint."""
    from tunesmith.training import last_complete_checkpoint

    run = RunDir(path)
    if run.status == "missing":
        raise TunesmithError(f"no run to resume at {path}")
    if run.status == "complete":
        raise TunesmithError(f"{path} is already complete; nothing to resume")
    differences = _diff(run.config(), config, "config")
    old = run.manifest()
    for split in sorted(set(old["data"]) | set(manifest["data"])):
        if old["data"].get(split) != manifest["data"].get(split):
            differences.append(
                f"data split '{split}' changed (hash {str(old['data'].get(split))[:12]} → "
                f"{str(manifest['data'].get(split))[:12]})"
            )
    if old["tokenizer"] != manifest["tokenizer"]:
        differences.append("the tokenizer changed")
    if differences:
        raise TunesmithError(f"cannot resume {path}: its inputs changed", details=differences)
    checkpoint = last_complete_checkpoint(path)
    if checkpoint is None:
        raise TunesmithError(f"cannot resume {path}: it has no complete checkpoint")
    run.set_status("running", resumed_from=checkpoint.name)
    return run, str(checkpoint)


def _diff(old: Any, new: Any, where: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{where}.{key}" if where != "config" else str(key))
        return out
    return [] if old == new else [f"{where}: {old!r} → {new!r}"]


def _train_and_evaluate(
    resolved: Resolved,
    plugins: Plugins,
    prepared: PreparedData,
    tokenizer: Any,
    path: str,
    run: RunDir,
    resume_from: str | None,
    ui: Any,
) -> dict[str, Any]:
    import torch
    from transformers import set_seed

    from tunesmith.data import Collator
    from tunesmith.models import load_model, torch_dtype
    from tunesmith.report import write_report
    from tunesmith.training import Device, TrainContext, count_parameters, make_callbacks

    cfg = resolved.config
    method, objective = resolved.method, resolved.objective
    device = Device.detect()
    precision = device.precision(cfg.training.precision)
    set_seed(cfg.training.seed)

    ui.step(f"Loading model {cfg.model.path} ({device.type}, {precision})")
    model = load_model(
        cfg.model,
        path,
        dtype=torch_dtype(cfg.model, precision),
        extra=method.model_load_kwargs(device.type),
        head=objective.model_kind,
    )
    if (
        device.type != "cpu"
        and not getattr(model, "hf_device_map", None)
        and not getattr(model, "is_quantized", False)
    ):
        model.to(device.type)
    base_size = model.get_memory_footprint()

    base_metrics, base_samples = {}, {}
    if cfg.evaluation.compare_base:
        ui.step("Evaluating the base model")
        base_metrics, base_samples, _ = evaluate(
            model, tokenizer, resolved, prepared, "base", ui, run.path / "review"
        )

    ui.step(f"Applying method '{method.name}'")
    set_seed(cfg.training.seed)
    model = method.apply(model)
    notes, warnings = method.report(model)
    for note in notes:
        ui.note(note)
    for warning in warnings:
        ui.warn(warning)
    trainable, total = count_parameters(model)
    ui.note(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.4f}%)")

    rows = training_rows(resolved, prepared.tokenized["train"]) if objective.tokenized else []
    what = f"{len(rows)} rows" if objective.tokenized else f"{len(prepared.examples['train'])} examples"
    ui.step(f"Training with objective '{objective.name}' on {what}")
    with ui.progress("training", None) as update:
        callbacks = make_callbacks(
            run.path,
            on_log=lambda step, logs: plugins.call("on_log", run_dir=str(run.path), step=step, logs=logs),
            on_checkpoint=lambda ckpt, step: plugins.call(
                "on_checkpoint", run_dir=str(run.path), checkpoint_dir=ckpt, step=step
            ),
            on_progress=lambda step, total: update(step, total),
        )
        ctx = TrainContext(
            model=model,
            tokenizer=tokenizer,
            train_rows=rows,
            eval_rows=None,
            collator=Collator(tokenizer.pad_token_id, packed=cfg.data.packing),
            training=cfg.training,
            device=device,
            run_dir=run.path,
            callbacks=callbacks,
            resume_from=resume_from,
            train_examples=prepared.examples["train"],
            eval_examples=prepared.examples.get("validation", []),
            method=method,
            plugins=plugins,
        )
        started = time.monotonic()
        train_metrics = objective.train(ctx) or {}
        train_seconds = time.monotonic() - started
    tokens = sum(len(r["input_ids"]) for r in rows) or sum(
        len(t.input_ids) for t in prepared.tokenized["train"]
    )
    epochs = cfg.training.epochs if cfg.training.max_steps <= 0 else None
    train_metrics = {
        **train_metrics,
        "wall_seconds": round(train_seconds, 2),
        "rows": len(rows),
        "tokens_per_epoch": tokens,
    }
    if epochs and train_seconds > 0 and resume_from is None:
        train_metrics["tokens_per_second"] = round(tokens * epochs / train_seconds, 1)

    ui.step("Saving the final model")
    model.eval()

    def save(directory: str) -> None:
        method.save(model, directory)
        tokenizer.save_pretrained(directory)

    run.save_final(save)

    ui.step("Evaluating the tuned model")
    with torch.inference_mode():
        tuned_metrics, tuned_samples, errors = evaluate(
            model, tokenizer, resolved, prepared, "tuned", ui, run.path / "review"
        )

    metrics = {
        "base": base_metrics,
        "tuned": tuned_metrics,
        "train": train_metrics,
        "parameters": {"trainable": trainable, "total": total, "base_memory_bytes": base_size},
        "data": {
            split: {**prepared.stats[split], "dropped": prepared.dropped.get(split, 0)}
            for split in prepared.stats
        },
        "method": method.name,
        "objective": objective.name,
        "errors": errors,
    }
    write_json(run.path / "metrics.json", metrics)
    write_json(run.path / "samples.json", {"base": base_samples, "tuned": tuned_samples})
    write_report(run.path, resolved, metrics, tuned_samples)
    run.set_status("complete")
    return metrics
