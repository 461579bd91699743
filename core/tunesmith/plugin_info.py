"""What is known about one plugin, loaded or not: plain data, cheap to import (the cached listing
carries it without importing the registry)."""

from __future__ import annotations

from dataclasses import dataclass, field

BUILTIN_DISTRIBUTION = "tunesmith"


@dataclass
class PluginInfo:
    """What is known about one plugin, loaded or not."""

    name: str
    distribution: str
    version: str
    module: str
    status: str = "ok"  # ok | failed | disabled
    stage: str | None = None  # import | validate | register
    error: str | None = None
    problems: list[str] = field(default_factory=list)  # non-fatal: rejected components, ...
    components: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    commands: list[str] = field(default_factory=list)  # CLI commands it added (register_commands)

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION
