"""The run, top to bottom: prepare data, load the base model, evaluate it, apply the method, train, save,
evaluate the tuned model, write the results.

Each phase is a short function below :func:`run`, in the order it calls them. Everything that can be
wrong with the user's input is checked in the first phase, before the run directory is created or a
model is loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from tunesmith.config import Resolved
from tunesmith.contexts import Device, TrainContext
from tunesmith.data_checks import write_data_checks
from tunesmith.distributed import Ranks
from tunesmith.errors import TunesmithError
from tunesmith.evaluation import evaluate
from tunesmith.plugins import Plugins
from tunesmith.prepare import PreparedData, prepare, thinking_used, training_rows
from tunesmith.rundir import RunDir, write_json
from tunesmith.runs import base_model_path
from tunesmith.schema import TrainingConfig
from tunesmith.tracking import Tracking
from tunesmith.ui import Quiet


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


def run(
    resolved: Resolved,
    plugins: Plugins,
    *,
    overwrite: bool = False,
    resume: Path | None = None,
    ui: Any = None,
) -> RunResult:
    """Run one fine-tuning job described by ``resolved``; returns where it was written and its metrics.

    Under a launcher (torchrun, accelerate launch) every process calls this: the main process (global
    rank 0) owns the console and the run directory, the others train and evaluate their share quietly
    (see :mod:`tunesmith.distributed`).
    """
    import torch
    from transformers import set_seed

    ranks = Ranks.from_env()
    ui = (ui or Quiet()) if ranks.is_main else Quiet()
    device = Device.detect()
    ranks.start(device.type, resolved.config.training.distributed.timeout_minutes)
    for warning in resolved.warnings:
        ui.warn(warning)
    prepared, tokenizer = prepare(resolved, ui, plugins)  # main process first, the others read its cache
    ranks.agree(lambda: check_device(resolved, device, ranks))
    run_dir, resume_from = open_run_dir(
        resolved, prepared, tokenizer, ranks, overwrite=overwrite, resume=resume
    )
    tracking = Tracking(resolved.trackers if ranks.is_main else [], ui.warn)  # the console's process reports
    try:
        for note in tracking.start(resolved.to_dict(), run_dir.path, resolved.config.name):
            ui.note(note)
        if ranks.is_main:
            write_data_checks(run_dir.path, prepared)  # what deduplication and decontamination found
        set_seed(resolved.config.training.seed)
        model = load_base(resolved, plugins, device, ui, ranks)
        base_size = model.get_memory_footprint()
        base_metrics, base_samples, evaluation = evaluate_base(
            model, tokenizer, resolved, prepared, run_dir, ui
        )
        model, (trainable, total) = apply_method(model, resolved, ui)
        train_metrics = train(
            model, tokenizer, resolved, prepared, device, run_dir, resume_from, plugins, ui, tracking
        )
        save_final(model, tokenizer, resolved, run_dir, ui, ranks)
        ui.step("Evaluating the tuned model")
        started = time.monotonic()
        with torch.inference_mode():
            tuned_metrics, tuned_samples, errors, gates = evaluate(
                model, tokenizer, resolved, prepared, "tuned", ui, review_dir(run_dir), base=base_metrics
            )
        evaluation["tuned_seconds"] = round(time.monotonic() - started, 2)
        metrics: dict[str, Any] = {
            "base": base_metrics,
            "evaluation": evaluation,
            "tuned": tuned_metrics,
            "train": train_metrics,
            "parameters": {"trainable": trainable, "total": total, "base_memory_bytes": base_size},
            "data": {
                split: {**prepared.stats[split], "dropped": prepared.dropped.get(split, 0)}
                for split in prepared.stats
            },
            "method": resolved.method.name,
            "objective": resolved.objective.name,
            "errors": errors,
            "plugin_errors": list(plugins.hook_failures),
            "tracker_errors": tracking.errors,
            "gates": gates,
        }
        if ranks.distributed:
            metrics["processes"] = ranks.world_size
        if ranks.is_main:
            write_results(run_dir, resolved, metrics, {"base": base_samples, "tuned": tuned_samples})
            tracking.finish(metrics, run_dir.path)
            if tracking.errors:  # a tracker that failed at the end is recorded with the others
                write_json(run_dir.path / "metrics.json", metrics)
            plugins.call("on_run_end", run_dir=str(run_dir.path), metrics=metrics)
            if plugins.hook_failures:  # observer hooks that raised, on_run_end's included
                run_dir.set_status("complete", plugin_errors=plugins.hook_failures)
                for failure in plugins.hook_failures:
                    ui.warn(failure)
    except BaseException as exc:
        tracking.abort(f"{type(exc).__name__}: {exc}")
        if not ranks.is_main:
            raise
        fail(run_dir, exc, resume_from)
    finally:
        run_dir.unlock()  # only now: the run's last write is done
    return RunResult(run_dir.path, metrics)


def review_dir(run_dir: RunDir) -> Path | None:
    """Where evaluators may write files (a review sheet): the main process's run directory only."""
    return run_dir.path / "review" if Ranks.from_env().is_main else None


