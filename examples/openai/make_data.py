"""Write the OpenAI-format example data: files exactly as OpenAI's fine-tuning API takes them.

- ``tools_train.jsonl`` / ``tools_test.jsonl`` (supervised, with tool calling): a weather assistant. The
  user asks about a city; the assistant calls ``get_weather`` with the city, reads the tool's result and
  answers from it. One conversation in four opens with small talk whose assistant reply has
  ``weight: 0`` (context, not trained). Arguments are JSON strings, as OpenAI writes them.
- ``preferences_train.jsonl`` / ``preferences_test.jsonl`` (DPO): echo a made-up word, ending it with
  "." when the request says (calm) and "!" when it says (excited); the preferred output has the right
  ending, the non-preferred one the other.

Cities, temperatures and words in the test files never occur in the training files. Deterministic:
rerunning rewrites byte-identical files.  Usage: python examples/openai/make_data.py
"""

import json
import random
from pathlib import Path

SEED = 7
SYSTEM = "Answer weather questions with get_weather."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
SKIES = ["sunny", "cloudy", "rainy", "windy", "foggy"]
LETTERS = "abcdefghiklmnoprstuvw"


def made_up_words(rng: random.Random, n: int) -> list[str]:
    words: list[str] = []
    while len(words) < n:
        word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(4, 7)))
        if word not in words:
            words.append(word)
    return words


def weather_chat(rng: random.Random, index: int, city: str) -> dict:
    call_id = f"call{index:05d}"
    temperature, sky = rng.randint(-9, 35), rng.choice(SKIES)
    messages: list[dict] = [{"role": "system", "content": SYSTEM}]
    if index % 4 == 0:
        messages += [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hi! Which city?", "weight": 0},
        ]
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
    }
    messages += [
        {"role": "user", "content": f"Weather in {city}?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {
            "role": "tool",
            "tool_call_id": call_id,
            "content": json.dumps({"temperature": temperature, "sky": sky}),
        },
        {"role": "assistant", "content": f"{city}: {temperature}C, {sky}."},
    ]
    return {"messages": messages, "tools": TOOLS, "parallel_tool_calls": False}


def preference(word: str, tone: str) -> dict:
    right, wrong = (".", "!") if tone == "calm" else ("!", ".")
    return {
        "input": {"messages": [{"role": "user", "content": f"Echo the word ({tone}).\n\n{word}"}]},
        "preferred_output": [{"role": "assistant", "content": word + right}],
        "non_preferred_output": [{"role": "assistant", "content": word + wrong}],
    }


def write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def main(out: Path = Path(__file__).parent) -> None:
    rng = random.Random(SEED)
    cities = [w.capitalize() for w in made_up_words(rng, 220)]
    train = [weather_chat(rng, i, city) for i, city in enumerate(cities[:200])]
    test = [weather_chat(rng, 1000 + i, city) for i, city in enumerate(cities[200:])]
    write(out / "tools_train.jsonl", train)
    write(out / "tools_test.jsonl", test)

    words = made_up_words(rng, 440)
    pairs = [preference(word, "calm" if i % 2 else "excited") for i, word in enumerate(words)]
    write(out / "preferences_train.jsonl", pairs[:400])
    write(out / "preferences_test.jsonl", pairs[400:])


if __name__ == "__main__":
    main()
