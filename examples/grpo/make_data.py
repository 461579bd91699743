"""Write the GRPO demo task: repeat a short random word (prompts with reference answers).

Procedural and deterministic; every word occurs in exactly one split. Usage:
python examples/grpo/make_data.py
"""

import json
import random
from pathlib import Path

SEED = 7
SIZES = {"test": 32, "train": 256}


def main(out_dir: Path = Path(__file__).parent) -> None:
    rng = random.Random(SEED)
    words: list[str] = []
    while len(words) < sum(SIZES.values()):
        word = "".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(3, 6)))
        if word not in words:
            words.append(word)
    start = 0
    for name, size in SIZES.items():
        rows = [{"prompt": f"Repeat: {w}", "answer": w} for w in words[start : start + size]]
        start += size
        (out_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main()