def fail(run_dir: RunDir, exc: BaseException, resume_from: str | None) -> NoReturn:
    """Mark the run failed (unless it already completed) and raise what the user should see."""
    error = user_error(exc, run_dir, resume_from)
    if run_dir.status != "complete":
        message = str(error or f"{type(exc).__name__}: {exc}").splitlines()[0]
        try:
            run_dir.set_status("failed", error=message)
        except OSError:
            pass  # the status could not be written at all: the original error matters more
    if error is not None:
        raise error from None
    raise exc


def user_error(exc: BaseException, run_dir: RunDir, resume_from: str | None) -> TunesmithError | None:
    """What a failure means for the user, when it is not a bug: a full disk, an untrusted checkpoint."""
    from tunesmith.rundir import is_disk_full
    from tunesmith.training import last_complete_checkpoint

    if isinstance(exc, TunesmithError):
        return exc
    if is_disk_full(exc):
        checkpoint = last_complete_checkpoint(run_dir.path)
        hint = (
            f"its last complete checkpoint ({checkpoint.name}) is intact: free some space, then "
            f"tunesmith run --resume {run_dir.path}"
            if checkpoint
            else "it has no complete checkpoint yet: free some space and start it again"
        )
        return TunesmithError(
            f"no space left on a disk while running {run_dir.path}",
            details=[f"{type(exc).__name__}: {exc}".splitlines()[0], "run.json says failed; " + hint],
        )
    if resume_from is not None and _is_refused_pickle(exc):
        return TunesmithError(
            f"checkpoint {resume_from} is not trusted: it holds objects other than plain tensors, and "
            "tunesmith loads checkpoints with torch.load(weights_only=True), which runs no code",
            details=[
                "if you did not write that file yourself, do not load it: delete the checkpoint to resume "
                "from an earlier one, or start the run again",
            ],
        )
    return None


def _is_refused_pickle(exc: BaseException | None) -> bool:
    import pickle

    while exc is not None:
        if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# ----------------------------------------------------------------------------------------- phases


def check_device(resolved: Resolved, device: Device, ranks: Ranks | None = None) -> None:
    """Refuse what this machine cannot do before anything is written: fp16 training needs a GPU;
    FSDP and DeepSpeed need what :func:`tunesmith.parallel.check` says."""
    from tunesmith import parallel

    if resolved.config.training.precision == "fp16" and device.type != "cuda":
        raise TunesmithError(
            f"training.precision: fp16 needs a CUDA GPU; this machine trains on {device.type}",
            details=["use precision: auto (fp32 here, bf16 on a GPU that has it) or fp32"],
        )
    world_size, method = (ranks or Ranks()).world_size, resolved.method
    if world_size > 1:
        parallel.check(
            resolved.config.training.distributed,
            device_type=device.type,
            world_size=world_size,
            method=method.name,
            quantization_config=method.model_load_kwargs(device.type).get("quantization_config"),
        )


