"""A conformance suite for method plugins: every method, built-in or third party, runs it on itself.

In a plugin's own tests (pytest collects the ``test_*`` checks of the base class)::

    from tunesmith.testing import MethodConformance

    class TestMyMethod(MethodConformance):
        method = MyMethod          # the Method subclass
        options = {"r": 4}         # its Config options
        skip = {"merge": "cannot merge by design"}     # optional: check name -> reason
        xfail = {"generate": "upstream bug #123"}      # optional: check name -> reason (strict)

Outside pytest (a CLI command, a notebook)::

    from tunesmith.testing import check_method, format_results
    results = check_method(MyMethod, {"r": 4})
    print(format_results(results))
    assert all(r.ok for r in results)

The checks, in order (``CHECKS``), all on a small random Llama from :mod:`tunesmith.testing.models`, or on any
saved model directory given as ``model_dir`` (a small Qwen3 or Mixtral, say):

``loss_decreases``
    ``train_steps`` (40) AdamW steps on a fixed batch of four copy-pattern rows, no weight decay, lr
    ``learning_rate`` (default: the top of the method's ``usual_learning_rates``, at least 1e-2); the
    eval-mode loss after training must be at most ``loss_ratio`` (0.9) times the loss before.
``trainable_parameters``
    Some parameter requires grad; an adapter method (``produces_adapter``) trains fewer than all of
    them; if the method defines ``expected_trainable(base_model) -> int`` (called on a fresh base model
    before ``apply``), the trainable count equals it.
``base_unchanged``
    After training, every parameter that was frozen after ``apply`` is bit-for-bit unchanged, and for
    an adapter method so is every parameter of the original base model.
``save_reload``
    ``method.save`` then ``method.load`` onto a fresh base model (same weights) gives the trained
    model's logits within ``logits_atol`` (1e-5). Training must have moved the logits (by more than
    10 × ``logits_atol``), or the check would prove nothing.
``generate``
    ``generate()`` on the trained model — greedy, ``use_cache=True``, a batch of prompts of different
    lengths, left-padded, ``max_new_tokens`` (8) — returns, token by token, the argmax of a
    teacher-forced forward pass over each unpadded row (a position whose top two logits are within
    ``tie_atol`` of each other counts as a tie and may go either way).
``merge``
    Where ``method.merge`` does not raise ``TunesmithError`` (that means "cannot merge": the check
    is skipped with its message), the merged model (merged from a deep copy) is a plain transformers
    model whose logits match the unmerged model's within ``merge_atol`` (1e-4).
``merge_reload``
    The merged model saved with ``save_pretrained`` loads with a stock
    ``AutoModelForCausalLM.from_pretrained`` and gives the merged logits within ``logits_atol``.
``peft_adapter``
    Where ``produces_adapter`` is true, the saved artifact loads with a stock
    ``peft.PeftModel.from_pretrained(fresh_base, path)`` and gives the trained logits within
    ``logits_atol``.

Every base model — the one trained and each fresh one — is the same seeded random model, saved to a
temporary directory once and loaded with ``AutoModelForCausalLM.from_pretrained(dir, dtype=float32,
**method.model_load_kwargs("cpu"))``, so a method that changes how the model loads (4-bit QLoRA) goes
through the same path as the others. The model is trained once and shared by all checks.

This module imports torch, transformers and peft only inside functions; pytest is needed only for
:class:`MethodConformance`.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tunesmith.components import Method
from tunesmith.errors import TunesmithError
from tunesmith.testing.kit import CheckFailed, CheckResult, CheckSkipped, Kit, format_results, pytest_check

#: The check names, in the order they run.
CHECKS = (
    "loss_decreases",
    "trainable_parameters",
    "base_unchanged",
    "save_reload",
    "generate",
    "merge",
    "merge_reload",
    "peft_adapter",
)

#: Overrides of :func:`tunesmith.testing.models.build_config` for the test model: ~90k parameters, fast on CPU.
SMALL_MODEL: dict[str, Any] = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    # Weights 5x the default init: at 0.02 the frozen (tied) output embeddings keep a random model's
    # logits near uniform, and 40 steps of an adapter method barely move the loss; at 0.1 they do.
    initializer_range=0.1,
)


@dataclass
class Settings:
    """Knobs of the suite; :class:`MethodConformance` reads them from class attributes of the same name."""

    model_overrides: dict[str, Any] = field(default_factory=lambda: dict(SMALL_MODEL))
    seed: int = 0
    train_steps: int = 40
    learning_rate: float | None = None  # None: the top of the method's usual range, at least 1e-2
    loss_ratio: float = 0.9  # final loss must be <= loss_ratio * initial loss
    logits_atol: float = 1e-5  # save/reload, PEFT reload, merged save/reload
    merge_atol: float = 1e-4  # merged vs unmerged
    tie_atol: float = 1e-4  # generate: top-2 logits this close are a tie
    max_new_tokens: int = 8
    threads: int | None = 1  # torch threads while a check runs (a tiny model is fastest on one)
    #: A saved model directory (any architecture, with its tokenizer) to check the method on instead of
    #: the random tiny Llama, e.g. a small Qwen3 or Mixtral; ``model_overrides`` then do not apply.
    model_dir: str | Path | None = None


@dataclass
class _Trained:
    model: Any
    trainable: int
    total: int
    initial_loss: float
    final_loss: float
    base_params: list[tuple[str, Any, Any]]  # (name, parameter, copy before training) of the raw base
    frozen_params: list[tuple[str, Any, Any]]  # the same for parameters frozen after apply
    base_logits: Any


def _task_rows(seed: int) -> list[str]:
    """Four copy-pattern rows of different lengths: a random word repeated four times."""
    rng = random.Random(seed)
    rows = []
    for length in (5, 3, 6, 4):
        word = "".join(rng.choice("abcdefghij") for _ in range(length))
        rows.append(" ".join([word] * 4))
    return rows


class Conformance(Kit):
    """Runs the checks for one method; builds the base model, trains once, and caches what checks share.

    ``method`` is a :class:`~tunesmith.Method` subclass (built with ``Config(**options)``) or an
    instance. ``workdir`` holds the saved base model and artifacts (a temporary directory if omitted;
    :meth:`close` removes it).
    """

    checks = CHECKS
    what = "method"

    def __init__(
        self,
        method: type[Method] | Method,
        options: Mapping[str, Any] | None = None,
        *,
        settings: Settings | None = None,
        workdir: str | Path | None = None,
    ) -> None:
        if isinstance(method, Method):
            if options:
                raise TypeError("pass options only with a Method class, not an instance")
            self.method = method
        else:
            self.method = method(method.Config(**dict(options or {})))
        super().__init__(settings or Settings(), workdir)

    # ----------------------------------------------------------------------------------- pieces

    @property
    def tokenizer(self) -> Any:
        def build() -> Any:
            if self.settings.model_dir is None:
                from tunesmith.testing.models import build_tokenizer

                return build_tokenizer()
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.settings.model_dir)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            return tok

        return self._once("tokenizer", build)

    @property
    def base_dir(self) -> Path:
        if self.settings.model_dir is not None:
            return Path(self.settings.model_dir)

        def build() -> Path:
            from tunesmith.testing.models import build_random_model

            path = self.workdir / "base"
            model = build_random_model(
                self.tokenizer, seed=self.settings.seed, **self.settings.model_overrides
            )
            model.save_pretrained(path)
            self.tokenizer.save_pretrained(path)
            return path

        return self._once("base_dir", build)

    def fresh_base(self) -> Any:
        """A new copy of the base model, loaded the way the method asks (``model_load_kwargs``)."""
        import torch
        from transformers import AutoModelForCausalLM

        kwargs: dict[str, Any] = {"dtype": torch.float32}
        kwargs.update(self.method.model_load_kwargs("cpu"))
        model = AutoModelForCausalLM.from_pretrained(self.base_dir, **kwargs)
        return model.eval()

    @property
    def batch(self) -> tuple[Any, Any]:
        """The task rows as (input_ids, attention_mask), BOS first, right-padded."""

        def build() -> tuple[Any, Any]:
            import torch

            tok = self.tokenizer
            rows = [[*self._bos, *tok.encode(t, add_special_tokens=False)] for t in self._rows]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            return ids, mask

        return self._once("batch", build)

    @property
    def _bos(self) -> list[int]:
        """The BOS id to start rows with, or none (Qwen tokenizers have no BOS)."""
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None else []

    @property
    def _rows(self) -> list[str]:
        return _task_rows(self.settings.seed)

    @staticmethod
    def forward(model: Any, ids: Any, mask: Any) -> Any:
        """Logits for the input positions (methods that prepend virtual tokens return more)."""
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return logits[:, -ids.shape[1] :].float()

    def logits(self, model: Any) -> Any:
        import torch

        model.eval()
        with torch.no_grad():
            return self.forward(model, *self.batch)

    def loss(self, model: Any) -> Any:
        import torch.nn.functional as F

        ids, mask = self.batch
        logits = self.forward(model, ids, mask)[:, :-1]
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

    def max_diff(self, a: Any, b: Any) -> float:
        """Largest absolute logit difference over the real (unpadded) positions."""
        keep = self.batch[1].bool()
        return float((a - b).abs()[keep].max())

    @property
    def learning_rate(self) -> float:
        if self.settings.learning_rate is not None:
            return self.settings.learning_rate
        return max(1e-2, float(self.method.usual_learning_rates[1]))

    @property
    def trained(self) -> _Trained:
        """The method applied to a fresh base and trained on the task (shared by the checks)."""
        return self._once("trained", self._train)

    def _train(self) -> _Trained:
        import torch

        from tunesmith.hf import count_parameters

        s = self.settings
        model = self.fresh_base()
        base_logits = self.logits(model)
        base_params = [(n, p, p.detach().clone()) for n, p in model.named_parameters()]
        torch.manual_seed(s.seed)
        model = self.method.apply(model)
        frozen = [(n, p, p.detach().clone()) for n, p in model.named_parameters() if not p.requires_grad]
        trainable, total = count_parameters(model)
        with torch.no_grad():
            initial = float(self.loss(model.eval()))
        params = [p for p in model.parameters() if p.requires_grad]
        if params:
            optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=0.0)
            model.train()
            for _ in range(s.train_steps):
                loss = self.loss(model)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            final = float(self.loss(model))
        return _Trained(model, trainable, total, initial, final, base_params, frozen, base_logits)

    @property
    def trained_logits(self) -> Any:
        return self._once("trained_logits", lambda: self.logits(self.trained.model))

    @property
    def saved_dir(self) -> Path:
        """Where ``method.save`` wrote the trained artifact."""

        def build() -> Path:
            path = self.workdir / "artifact"
            self.method.save(self.trained.model, str(path))
            return path

        return self._once("saved_dir", build)

    @property
    def merged(self) -> Any:
        """``method.merge`` of a deep copy of the trained model (CheckSkipped if it cannot merge)."""

        def build() -> Any:
            try:
                merged = self.method.merge(copy.deepcopy(self.trained.model))
            except TunesmithError as exc:
                raise CheckSkipped(f"cannot merge: {exc}") from None
            return merged.eval()

        return self._once("merged", build)

    # ----------------------------------------------------------------------------------- checks

    def check_loss_decreases(self) -> str:
        t, s = self.trained, self.settings
        detail = (
            f"eval loss {t.initial_loss:.3f} -> {t.final_loss:.3f} after {s.train_steps} AdamW steps "
            f"(lr {self.learning_rate:g}) on {len(self._rows)} copy rows; required <= {s.loss_ratio:g} x initial"
        )
        if t.trainable == 0:
            raise CheckFailed(f"no parameter requires grad, nothing trains; {detail}")
        if not t.final_loss <= s.loss_ratio * t.initial_loss:  # also catches NaN
            raise CheckFailed(f"loss did not decrease enough: {detail}")
        return detail

    def check_trainable_parameters(self) -> str:
        t = self.trained
        detail = f"{t.trainable:,} trainable of {t.total:,} ({100 * t.trainable / max(t.total, 1):.2f}%)"
        if t.trainable <= 0:
            raise CheckFailed(f"no parameter requires grad: {detail}")
        if self.method.produces_adapter and t.trainable >= t.total:
            raise CheckFailed(
                f"the method says it produces an adapter (produces_adapter=True) but trains every "
                f"parameter: {detail}"
            )
        expected_fn = getattr(self.method, "expected_trainable", None)
        if callable(expected_fn):
            expected = int(expected_fn(self.fresh_base()))
            if expected != t.trainable:
                raise CheckFailed(
                    f"{t.trainable:,} parameters require grad but the method's expected_trainable() says "
                    f"{expected:,} ({detail})"
                )
            detail += f"; equals expected_trainable() = {expected:,}"
        else:
            detail += "; the method has no expected_trainable() to compare with"
        return detail

    def check_base_unchanged(self) -> str:
        import torch

        t = self.trained
        adapter = self.method.produces_adapter
        watched = {id(p): (n, p, before) for n, p, before in t.frozen_params}
        if adapter:
            watched.update({id(p): (n, p, before) for n, p, before in t.base_params})
        if not watched:
            raise CheckSkipped("the method trains every parameter; there is no frozen weight to compare")
        changed = [n for n, p, before in watched.values() if not torch.equal(p.detach(), before)]
        what = "base-model and frozen" if adapter else "frozen"
        if changed:
            names = ", ".join(changed[:5]) + (", ..." if len(changed) > 5 else "")
            raise CheckFailed(
                f"{len(changed)} of {len(watched)} {what} parameter tensors changed in training: {names}"
            )
        return f"all {len(watched)} {what} parameter tensors are bit-for-bit unchanged after training"

    def check_save_reload(self) -> str:
        atol = self.settings.logits_atol
        moved = self.max_diff(self.trained_logits, self.trained.base_logits)
        if not moved > 10 * atol:
            raise CheckFailed(
                f"training did not change the logits (max |diff| vs the base model {moved:.2e}), so a "
                "reload cannot be told apart from the base model"
            )
        reloaded = self.method.load(self.fresh_base(), str(self.saved_dir))
        diff = self.max_diff(self.logits(reloaded), self.trained_logits)
        detail = (
            f"reloaded vs trained logits: max |diff| {diff:.2e} (atol {atol:g}); trained vs base: {moved:.2e}"
        )
        if not diff <= atol:
            raise CheckFailed(f"method.load(fresh base, method.save output) changes the model: {detail}")
        return detail

    def check_generate(self) -> str:
        import torch

        s, tok, model = self.settings, self.tokenizer, self.trained.model
        words = [row.split(" ")[0] for row in self._rows[:3]]
        texts = [f"{word} {word[:i]}" for i, word in enumerate(words)]  # 3 prompts, 3 lengths
        prompts = [[*self._bos, *tok.encode(t, add_special_tokens=False)] for t in texts]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        model.eval()
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=s.max_new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        if out.shape[1] < width or not torch.equal(out[:, :width], ids):
            raise CheckFailed(
                f"generate() did not return the prompts followed by new tokens: shape {out.shape}"
            )
        problems, compared, ties = [], 0, 0
        for row, prompt in enumerate(prompts):
            new = out[row, width:].tolist()
            if tok.eos_token_id in new:
                new = new[: new.index(tok.eos_token_id) + 1]
            if not new:
                problems.append(f"row {row}: no token generated")
                continue
            full = torch.tensor([prompt + new])
            with torch.no_grad():
                logits = self.forward(model, full, torch.ones_like(full))[0, len(prompt) - 1 : -1]
            for step, (token, scores) in enumerate(zip(new, logits, strict=True)):
                compared += 1
                best = int(scores.argmax())
                if best == token:
                    continue
                if float(scores[best] - scores[token]) <= s.tie_atol:
                    ties += 1
                    continue
                problems.append(
                    f"row {row} step {step}: generate gave {token} ({tok.decode([token])!r}), teacher "
                    f"forcing gives {best} ({tok.decode([best])!r}), logit gap {float(scores[best] - scores[token]):.3f}"
                )
        detail = (
            f"{compared} generated tokens ({len(prompts)} left-padded prompts, greedy, use_cache=True, "
            f"max_new_tokens={s.max_new_tokens}) vs teacher-forced argmax: {len(problems)} mismatches, "
            f"{ties} ties within {s.tie_atol:g}"
        )
        if problems:
            raise CheckFailed(f"{detail}: " + "; ".join(problems[:4]))
        return detail

    def check_merge(self) -> str:
        merged, atol = self.merged, self.settings.merge_atol
        peft_model: tuple[type, ...]
        try:
            from peft import PeftModel

            peft_model = (PeftModel,)
        except ImportError:  # pragma: no cover - peft is a dependency
            peft_model = ()
        from transformers import PreTrainedModel

        if isinstance(merged, peft_model) or not isinstance(merged, PreTrainedModel):
            raise CheckFailed(f"merge() must return a plain transformers model, got {type(merged).__name__}")
        diff = self.max_diff(self.logits(merged), self.trained_logits)
        detail = f"merged vs unmerged logits: max |diff| {diff:.2e} (atol {atol:g})"
        if not diff <= atol:
            raise CheckFailed(f"merging changes the model: {detail}")
        return detail

    def check_merge_reload(self) -> str:
        from transformers import AutoModelForCausalLM

        merged, atol = self.merged, self.settings.logits_atol
        path = self.workdir / "merged"
        merged.save_pretrained(path)
        reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
        merged_logits = self.logits(merged)
        diff = self.max_diff(self.logits(reloaded), merged_logits)
        vs_trained = self.max_diff(merged_logits, self.trained_logits)
        detail = (
            f"AutoModelForCausalLM.from_pretrained(merged.save_pretrained output) vs merged logits: "
            f"max |diff| {diff:.2e} (atol {atol:g}); merged vs unmerged: {vs_trained:.2e}"
        )
        if not diff <= atol:
            raise CheckFailed(f"the saved merged model does not reload as it was: {detail}")
        return detail

    def check_peft_adapter(self) -> str:
        if not self.method.produces_adapter:
            raise CheckSkipped("the method does not produce a PEFT adapter (produces_adapter=False)")
        from peft import PeftModel

        atol = self.settings.logits_atol
        reloaded = PeftModel.from_pretrained(self.fresh_base(), str(self.saved_dir))
        diff = self.max_diff(self.logits(reloaded), self.trained_logits)
        detail = f"PeftModel.from_pretrained(fresh base, artifact) vs trained logits: max |diff| {diff:.2e} (atol {atol:g})"
        if not diff <= atol:
            raise CheckFailed(f"the artifact does not load as a stock PEFT adapter: {detail}")
        return detail


def check_method(
    method: type[Method] | Method,
    options: Mapping[str, Any] | None = None,
    *,
    checks: Iterable[str] | None = None,
    skip: Mapping[str, str] | None = None,
    xfail: Mapping[str, str] | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> list[CheckResult]:
    """Run the conformance checks on ``method`` (a class with ``options``, or an instance).

    ``checks`` picks a subset (default: all of :data:`CHECKS`, in order); ``skip`` / ``xfail`` map a
    check name to a reason; keyword ``overrides`` change :class:`Settings` fields (``train_steps=50``).
    Returns one :class:`CheckResult` per check; nothing raises for a non-conforming method.
    """
    settings = dataclasses.replace(settings or Settings(), **overrides)
    with Conformance(method, options, settings=settings) as run:
        return run.results(checks, skip=skip, xfail=xfail)


# ------------------------------------------------------------------------------------- pytest

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the class below
    pytest = None  # type: ignore[assignment]


if pytest is not None:

    class MethodConformance:
        """Subclass as ``Test...`` and set ``method`` (and ``options``): pytest collects one test per check.

        Class attributes: ``method``, ``options``, ``skip`` / ``xfail`` (check name -> reason; an
        xfail check that passes fails, so stale entries are noticed), and every :class:`Settings` field
        (``model_overrides``, ``seed``, ``train_steps``, ``learning_rate``, ``loss_ratio``,
        ``logits_atol``, ``merge_atol``, ``tie_atol``, ``max_new_tokens``, ``threads``). The model is built, trained
        and saved once per class (the class-scoped ``conformance`` fixture).
        """

        method: ClassVar[type[Method] | None] = None
        options: ClassVar[Mapping[str, Any]] = {}
        skip: ClassVar[Mapping[str, str]] = {}
        xfail: ClassVar[Mapping[str, str]] = {}

        model_overrides: ClassVar[dict[str, Any]] = SMALL_MODEL
        seed: ClassVar[int] = Settings.seed
        train_steps: ClassVar[int] = Settings.train_steps
        learning_rate: ClassVar[float | None] = Settings.learning_rate
        loss_ratio: ClassVar[float] = Settings.loss_ratio
        logits_atol: ClassVar[float] = Settings.logits_atol
        merge_atol: ClassVar[float] = Settings.merge_atol
        tie_atol: ClassVar[float] = Settings.tie_atol
        max_new_tokens: ClassVar[int] = Settings.max_new_tokens
        threads: ClassVar[int | None] = Settings.threads
        model_dir: ClassVar[str | Path | None] = None

        @classmethod
        def conformance_settings(cls) -> Settings:
            values = {f.name: getattr(cls, f.name) for f in dataclasses.fields(Settings)}
            values["model_overrides"] = dict(values["model_overrides"])
            return Settings(**values)

        @pytest.fixture(scope="class")
        @classmethod
        def conformance(cls, tmp_path_factory: Any) -> Any:
            if cls.method is None:
                raise TypeError(f"{cls.__name__}: set `method = YourMethodClass` on the test class")
            workdir = tmp_path_factory.mktemp(f"conformance-{cls.method.name or cls.__name__}")
            run = Conformance(cls.method, cls.options, settings=cls.conformance_settings(), workdir=workdir)
            yield run
            run.close()

        def _check(self, conformance: Conformance, name: str) -> None:
            pytest_check(type(self), conformance, name, f"method '{conformance.method.name}'")

        def test_loss_decreases(self, conformance: Conformance) -> None:
            self._check(conformance, "loss_decreases")

        def test_trainable_parameters(self, conformance: Conformance) -> None:
            self._check(conformance, "trainable_parameters")

        def test_base_unchanged(self, conformance: Conformance) -> None:
            self._check(conformance, "base_unchanged")

        def test_save_reload(self, conformance: Conformance) -> None:
            self._check(conformance, "save_reload")

        def test_generate(self, conformance: Conformance) -> None:
            self._check(conformance, "generate")

        def test_merge(self, conformance: Conformance) -> None:
            self._check(conformance, "merge")

        def test_merge_reload(self, conformance: Conformance) -> None:
            self._check(conformance, "merge_reload")

        def test_peft_adapter(self, conformance: Conformance) -> None:
            self._check(conformance, "peft_adapter")

else:  # pragma: no cover

    def __getattr__(name: str) -> Any:
        if name == "MethodConformance":
            raise ImportError("tunesmith.testing.MethodConformance needs pytest: pip install pytest")
        raise AttributeError(name)


__all__ = [
    "CHECKS",
    "SMALL_MODEL",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "Conformance",
    "MethodConformance",
    "Settings",
    "check_method",
    "format_results",
]
