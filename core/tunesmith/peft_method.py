"""A base for methods backed by PEFT: one ``peft_config`` gives wrap, save, load and merge."""

from __future__ import annotations

from typing import Any, ClassVar

from tunesmith.components import Method
from tunesmith.errors import TunesmithError


class PeftMethod(Method):
    """A :class:`tunesmith.Method` whose model is a PEFT model built from :meth:`peft_config`.

    ``apply`` wraps with ``peft.get_peft_model``; ``save`` writes a stock PEFT adapter (the default
    ``save_pretrained``); ``load`` is ``PeftModel.from_pretrained``; ``merge`` is ``merge_and_unload``.
    Subclasses implement :meth:`peft_config`, and may override :meth:`wrapped` to adjust the PEFT model
    after it is built or loaded (the same adjustment both times).
    """

    produces_adapter: ClassVar[bool] = True

    def peft_config(self, model: Any) -> Any:  # pragma: no cover - interface
        """The ``peft.PeftConfig`` for ``model`` (the loaded base model, for resolving targets)."""
        raise NotImplementedError

    def wrapped(self, peft_model: Any) -> Any:
        """The PEFT model as the run uses it; called after ``apply`` and ``load``. Default: unchanged."""
        return peft_model

    def apply(self, model: Any) -> Any:
        from peft import get_peft_model

        config = self.peft_config(model)
        try:
            return self.wrapped(get_peft_model(model, config))
        except ValueError as exc:  # PEFT: "Target modules ... not found in the base model"
            raise TunesmithError(f"method '{self.name}': {str(exc).splitlines()[0]}") from None

    def load(self, base_model: Any, path: str) -> Any:
        from peft import PeftModel

        return self.wrapped(PeftModel.from_pretrained(base_model, path))

    def merge(self, model: Any) -> Any:
        return model.merge_and_unload()


__all__ = ["PeftMethod"]