def distributed_training(resolved: Resolved) -> TrainingConfig:
    """The ``training`` section the objective sees, ``find_unused_parameters`` decided: on only when
    the config says so or the method declares it leaves parameters unused
    (``ddp_find_unused_parameters = True`` on the method class)."""
    training = resolved.training
    d = training.distributed
    if d.find_unused_parameters is not None:
        return training
    needed = bool(getattr(resolved.method, "ddp_find_unused_parameters", False))
    return dataclasses.replace(training, distributed=dataclasses.replace(d, find_unused_parameters=needed))


def open_run_dir(
    resolved: Resolved,
    prepared: PreparedData,
    tokenizer: Any,
    ranks: Ranks,
    *,
    overwrite: bool,
    resume: Path | None,
) -> tuple[RunDir, str | None]:
    """The run directory and the checkpoint to resume from. The main process creates (or checks and
    locks) it; the others learn its path and checkpoint once it is ready, or fail with its error."""
    opened = ranks.on_main(
        lambda: _open_run_dir(
            resolved, prepared, tokenizer, ranks.world_size, overwrite=overwrite, resume=resume
        )
    )
    if ranks.is_main:
        assert opened is not None
        ranks.broadcast((str(opened[0].path), opened[1]))
        return opened
    path, resume_from = ranks.broadcast(("", None))
    return RunDir(Path(path)), resume_from


def _open_run_dir(
    resolved: Resolved,
    prepared: PreparedData,
    tokenizer: Any,
    processes: int,
    *,
    overwrite: bool,
    resume: Path | None,
) -> tuple[RunDir, str | None]:
    """A new run directory with the config and manifest, or the run to resume and its last checkpoint."""
    from tunesmith.manifest import build_manifest, hash_examples, hash_tokenizer

    cfg = resolved.config
    manifest = build_manifest(
        seed=cfg.training.seed,
        data_hashes={split: hash_examples(ex) for split, ex in prepared.examples.items()},
        tokenizer_hash=hash_tokenizer(tokenizer),
        model=str(cfg.model.path),
    )
    manifest["thinking"] = thinking_used(resolved, tokenizer, prepared)
    manifest["processes"] = processes  # the global batch is per process: a resume must match it
    config_dict = resolved.to_dict()
    if resume is not None:
        return _check_resume(Path(resume), config_dict, manifest)
    run_dir = RunDir.create(cfg.run_dir, overwrite=overwrite)
    try:
        run_dir.write_config(config_dict)
        write_json(run_dir.path / "manifest.json", manifest)
    except BaseException as exc:
        try:
            fail(run_dir, exc, None)
        finally:
            run_dir.unlock()
    return run_dir, None


def load_base(resolved: Resolved, plugins: Plugins, device: Device, ui: Any, ranks: Ranks) -> Any:
    """The base model, loaded the method's way (e.g. 4-bit) with the objective's head, on ``device``.

    The main process fetches, builds or merges it first (into a cache); the others then find it there.
    """
    from tunesmith.models import load_base_model

    cfg = resolved.config
    path = ranks.main_first(lambda: base_model_path(resolved, plugins, ui.note))
    precision = device.precision(cfg.training.precision)
    ui.step(f"Loading model {cfg.model.path} ({device.type}, {precision})")
    return load_base_model(
        cfg.model,
        path,
        device,
        precision=precision,
        method=resolved.method,
        head=resolved.objective.model_kind,
    )


