"""LoRA through PEFT: low-rank updates beside frozen weights; the artifact is a stock PEFT adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tunesmith import Method, PeftMethod, Register, TunesmithError, hookimpl, option
from tunesmith_plugins.methods.targets import coverage, expert_parameters, linear_leaves, routers


class Lora(PeftMethod):
    """LoRA: train low-rank matrices A·B added to frozen linear layers (Hu et al., 2021).

    Saves a PEFT adapter (adapter_config.json + adapter_model.safetensors) that loads with
    PeftModel.from_pretrained and merges into the base weights with `tunesmith merge`.
    """

    name = "lora"
    default = True
    #: Whether the method can adapt 3-D MoE expert parameters (PEFT's ParamWrapper; not with DoRA).
    adapts_experts: ClassVar[bool] = True
    default_learning_rate: ClassVar[float] = 2e-4
    usual_learning_rates: ClassVar[tuple[float, float]] = (5e-5, 1e-3)

    @dataclass
    class Config:
        r: int = option(16, minimum=1, help="Rank of the update matrices")
        alpha: int = option(
            32, exclusive_minimum=0, help="Scaling numerator: updates are scaled by alpha / r"
        )
        dropout: float = option(0.05, minimum=0, exclusive_maximum=1, help="Dropout on the LoRA input")
        target_modules: list[str] | str = option(
            "all-linear",
            help="Modules to adapt: 'all-linear' or a list of names/regex (e.g. [q_proj, v_proj])",
        )
        bias: str = option("none", help="Train biases too: none, all or lora_only")
        use_rslora: bool = option(False, help="Rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski, 2023)")
        modules_to_save: list[str] | None = option(
            None, help="Extra modules trained fully and saved with the adapter (e.g. [lm_head, embed_tokens])"
        )
        target_parameters: list[str] | None = option(
            None,
            help="MoE: 3-D expert parameters to adapt, e.g. [mlp.experts.gate_up_proj, mlp.experts.down_proj] "
            "(with target_modules: [] only the experts train); default: every expert parameter when "
            "target_modules is all-linear",
        )
        router: bool = option(False, help="MoE: also adapt the router (mlp.gate); usually left frozen")

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.changes: list[str] = []

    def peft_config(self, model: Any = None) -> Any:
        """The PEFT config; for a sequence classifier (a reward model) the task is SEQ_CLS and the new,
        randomly initialised head (``score``) trains fully and is saved with the adapter."""
        from peft import LoraConfig, TaskType

        from tunesmith.hf import classification_head, is_sequence_classifier

        c = self.config
        task_type, modules_to_save = TaskType.CAUSAL_LM, c.modules_to_save
        targets, parameters = self._targets(model)
        dropout = c.dropout
        if parameters and dropout:
            self.changes.append(
                f"dropout {dropout:g} -> 0: PEFT applies no dropout to expert parameters (ParamWrapper)"
            )
            dropout = 0.0
        if model is not None and is_sequence_classifier(model):
            task_type = TaskType.SEQ_CLS
            head = classification_head(model)
            if head and head not in (modules_to_save or []):
                modules_to_save = [*(modules_to_save or []), head]
        return LoraConfig(
            task_type=task_type,
            r=c.r,
            lora_alpha=c.alpha,
            lora_dropout=dropout,
            target_modules=targets,
            target_parameters=parameters or None,
            bias=c.bias,
            use_rslora=c.use_rslora,
            modules_to_save=modules_to_save,
        )

    def _targets(self, model: Any) -> tuple[Any, list[str]]:
        """``(target_modules, target_parameters)``; on an MoE model ``all-linear`` is resolved here (see
        :mod:`tunesmith_plugins.methods.targets`) so the router stays out unless asked for."""
        c = self.config
        targets, parameters = c.target_modules, list(c.target_parameters or [])
        experts = expert_parameters(model) if model is not None else []
        if experts and targets == "all-linear":
            head = ("lm_head", "score", "classifier")
            targets = linear_leaves(model, exclude=head)
            if c.target_parameters is None and self.adapts_experts:
                parameters = experts
            elif c.target_parameters is None:
                self.changes.append(
                    f"the 3-D expert parameters ({', '.join(experts)}) stay frozen: method '{self.name}' "
                    "cannot adapt them (PEFT's ParamWrapper)"
                )
        if experts and c.router:
            parameters += routers(model)
        if parameters and not self.adapts_experts:
            raise TunesmithError(
                f"method '{self.name}' cannot adapt expert parameters ({', '.join(parameters)}): PEFT's "
                "ParamWrapper does not support it; use method 'lora', or leave target_parameters unset"
            )
        return targets, parameters

    def apply(self, model: Any) -> Any:
        self.changes = []
        return super().apply(model)

    def report(self, model: Any) -> tuple[list[str], list[str]]:
        explicit = self.config.target_modules != "all-linear" or any("stay frozen" in c for c in self.changes)
        notes, warnings = coverage(self.name, model, explicit=explicit)
        return notes, [*self.changes, *warnings]


@hookimpl
def register_methods(register: Register[Method]) -> None:
    register(Lora)
