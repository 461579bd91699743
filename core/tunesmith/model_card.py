"""The model card: ``README.md`` beside a run's final model (and a merged copy), ready for the Hugging Face hub.

``huggingface-cli upload`` (or ``tunesmith push``) of ``final/`` then publishes a repository that says what
it is: the standard metadata (base model, ``library_name``, tags, datasets, pipeline tag, licence when
known, held-out results as ``model-index``) written by ``huggingface_hub``'s own ``ModelCardData``, and a
body with the method, objective, hyper-parameters, the data and its hashes, base-vs-tuned metrics, the
trust checks that ran and how to load the model. Everything comes from what the run wrote: the resolved
config, ``manifest.json``, ``data_checks.json`` and the metrics.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunesmith.config import Resolved
from tunesmith.data_checks import describe
from tunesmith.hf import HEADS
from tunesmith.peft_method import PeftMethod
from tunesmith.report import fmt, metric_rows

CARD_FILE = "README.md"
#: A hub model id: ``owner/name`` (the hub refuses ``base_model`` values that are not).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
#: Hyper-parameters shown in the card, in this order.
HYPER_PARAMETERS = (
    "epochs",
    "max_steps",
    "learning_rate",
    "batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "optimizer",
    "seed",
    "precision",
)


def write_model_card(
    directory: Path, run_path: Path, resolved: Resolved, metrics: dict[str, Any], *, merged: bool = False
) -> Path:
    """Write ``directory/README.md`` for the run at ``run_path``; ``merged`` for a model folded into its base."""
    path = Path(directory) / CARD_FILE
    build_model_card(Path(run_path), resolved, metrics, merged=merged).save(path)
    return path


def build_model_card(
    run_path: Path, resolved: Resolved, metrics: dict[str, Any], *, merged: bool = False
) -> Any:
    """The card as a ``huggingface_hub.ModelCard``."""
    from huggingface_hub import ModelCard, ModelCardData

    facts = _Facts(run_path, resolved, metrics, merged)
    data = ModelCardData(
        base_model=facts.hub_base,
        library_name=facts.library_name,
        license=facts.license,
        pipeline_tag=facts.task,
        tags=facts.tags,
        datasets=facts.datasets or None,
        model_name=facts.name,
        eval_results=facts.eval_results() or None,
        tunesmith=facts.summary(),
    )
    content = f"---\n{data.to_yaml()}\n---\n\n{facts.body()}"
    return ModelCard(content)


class _Facts:
    """What the card says, read once from the run."""

    def __init__(self, run_path: Path, resolved: Resolved, metrics: dict[str, Any], merged: bool) -> None:
        self.resolved, self.metrics, self.merged = resolved, metrics, merged
        self.config = resolved.config
        self.name = self.config.name
        self.manifest = _read_json(run_path / "manifest.json")
        self.checks = _read_json(run_path / "data_checks.json")
        self.version = self.manifest.get("packages", {}).get("tunesmith", "")
        self.base = str(self.config.model.path)
        self.hub_base = self.base if _is_hub_id(self.base, resolved) else None
        self.method, self.objective = resolved.method, resolved.objective
        self.adapter = not merged and isinstance(self.method, PeftMethod)
        whole = merged or not self.method.produces_adapter
        self.library_name = "peft" if self.adapter else "transformers" if whole else None
        self.license = _license_of(self.base, resolved)
        #: The hub's pipeline tag: a reward model (a sequence classifier) scores text, others generate it.
        self.task = (
            "text-classification"
            if HEADS.get(self.objective.model_kind) == HEADS["sequence-classification"]
            else "text-generation"
        )

    @property
    def tags(self) -> list[str]:
        tags = ["tunesmith", self.method.name, self.objective.name]
        if self.merged:
            tags.append("merged")
        return list(dict.fromkeys(tags))

    @property
    def datasets(self) -> list[str]:
        """The hub ids among the data sources (``source:owner/name[split]``); local files are not hub ids."""
        ids = []
        for source in self.resolved.sources.values():
            where = source.describe().partition(":")[2].split("[")[0]
            if _is_hub_id(where, None):
                ids.append(where)
        return list(dict.fromkeys(ids))

    def data_rows(self) -> list[dict[str, Any]]:
        hashes = self.manifest.get("data", {})
        counts = self.metrics.get("data", {})
        return [
            {
                "split": split,
                "source": source.describe(),
                "examples": counts.get(split, {}).get("count"),
                "sha256": hashes.get(split),
            }
            for split, source in self.resolved.sources.items()
        ]

    def summary(self) -> dict[str, Any]:
        """Machine-readable facts no standard field holds: data hashes, base metrics, gates."""
        return {
            "version": self.version,
            "run": self.name,
            "base_model": self.base,
            "method": {"name": self.method.name, **_options(self.method)},
            "objective": {"name": self.objective.name, **_options(self.objective)},
            "merged": self.merged,
            "data": {
                row["split"]: {"source": row["source"], "sha256": row["sha256"]} for row in self.data_rows()
            },
            "tokenizer_sha256": self.manifest.get("tokenizer"),
            "metrics": {"base": self.metrics.get("base", {}), "tuned": self.metrics.get("tuned", {})},
            "gates": self.metrics.get("gates", []),
        }

    def eval_results(self) -> list[Any]:
        """The tuned model's held-out scores as ``model-index`` entries (one per split and metric)."""
        from huggingface_hub import EvalResult

        results = []
        for split, scores in self.metrics.get("tuned", {}).items():
            source = self.resolved.sources.get(split)
            for name, value in scores.items():
                if not isinstance(value, (int, float)):
                    continue
                results.append(
                    EvalResult(
                        task_type=self.task,
                        dataset_type=source.describe() if source else split,
                        dataset_name=f"{self.name} {split} split",
                        dataset_split=split,
                        metric_type=name,
                        metric_name=name,
                        metric_value=value,
                    )
                )
        return results

    # ------------------------------------------------------------------------------------------ body

    def body(self) -> str:
        return (
            "\n\n".join(
                [
                    f"# {self.name}",
                    self.intro(),
                    "## Training\n\n" + self.training_table(),
                    "## Data\n\n" + self.data_table(),
                    "## Held-out evaluation\n\n" + self.metrics_table(),
                    "## Trust checks\n\n" + self.trust_checks(),
                    "## How to use\n\n" + self.usage(),
                ]
            )
            + "\n"
        )

    def intro(self) -> str:
        what = (
            "the base model with the trained weights folded in (a plain transformers model)"
            if self.merged
            else "a PEFT adapter for the base model"
            if self.adapter
            else "the whole fine-tuned model"
            if self.library_name == "transformers"
            else f"the `{self.method.name}` method's own artifact"
        )
        return (
            f"Fine-tuned from `{self.base}` with tunesmith {self.version}: method "
            f"`{self.method.name}`, objective `{self.objective.name}`. This repository holds {what}, with its "
            "tokenizer and chat template."
        )

    def training_table(self) -> str:
        training = self.resolved.training
        rows = [("method", f"`{self.method.name}`"), ("objective", f"`{self.objective.name}`")]
        rows += [(f"method.{k}", f"`{v}`") for k, v in _options(self.method).items()]
        rows += [(f"objective.{k}", f"`{v}`") for k, v in _options(self.objective).items()]
        rows += [(f"training.{k}", f"`{getattr(training, k)}`") for k in HYPER_PARAMETERS]
        params = self.metrics.get("parameters", {})
        if params.get("trainable") is not None:
            rows.append(("trainable parameters", f"{params['trainable']:,} of {params.get('total', 0):,}"))
        train = self.metrics.get("train", {})
        if isinstance(train.get("train_loss"), (int, float)):
            rows.append(("final training loss", fmt(train["train_loss"])))
        return _table(("setting", "value"), rows)

    def data_table(self) -> str:
        rows = [
            (r["split"], f"`{r['source']}`", str(r["examples"] or "—"), f"`{r['sha256'] or '—'}`")
            for r in self.data_rows()
        ]
        note = (
            "\n\nThe sha256 is taken over the formatted examples in order (what training saw), as in the run's "
            "`manifest.json`."
        )
        return _table(("split", "source", "examples", "sha256"), rows) + note

    def metrics_table(self) -> str:
        rows = [
            (split, name, fmt(base), fmt(tuned)) for split, name, base, tuned in metric_rows(self.metrics)
        ]
        if not rows:
            return "No held-out split was scored."
        return _table(("split", "metric", "base", "tuned"), rows)

    def trust_checks(self) -> str:
        lines = []
        if self.checks:
            for line, findings in describe(self.checks) or [("none ran", [])]:
                lines.append(f"- Data: {line}")
                lines += [f"  - {finding}" for finding in findings]
        else:
            lines.append("- Data: no deduplication or decontamination record in this run")
        gates = self.metrics.get("gates", [])
        for g in gates:
            verdict = "passed" if g.get("passed") else "FAILED"
            lines.append(
                f"- Gate {g.get('evaluator')}: {g.get('name')} ({g.get('split')}): {verdict}: {g.get('detail')}"
            )
        if not gates:
            lines.append("- Gates: none (no forgetting or safety evaluator ran)")
        return "\n".join(lines)

    def usage(self) -> str:
        base = self.hub_base or "BASE_MODEL"
        auto = HEADS.get(self.objective.model_kind, HEADS["causal-lm"])
        if self.adapter:
            code = (
                "from peft import PeftModel\n"
                f"from transformers import {auto}, AutoTokenizer\n\n"
                f'model = {auto}.from_pretrained("{base}")\n'
                'model = PeftModel.from_pretrained(model, "REPO_ID")\n'
                'tokenizer = AutoTokenizer.from_pretrained("REPO_ID")  # carries the training chat template'
            )
        elif self.library_name == "transformers":
            code = (
                f"from transformers import {auto}, AutoTokenizer\n\n"
                f'model = {auto}.from_pretrained("REPO_ID")\n'
                'tokenizer = AutoTokenizer.from_pretrained("REPO_ID")  # carries the training chat template'
            )
        else:
            code = 'import tunesmith\n\nrun = tunesmith.load_run("RUN_DIR")  # run.model, run.tokenizer'
        where = (
            ""
            if self.hub_base or not self.adapter
            else f" `BASE_MODEL` is `{self.base}`, which is not a hub id: load it from where the run found it, "
            "or publish the merged model instead (`tunesmith push RUN REPO_ID --merged`)."
        )
        return (
            f"`REPO_ID` is this repository (or a local copy of it).{where}\n\n```python\n{code}\n```\n\n"
            "Prompt with `tokenizer.apply_chat_template(messages, add_generation_prompt=True)`: the model "
            "was trained on that rendering. For llama.cpp or Ollama, `tunesmith export RUN --format gguf` "
            "writes a GGUF file and a Modelfile."
        )


def _is_hub_id(value: str, resolved: Resolved | None) -> bool:
    if resolved is not None and resolved.model_provider is not None:
        return False
    return bool(HUB_ID.fullmatch(value)) and not Path(value).exists()


def _license_of(base: str, resolved: Resolved) -> str | None:
    """The base model's licence from its own card: a local directory's, or a hub model's cached one."""
    from huggingface_hub import ModelCard, try_to_load_from_cache

    readme: Any = Path(base) / CARD_FILE
    if not readme.is_file() and _is_hub_id(base, resolved):
        readme = try_to_load_from_cache(base, CARD_FILE, revision=resolved.config.model.revision)
    if not isinstance(readme, (str, Path)) or not Path(readme).is_file():
        return None
    try:
        return ModelCard.load(readme).data.license
    except Exception:  # a malformed card elsewhere must not fail the run
        return None


def _options(component: Any) -> dict[str, Any]:
    config = getattr(component, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return {}
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if "component" not in f.metadata and _plain(getattr(config, f.name))
    }


def _plain(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, (str, int, float, bool))
        or (isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value))
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)