def evaluate_base(
    model: Any, tokenizer: Any, resolved: Resolved, prepared: PreparedData, run_dir: RunDir, ui: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Scores of the untouched base model (``evaluation.compare_base``), for the side-by-side report;
    reused from an earlier run when nothing that decides them changed (``evaluation.cache_base``).

    The third value, ``evaluation`` in metrics.json, says what was reused and how long it took.
    """
    from tunesmith.eval_cache import BaseEvalCache

    e = resolved.config.evaluation
    if not e.compare_base:
        return {}, {}, {}
    ui.step("Evaluating the base model")
    started = time.monotonic()
    cache = BaseEvalCache.for_run(model, tokenizer, resolved) if e.cache_base else None
    metrics, samples, _, _ = evaluate(
        model, tokenizer, resolved, prepared, "base", ui, review_dir(run_dir), cache=cache
    )
    if cache is not None and cache.reused:
        ui.note(f"base-model scores reused from the evaluation cache: {cache.describe_reused()}")
    summary = cache.summary() if cache is not None else {"enabled": False, "reused": [], "computed": []}
    return metrics, samples, {"base_cache": summary, "base_seconds": round(time.monotonic() - started, 2)}


def apply_method(model: Any, resolved: Resolved, ui: Any) -> tuple[Any, tuple[int, int]]:
    """The model to train, as the method wraps it; shows what it adapted and the trainable share."""
    from transformers import set_seed

    from tunesmith.hf import count_parameters

    method = resolved.method
    ui.step(f"Applying method '{method.name}'")
    set_seed(resolved.config.training.seed)
    model = method.apply(model)
    notes, warnings = method.report(model)
    for note in notes:
        ui.note(note)
    for warning in warnings:
        ui.warn(warning)
    trainable, total = count_parameters(model)
    ui.note(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.4f}%)")
    return model, (trainable, total)


def train(
    model: Any,
    tokenizer: Any,
    resolved: Resolved,
    prepared: PreparedData,
    device: Device,
    run_dir: RunDir,
    resume_from: str | None,
    plugins: Plugins,
    ui: Any,
    tracking: Tracking | None = None,
) -> dict[str, Any]:
    """Train with the objective; returns its metrics plus wall time, rows and throughput."""
    from tunesmith.data import Collator, packed_layout
    from tunesmith.training import make_callbacks

    cfg, objective = resolved.config, resolved.objective
    if cfg.data.streaming:  # read, tokenized and packed while training
        from tunesmith.streaming import training_stream

        rows, what = training_stream(resolved, tokenizer, ui.warn), "a stream of rows"
    else:
        rows = training_rows(resolved, prepared.tokenized["train"]) if objective.tokenized else []
        what = f"{len(rows)} rows" if objective.tokenized else f"{len(prepared.examples['train'])} examples"
    ui.step(f"Training with objective '{objective.name}' on {what}")
    path = str(run_dir.path)

    def on_log(step: int, logs: dict[str, float]) -> None:
        plugins.call("on_log", run_dir=path, step=step, logs=logs)
        if tracking is not None:
            tracking.log(step, logs)

    with ui.progress("training", None) as update:
        callbacks = make_callbacks(  # records and hooks run on the main process only
            run_dir.path,
            on_log=on_log,
            on_checkpoint=lambda ckpt, step: plugins.call(
                "on_checkpoint", run_dir=path, checkpoint_dir=ckpt, step=step
            ),
            on_progress=lambda step, total: update(step, total),
        )
        validation = objective.validates and bool(prepared.examples.get("validation"))
        ctx = TrainContext(
            model=model,
            tokenizer=tokenizer,
            training=distributed_training(resolved),
            train_rows=rows,
            train_examples=prepared.examples["train"],
            collator=Collator(
                tokenizer.pad_token_id,
                packed=cfg.data.packing,
                layout=packed_layout(getattr(model.config, "_attn_implementation", None)),
            ),
            device=device,
            run_dir=run_dir.path,
            callbacks=callbacks,
            resume_from=resume_from,
            eval_rows=training_rows(resolved, prepared.tokenized["validation"])
            if validation and objective.tokenized
            else [],
            eval_examples=prepared.examples["validation"] if validation else [],
        )
        if ctx.validating and cfg.training.early_stopping_patience:
            from transformers import EarlyStoppingCallback

            ctx.callbacks.append(
                EarlyStoppingCallback(
                    early_stopping_patience=cfg.training.early_stopping_patience,
                    early_stopping_threshold=cfg.training.early_stopping_threshold,
                )
            )
        started = time.monotonic()
        metrics = dict(objective.train(ctx) or {})
        seconds = time.monotonic() - started
    if cfg.data.streaming:  # a stream has no length to count
        return {**metrics, "wall_seconds": round(seconds, 2)}
    tokens = sum(len(r["input_ids"]) for r in rows) or sum(
        len(t.input_ids) for t in prepared.tokenized["train"]
    )
    metrics.update({"wall_seconds": round(seconds, 2), "rows": len(rows), "tokens_per_epoch": tokens})
    epochs = cfg.training.epochs if cfg.training.max_steps <= 0 else None
    if epochs and seconds > 0 and resume_from is None:
        metrics["tokens_per_second"] = round(tokens * epochs / seconds, 1)
    return metrics


def save_final(
    model: Any, tokenizer: Any, resolved: Resolved, run_dir: RunDir, ui: Any, ranks: Ranks
) -> None:
    """The method's artifact and the tokenizer (with its chat template) into ``final/``, atomically.

    The main process writes it; the others wait until it is there. Weights sharded across processes
    (FSDP, ZeRO-3) are first gathered by all of them, and the method saves the gathered copy.
    """
    from tunesmith.parallel import full_state_dict

    ui.step("Saving the final model")
    model.eval()
    state = full_state_dict(model) if ranks.distributed else None

    def save(directory: str) -> None:
        if state is None:
            resolved.method.save(model, directory)
        else:  # save_pretrained (transformers and PEFT alike) takes the weights to write
            plain = model.save_pretrained
            model.save_pretrained = functools.partial(plain, state_dict=state)
            try:
                resolved.method.save(model, directory)
            finally:
                del model.save_pretrained
        tokenizer.save_pretrained(directory)

    ranks.on_main(lambda: run_dir.save_final(save))


def write_results(
    run_dir: RunDir, resolved: Resolved, metrics: dict[str, Any], samples: dict[str, Any]
) -> None:
    """metrics.json, samples.json, the report and the model card; then the run is marked complete."""
    from tunesmith.model_card import write_model_card
    from tunesmith.report import write_report

    write_json(run_dir.path / "metrics.json", metrics)
    write_json(run_dir.path / "samples.json", samples)
    write_report(run_dir.path, resolved, metrics, samples["tuned"])
    write_model_card(run_dir.final, run_dir.path, resolved, metrics)
    run_dir.set_status("complete")


# ------------------------------------------------------------------------------------------ resume


def _check_resume(path: Path, config: dict[str, Any], manifest: dict[str, Any]) -> tuple[RunDir, str]:
    """Refuse to resume when config, data or tokenizer changed; otherwise the last whole checkpoint."""

    run = RunDir(path)
    if run.status == "missing":
        raise TunesmithError(f"no run to resume at {path}")
    if run.status == "complete":
        raise TunesmithError(f"{path} is already complete; nothing to resume")
    run.lock()  # refuses a run that is still going
    try:
        checkpoint = _resumable_checkpoint(run, path, config, manifest)
        run.set_status("running", resumed_from=checkpoint.name)
    except BaseException:
        run.unlock()
        raise
    return run, str(checkpoint)


def _resumable_checkpoint(run: RunDir, path: Path, config: dict[str, Any], manifest: dict[str, Any]) -> Path:
    """The checkpoint to resume from, when the inputs are those the run started with."""
    from tunesmith.training import last_complete_checkpoint

    differences = _diff(run.config(), config, "config")
    old = run.manifest()
    for split in sorted(set(old["data"]) | set(manifest["data"])):
        if old["data"].get(split) != manifest["data"].get(split):
            differences.append(
                f"data split '{split}' changed (hash {str(old['data'].get(split))[:12]} → "
                f"{str(manifest['data'].get(split))[:12]})"
            )
    if old.get("processes", 1) != manifest["processes"]:
        differences.append(
            f"it trained on {old.get('processes', 1)} process(es), this run has {manifest['processes']}: "
            "the global batch is per process (resume with the same --nproc or launcher settings)"
        )
    if old["tokenizer"] != manifest["tokenizer"]:
        differences.append("the tokenizer changed")
    if differences:
        raise TunesmithError(f"cannot resume {path}: its inputs changed", details=differences)
    checkpoint = last_complete_checkpoint(path)
    if checkpoint is None:
        raise TunesmithError(f"cannot resume {path}: it has no complete checkpoint")
    return checkpoint


def _diff(old: Any, new: Any, where: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{where}.{key}" if where != "config" else str(key))
        return out
    return [] if old == new else [f"{where}: {old!r} → {new!r}"]
