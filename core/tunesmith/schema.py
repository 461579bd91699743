"""The run config's sections: what a run config may say, with defaults and help text.

This is the schema only (plain dataclasses, no loading): ``tunesmith.config`` reads YAML into it, and
objectives read ``TrainContext.training`` from it. It names no built-in component: a component field
left out takes the kind's default, which a plugin declares (``default = True`` on the class).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tunesmith.options import component, option

#: The sections of a run config that hold options (not components), in the order the docs show them.
SECTIONS = ("model", "data", "template", "training", "evaluation")


@dataclass
class ModelConfig:
    path: str | None = option(
        None,
        help="Hugging Face model id, local directory, finished run directory, or the name of a model "
        "provider (see tunesmith plugins list); default: the provider that declares itself the default",
    )
    revision: str | None = option(None, help="Model revision (branch, tag or commit) on the hub")
    trust_remote_code: bool = option(False, help="Run code shipped with the model (off unless you trust it)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", help="Weights dtype; auto = float32 on CPU, bfloat16 on a GPU that supports it"
    )
    attn_implementation: str | None = option(
        None, help="Attention kernel: sdpa, eager, flash_attention_2 (default: the model's own)"
    )


@dataclass
class DataConfig:
    train: dict | list | None = component(
        "data_source",
        help="Training split: a data source, e.g. {name: jsonl, path: ...}, or a list of them mixed by "
        "weight, each with its own weight (default 1) and formatter, e.g. [{name: jsonl, path: a.jsonl, "
        "weight: 0.7}, {name: jsonl, path: b.jsonl, weight: 0.3, formatter: chat}]",
    )
    validation: dict | list | None = component(
        "data_source", help="Validation split (optional); a data source or a list of them, like train"
    )
    test: dict | list | None = component(
        "data_source", help="Held-out test split (optional); never trained on; a source or a list, like train"
    )
    max_length: int = option(1024, minimum=8, help="Maximum tokens per example (and per packed row)")
    packing: bool = option(True, help="Pack several examples per row, with no attention across them")
    streaming: bool = option(
        False,
        help="Read the training split while training (corpora larger than memory): tokenized and packed "
        "a buffer at a time; needs training.max_steps; only the first 1000 records are checked beforehand",
    )
    stream_buffer: int = option(
        1000, minimum=1, help="Examples packed and shuffled together when streaming (memory holds one buffer)"
    )
    train_on_prompt: bool = option(False, help="Also train on prompt/user tokens (default: completion only)")
    truncate: bool = option(False, help="Truncate over-long examples (counted) instead of rejecting them")
    on_invalid: Literal["error", "drop"] = option(
        "error", help="What to do with invalid records: error (list them, stop) or drop (count them, go on)"
    )
    mix_stopping: Literal["first_exhausted", "all_exhausted"] = option(
        "first_exhausted",
        help="A split of several sources ends when the first source runs out (first_exhausted: no example "
        "repeated) or when every source was seen whole (all_exhausted: smaller sources repeated)",
    )
    cache: bool = option(
        True,
        help="Reuse prepared (formatted, tokenized, packed) splits from $TUNESMITH_CACHE/data when nothing "
        "that changes them changed; false prepares them again every time",
    )
    num_proc: int = option(
        0,
        minimum=0,
        help="Processes that tokenize a split (datasets.map num_proc); 0 = auto: one per CPU core (at most "
        "8) for splits of 20,000 examples or more, one otherwise",
    )
    dedup: Literal["off", "warn", "drop", "error"] = option(
        "drop",
        help="Exact duplicates in the training split (same text after Unicode NFKC, case-folding and "
        "collapsing whitespace): drop (keep the first), warn (keep all, report), error, or off",
    )
    near_dedup: Literal["off", "warn", "drop", "error"] = option(
        "warn",
        help="Near-duplicates in the training split (MinHash LSH on word 3-grams, Jaccard at least "
        "near_duplicate_threshold): warn (report), drop (keep the first), error, or off",
    )
    near_duplicate_threshold: float = option(
        0.8,
        minimum=0,
        maximum=1,
        help="Jaccard similarity of word 3-grams from which two examples are near-duplicates (against "
        "held-out data, containment counts too); 0 turns near-duplicate detection off",
    )
    contamination_ngram: int = option(
        13,
        minimum=0,
        help="A training example sharing a word n-gram of this length with a held-out example is "
        "contaminated (exact copies and near-duplicates are too); 0 turns the n-gram check off",
    )
    contamination_validation: Literal["off", "warn", "drop", "error"] = option(
        "warn",
        help="Training examples that overlap the validation split: warn, drop (train without them), "
        "error, or off",
    )
    contamination_test: Literal["off", "warn", "drop", "error"] = option(
        "error",
        help="Training examples that overlap the test split: error, warn, drop (train without them), or off",
    )
    contamination_files: list[str] = option(
        [],
        help="More held-out data to keep out of training (benchmarks): JSONL files whose records' string "
        "fields are the text, checked like the test split",
    )
    contamination_files_policy: Literal["off", "warn", "drop", "error"] = option(
        "error", help="Training examples that overlap contamination_files: error, warn, drop, or off"
    )
    common_ngram_share: float = option(
        0.1,
        exclusive_minimum=0,
        maximum=1,
        help="Word 3-grams found in more than this share of a split's records (and in at least 5) are "
        "template text, shared by design: the near-duplicate and contamination checks leave their words out",
    )


@dataclass
class TemplateConfig:
    chat_template: str | None = option(
        None,
        help="Replace the tokenizer's chat template: a built-in name (e.g. chatml, llama-3.1, qwen3), "
        "a .jinja file, or inline Jinja; saved with the run",
    )
    system_message: Literal["keep", "merge", "drop"] = option(
        "keep",
        help="System messages: keep (the template renders them), merge into the first user turn, or drop "
        "(for templates without a system role, e.g. Gemma 2, Mistral v0.1)",
    )
    eos: Literal["auto", "always", "template"] = option(
        "auto",
        help="End of trained turns: auto = add EOS only where the template ends a turn with no special "
        "token; always = EOS after every turn; template = exactly what the template renders",
    )
    thinking: Literal["auto", "on", "off"] = option(
        "auto",
        help="Reasoning models: auto = on for examples with reasoning (<think> or a reasoning field), off "
        "(empty think block in the prompt, never trained) otherwise; on / off for every example",
    )
    think_tags: list[str] = option(["<think>", "</think>"], help="Tags that open and close reasoning")
    kwargs: dict = option({}, help="Extra variables for the chat template (like chat_template_kwargs)")


@dataclass
class DistributedConfig:
    """How several processes (torchrun, accelerate launch, ``tunesmith run --nproc``) share training.

    One process ignores all of it. See docs/distributed.md."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = option(
        "ddp",
        help="ddp: a whole model per device, gradients averaged; fsdp: parameters, gradients and optimizer "
        "state sharded across devices (FSDP2, one decoder layer per unit); deepspeed: DeepSpeed ZeRO",
    )
    find_unused_parameters: bool | None = option(
        None,
        help="DDP: look for parameters without a gradient after every step (slower); auto: only for "
        "methods that declare they leave some unused",
    )
    fsdp_sharded_checkpoints: bool = option(
        False,
        help="FSDP checkpoints: each process writes its own shard (faster and lighter for large models) "
        "instead of one gathered copy written by the main process; final/ is always one whole copy",
    )
    fsdp_offload: bool = option(
        False, help="FSDP: keep parameters and optimizer state in CPU memory (fits larger models, slower)"
    )
    deepspeed: str = option(
        "zero2",
        help="DeepSpeed: zero2 (optimizer state and gradients sharded), zero3 (parameters too), "
        "zero3-offload (zero3, with CPU memory), or the path of your own DeepSpeed JSON",
    )
    timeout_minutes: int = option(
        30, minimum=1, help="How long a process waits for the others at a collective before giving up"
    )


