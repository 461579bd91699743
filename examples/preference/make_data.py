"""Write the preference demo: echo a word and end it with the punctuation its tone asks for.

Each prompt is "Echo the word (calm)." or "Echo the word (excited)." followed by a made-up word. The
preferred answer is the word ending in "." for calm and "!" for excited; the rejected one swaps them.

- ``sft.jsonl`` (Alpaca records) teaches the task's format with the punctuation chosen at random,
  independently of the tone, so the SFT model echoes words but has no reason to prefer either ending:
  on the balanced test pairs it sits near chance.
- ``train.jsonl`` and ``test.jsonl`` are preference pairs (prompt, chosen, rejected); DPO on the first
  must learn to read the tone, which ``test.jsonl`` measures on words it never saw.

Every word occurs in exactly one file (asserted). Deterministic: rerunning rewrites byte-identical
files.  Usage: python examples/preference/make_data.py
"""

import json
import random
from pathlib import Path

SEED = 1234
SIZES = {"test": 100, "train": 600, "sft": 1000}
LETTERS = "abcdefghijklmnoprstuvw"
TONES = {"calm": ".", "excited": "!"}


def instruction(tone: str) -> str:
    return f"Echo the word ({tone})."


def main(out_dir: Path = Path(__file__).parent) -> None:
    rng = random.Random(SEED)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < sum(SIZES.values()):
        word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 6)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    start, splits = 0, {}
    for name, size in SIZES.items():
        splits[name] = words[start : start + size]
        start += size
    assert len({w for ws in splits.values() for w in ws}) == sum(SIZES.values()), "splits overlap"
    for name, split_words in splits.items():
        with open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for i, word in enumerate(split_words):
                tone = ("calm", "excited")[i % 2]  # balanced: a model with one fixed habit scores 0.5
                if name == "sft":
                    ending = rng.choice(list(TONES.values()))  # independent of the tone
                    record = {"instruction": instruction(tone), "input": word, "output": word + ending}
                else:
                    good = TONES[tone]
                    bad = next(p for p in TONES.values() if p != good)
                    record = {
                        "prompt": f"{instruction(tone)}\n\n{word}",
                        "chosen": word + good,
                        "rejected": word + bad,
                    }
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
