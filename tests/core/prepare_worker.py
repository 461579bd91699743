"""Prepares a run config's data as one process of ``torchrun`` (a gloo group), as a run does.

``python prepare_worker.py CONFIG OUT_DIR`` writes ``OUT_DIR/rank<r>.json``: whether this process
prepared the data or read it from the cache, its training rows, or the error it raised.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(config: Path, out_dir: Path) -> None:
    import torch

    torch.distributed.init_process_group("gloo")
    from tunesmith.config import load_config
    from tunesmith.errors import TunesmithError
    from tunesmith.plugins import Plugins
    from tunesmith.prepare import prepare, training_rows
    from tunesmith.ui import Quiet

    plugins = Plugins()
    resolved = load_config(config, [], plugins)
    try:
        prepared, _ = prepare(resolved, Quiet(), plugins)
        record = {
            "cache": prepared.cache,
            "rows": [dict(r) for r in training_rows(resolved, prepared.tokenized["train"])],
        }
    except TunesmithError as e:
        record = {"error": e.message, "details": e.details}
    rank = os.environ["RANK"]
    (out_dir / f"rank{rank}.json").write_text(json.dumps(record), encoding="utf-8")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