@dataclass
class TrainingConfig:
    epochs: float = option(3.0, exclusive_minimum=0, help="Passes over the training split")
    max_steps: int = option(-1, minimum=-1, help="Stop after this many optimizer steps (-1: use epochs)")
    learning_rate: float | None = option(
        None, exclusive_minimum=0, help="Peak learning rate (default: the method's, e.g. 2e-4 for LoRA)"
    )
    batch_size: int = option(8, minimum=1, help="Rows per device per step")
    gradient_accumulation_steps: int = option(1, minimum=1, help="Micro-batches per optimizer step")
    lr_scheduler: str = option("cosine", help="transformers scheduler name: linear, cosine, constant, ...")
    warmup_ratio: float = option(
        0.03, minimum=0, exclusive_maximum=1, help="Fraction of steps spent warming up the learning rate"
    )
    weight_decay: float = option(0.0, minimum=0, help="AdamW weight decay")
    max_grad_norm: float = option(1.0, minimum=0, help="Gradient clipping norm")
    optimizer: str = option("adamw_torch", help="transformers optimizer name (adamw_torch, adamw_8bit, ...)")
    seed: int = option(42, help="Seed for data order, initialisation and dropout")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", help="auto = fp32 on CPU, bf16 on a GPU that supports it"
    )
    gradient_checkpointing: bool | None = option(None, help="Trade compute for memory (auto: off on CPU)")
    logging_steps: int = option(10, minimum=1, help="Log loss every N steps")
    save_steps: int = option(0, minimum=0, help="Checkpoint every N steps (0: at the end of every epoch)")
    save_total_limit: int = option(2, minimum=1, help="Checkpoints kept on disk")
    eval_steps: float = option(
        0.1,
        minimum=0,
        help="Validation loss while training: every N optimizer steps, or every fraction of the run below 1 "
        "(0.1: ten times); 0: off. Needs a validation split and an objective that has a validation loss",
    )
    early_stopping_patience: int = option(
        0,
        minimum=0,
        help="Stop when the validation loss has not improved for this many evaluations (0: never); the "
        "checkpoint with the best validation loss is then the final model",
    )
    early_stopping_threshold: float = option(
        0.0, minimum=0, help="Smallest drop in validation loss that counts as an improvement"
    )
    torch_compile: bool = option(
        False, help="torch.compile the model (slow first step; helps full fine-tuning)"
    )
    distributed: DistributedConfig = field(
        default_factory=DistributedConfig,
        metadata={"help": "Several processes: DDP, FSDP or DeepSpeed (see docs/distributed.md)"},
    )


