"""Write the held-out demo task: rewrite an ISO date (YYYY-MM-DD) in US format (MM/DD/YYYY).

Procedural, so a model can only pass the test split by learning the rule: every date occurs in
exactly one split (disjoint slices of one shuffled list of distinct dates, asserted below).
Deterministic: rerunning rewrites byte-identical files.  Usage: python examples/dates/make_data.py
"""

import datetime
import json
import random
from pathlib import Path

SEED = 1234
SIZES = {"test": 100, "validation": 50, "train": 2000}
INSTRUCTION = "Rewrite the date in US format."
FIRST, LAST = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)


def main(out_dir: Path = Path(__file__).parent) -> None:
    days = [FIRST + datetime.timedelta(n) for n in range((LAST - FIRST).days + 1)]
    random.Random(SEED).shuffle(days)
    start, splits = 0, {}
    for name, size in SIZES.items():
        splits[name] = days[start : start + size]
        start += size
    seen: set = set()
    for dates in splits.values():
        assert seen.isdisjoint(dates), "splits overlap"
        seen.update(dates)
    for name, dates in splits.items():
        with open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for day in dates:
                record = {
                    "instruction": INSTRUCTION,
                    "input": day.isoformat(),
                    "output": day.strftime("%m/%d/%Y"),
                }
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