@dataclass
class EvaluationConfig:
    splits: list[str] = option(["test"], help="Splits to score (those present); validation if no test split")
    compare_base: bool = option(True, help="Also score the base model, shown side by side")
    batch_size: int = option(16, minimum=1, help="Examples per generation batch")
    max_new_tokens: int = option(64, minimum=1, help="Generation length limit")
    max_examples: int | None = option(None, minimum=1, help="Score at most this many examples per split")
    strip_reasoning: bool = option(
        True, help="Compare final answers: remove <think> blocks from references and generations"
    )
    cache_base: bool = option(
        True,
        help="Reuse the base model's scores from $TUNESMITH_CACHE/eval when the base model, evaluation "
        "data, evaluators and generation settings are those of an earlier run",
    )


@dataclass
class RunConfig:
    name: str = option("run", help="Run name; the run directory is output_dir with {name} filled in")
    output_dir: str = option("runs/{name}", help="Where the run directory is written")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Base model"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Data splits and tokenization"})
    template: TemplateConfig = field(
        default_factory=TemplateConfig, metadata={"help": "Chat template and how chats are rendered"}
    )
    formatter: dict | None = component(
        "formatter", help="Turns records into examples (default: the default formatter)"
    )
    method: dict | None = component(
        "method", help="Tuning method: which parameters train (default: the default method)"
    )
    objective: dict | None = component(
        "objective", help="Training objective (default: the default objective)"
    )
    evaluators: list | None = field(
        default=None,
        metadata={
            "help": "Evaluators run on the evaluation splits (default: the default evaluators; [] for none)",
            "component": "evaluator",
            "many": True,
        },
    )
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata={"help": "Optimisation"})
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig, metadata={"help": "Evaluation"})
    tracking: list = component(
        "tracker",
        many=True,
        help="Experiment trackers the run reports to, each with its options, e.g. "
        "[{name: mlflow, experiment: dates}] (default: none; TensorBoard files are always written)",
    )

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name))


__all__ = [
    "SECTIONS",
    "DataConfig",
    "DistributedConfig",
    "EvaluationConfig",
    "ModelConfig",
    "RunConfig",
    "TemplateConfig",
    "TrainingConfig",
]
