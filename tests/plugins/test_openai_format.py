"""OpenAI's fine-tuning format: per-message weights, tool calling rendered by real chat templates, the
preference layout, and OpenAI's validation errors reported per line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from families import FAMILIES, TEMPLATE_FAMILIES, build_tokenizer

from tunesmith import Example, InvalidRecord, Record
from tunesmith.data import IGNORE_INDEX, tokenize_example
from tunesmith_plugins.formatters import ChatFormatter, PreferenceFormatter

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "openai"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
#: Nine alphanumeric characters: Mistral v3's template refuses any other tool call id.
CALL_ID = "call12345"


def tool_chat(**extra: Any) -> dict[str, Any]:
    """A conversation with a context-only turn (weight 0), a tool call, its result and the final answer."""
    return {
        "messages": [
            {"role": "system", "content": "You report the weather."},
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello! Ask me about weather.", "weight": 0},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": CALL_ID,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": CALL_ID, "content": "18C and sunny"},
            {"role": "assistant", "content": "It is 18C and sunny in Paris.", "weight": 1},
        ],
        "tools": TOOLS,
        **extra,
    }


def fmt(formatter: Any, fields: dict[str, Any]) -> Example:
    return formatter.format(Record(fields, "t.jsonl:1"))


# ---------------------------------------------------------------------------------------- formatting


def test_openai_chat_becomes_template_ready_messages() -> None:
    example = fmt(ChatFormatter(), tool_chat(parallel_tool_calls=False))
    assert example.tools == TOOLS
    assert example.messages is not None
    context, call, result = example.messages[2], example.messages[4], example.messages[5]
    assert context == {"role": "assistant", "content": "Hello! Ask me about weather.", "trained": False}
    # OpenAI's JSON-string arguments become the object templates render (else they would be quoted twice).
    assert call == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": CALL_ID,
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    }
    assert result == {"role": "tool", "content": "18C and sunny", "tool_call_id": CALL_ID}
    assert "trained" not in example.messages[-1]


def test_text_content_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Paris?"}]
    example = fmt(
        ChatFormatter(),
        {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "Sunny."}]},
    )
    assert example.messages and example.messages[0]["content"] == "Weather in Paris?"
    with pytest.raises(InvalidRecord) as info:
        fmt(ChatFormatter(), {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})
    assert info.value.field == "messages[0].content[0]" and "'image_url' part" in info.value.message


def test_tool_turns_inside_the_alternation() -> None:
    """With alternate on, tool results must follow the call and the assistant speaks after them."""
    chat = tool_chat()
    chat["messages"][5:6] = []  # the call is left unanswered, the assistant answers anyway
    with pytest.raises(InvalidRecord) as info:
        fmt(ChatFormatter(), chat)
    assert info.value.field == "messages[5].role" and "turn 4 calls tools" in info.value.message
    chat = tool_chat()
    chat["messages"].insert(4, {"role": "tool", "tool_call_id": CALL_ID, "content": "early"})
    with pytest.raises(InvalidRecord) as info:
        fmt(ChatFormatter(), chat)
    # The tool result comes before any call: no call answers it.
    assert info.value.field == "messages[4].tool_call_id"


def test_openai_preference_pairs() -> None:
    record = {
        "input": {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"},
            ]
        },
        "preferred_output": [{"role": "assistant", "content": "Paris."}],
        "non_preferred_output": [{"role": "assistant", "content": "It might be Lyon."}],
    }
    example = fmt(PreferenceFormatter(), record)
    assert example == Example(
        prompt=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ],
        chosen="Paris.",
        rejected="It might be Lyon.",
    )
    assert example.kind == "preference"
    # The TRL-style layout is unchanged.
    assert (
        fmt(PreferenceFormatter(), {"prompt": "Capital?", "chosen": "Paris.", "rejected": "Lyon."}).chosen
        == "Paris."
    )


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"input": []}, "input", "expected an object with a messages list"),
        ({"input": {"messages": []}}, "input.messages", "empty conversation"),
        (
            {"input": {"messages": [{"role": "user", "content": "q"}], "tool": []}},
            "input.tool",
            "unrecognized key",
        ),
        (
            {"input": {"messages": [{"rol": "user", "content": "q"}]}},
            "input.messages[0].rol",
            "did you mean 'role'?",
        ),
        ({"non_preferred_output": None}, "non_preferred_output", "missing"),
        (
            {"non_preferred_output": [{"role": "user", "content": "x"}]},
            "non_preferred_output[0].role",
            "assistant",
        ),
        (
            {"non_preferred_output": [{"role": "assistant", "content": "Paris."}]},
            "non_preferred_output",
            "identical",
        ),
    ],
)
def test_openai_preference_errors(change: dict[str, Any], field: str, message: str) -> None:
    record = {
        "input": {"messages": [{"role": "user", "content": "Capital of France?"}]},
        "preferred_output": [{"role": "assistant", "content": "Paris."}],
        "non_preferred_output": [{"role": "assistant", "content": "Lyon."}],
        **change,
    }
    with pytest.raises(InvalidRecord) as info:
        fmt(PreferenceFormatter(), record)
    assert info.value.field == field and message in info.value.message


def test_a_preference_record_given_to_the_chat_formatter_says_so() -> None:
    with pytest.raises(InvalidRecord) as info:
        fmt(ChatFormatter(), {"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []})
    assert info.value.field == "messages" and "preference formatter" in info.value.message


# ------------------------------------------------------------------------- masking on real templates

TOOL_FAMILIES = ["qwen2.5", "qwen3", "llama-3.1", "llama-3.2", "mistral-v3"]


def trained_text(rows: list[Any], tokenizer: Any) -> str:
    """Every trained token of every training sequence, decoded (labels shift inside the model)."""
    ids = [
        t for row in rows for t, label in zip(row.input_ids, row.labels, strict=True) if label != IGNORE_INDEX
    ]
    return tokenizer.decode(ids, skip_special_tokens=False)


@pytest.mark.parametrize("family", TOOL_FAMILIES)
def test_tool_calls_are_trained_and_tool_results_are_not(family: str) -> None:
    tokenizer = build_tokenizer(FAMILIES[family])
    example = fmt(ChatFormatter(), tool_chat())
    rows = tokenize_example(example, tokenizer, max_length=4096)
    trained = trained_text(rows, tokenizer)
    # The call as the template renders it (Qwen: "arguments", Llama 3.1: "parameters"), arguments an object.
    assert '"name": "get_weather"' in trained
    assert '{"city": "Paris"}' in trained and '\\"city\\"' not in trained
    assert "It is 18C and sunny in Paris." in trained
    # The tool result and the weight-0 turn are context: in the input, never trained.
    assert "18C and sunny\n" not in trained and '"18C and sunny"' not in trained and "sunny, " not in trained
    assert "Hello! Ask me about weather." not in trained
    everything = "".join(tokenizer.decode(row.input_ids) for row in rows)
    assert "18C and sunny" in everything and "Hello! Ask me about weather." in everything
    assert (
        "get_weather" in tokenizer.decode(rows[0].input_ids).split("Weather in Paris?")[0]
    )  # tool definitions


@pytest.mark.parametrize("family", ["qwen2.5", "llama-3.1"])
def test_weight_zero_masks_exactly_that_turn(family: str) -> None:
    """Against the same chat with every turn trained: same tokens, the same labels everywhere except
    the weight-0 turn, whose labels are all masked."""
    tokenizer = build_tokenizer(FAMILIES[family])
    weighted = fmt(ChatFormatter(), tool_chat())
    plain = tool_chat()
    for message in plain["messages"]:
        message.pop("weight", None)
    everything = fmt(ChatFormatter(), plain)
    (a,) = tokenize_example(weighted, tokenizer, max_length=4096)
    (b,) = tokenize_example(everything, tokenizer, max_length=4096)
    assert a.input_ids == b.input_ids
    differ = [i for i, (x, y) in enumerate(zip(a.labels, b.labels, strict=True)) if x != y]
    assert differ and all(a.labels[i] == IGNORE_INDEX for i in differ)
    assert tokenizer.decode([b.input_ids[i] for i in differ]).startswith("Hello! Ask me about weather.")


@pytest.mark.parametrize("family", sorted(set(TEMPLATE_FAMILIES) - set(TOOL_FAMILIES)))
def test_a_template_without_tool_support_is_refused_per_record(family: str) -> None:
    """Never trained silently without its calls: the template either raises on the tool turns (Gemma,
    Mixtral) or drops them, which is caught."""
    tokenizer = build_tokenizer(FAMILIES[family])
    with pytest.raises(InvalidRecord) as info:
        tokenize_example(fmt(ChatFormatter(), tool_chat()), tokenizer, max_length=4096)
    if "rejected this conversation" not in info.value.message:
        assert "does not render tools or tool calls" in info.value.message and "qwen2.5" in info.value.message


def test_the_evaluation_prompt_carries_the_tools() -> None:
    from tunesmith.data import render_prompt

    tokenizer = build_tokenizer(FAMILIES["qwen2.5"])
    prompt = render_prompt(tokenizer, fmt(ChatFormatter(), tool_chat()))
    assert "<tools>" in prompt and prompt.endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_evaluators_prompt_with_the_tools_training_offered() -> None:
    """Perplexity and generation score a tool chat with its tool definitions in the prompt."""
    from tunesmith.evaluation import to_eval_examples

    tokenizer = build_tokenizer(FAMILIES["qwen2.5"])
    (example,) = to_eval_examples([fmt(ChatFormatter(), tool_chat())], tokenizer)
    system_turn = example.prompt.split("<|im_end|>")[0]
    assert "<tools>" in system_turn and '"get_weather"' in system_turn


# ------------------------------------------------------------------------- validation, per line

#: Line of tests/data/bad/openai_errors.jsonl -> (field, what the message says); OpenAI's error kind in
#: the comment. Line 1 is a valid tool-calling chat.
OPENAI_ERRORS = {
    2: ("messages", "missing"),  # missing_messages_list
    3: ("messages[0].content", "missing"),  # message_missing_key
    4: ("messages[1].wieght", "did you mean 'weight'?"),  # message_unrecognized_key
    5: ("messages[0].role", "did you mean 'user'?"),  # unrecognized_role
    6: ("messages[1].content", "empty completion"),  # missing_content
    7: ("messages", "no assistant turn"),  # example_missing_assistant_message
    8: ("messages[1].weight", "weight must be 0 or 1"),
    9: ("messages[1].tool_calls[0].function.arguments", "not valid JSON"),
    10: ("messages[2].tool_call_id", "matches no earlier tool call"),
    11: ("messages[1].tool_calls[0].function.name", "did you mean 'get_weather'?"),
    12: ("messages[1].tool_calls[0].id", "missing"),
    13: ("messages[1].function_call", "deprecated function-calling format"),
    14: ("messages", "every assistant turn has weight 0"),
    15: ("messages[0].weight", "only assistant messages carry a weight"),
}


def test_openai_validation_errors_name_line_and_field(run_config, tmp_path) -> None:
    from click.testing import CliRunner

    from tunesmith.cli import cli
    from tunesmith.plugins import Plugins

    name = "openai_errors.jsonl"
    shutil.copy(BAD / name, tmp_path / name)
    config = run_config(
        data={"train": {"name": "jsonl", "path": str(tmp_path / name)}, "max_length": 1024},
        formatter="chat",
        template={"chat_template": "qwen2.5"},
    )
    result = CliRunner().invoke(cli, ["data", "check", str(config)], obj=Plugins(), catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = {int(n): text for n, text in re.findall(rf"{name}:(\d+): (.*)", result.output)}
    assert sorted(lines) == sorted(OPENAI_ERRORS), result.output
    for number, (field, message) in OPENAI_ERRORS.items():
        assert f"field '{field}'" in lines[number] and message in lines[number], lines[number]


def test_the_valid_tool_chat_line_is_valid() -> None:
    first = json.loads((BAD / "openai_errors.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert fmt(ChatFormatter(), first).tools


# ------------------------------------------------------------------------------ the shipped examples


def _cli(*args: str):
    from click.testing import CliRunner

    from tunesmith.cli import cli
    from tunesmith.plugins import Plugins

    return CliRunner().invoke(cli, list(args), obj=Plugins(), catch_exceptions=False)


@pytest.mark.parametrize("config", ["sft.yaml", "dpo.yaml"])
def test_the_openai_examples_pass_data_check(config, monkeypatch) -> None:
    monkeypatch.chdir(EXAMPLES.parents[1])
    result = _cli("data", "check", f"examples/openai/{config}")
    assert result.exit_code == 0, result.output
    assert "data OK" in result.output


def test_the_example_files_are_what_make_data_writes(tmp_path) -> None:
    import runpy

    runpy.run_path(str(EXAMPLES / "make_data.py"))["main"](tmp_path)
    for path in sorted(tmp_path.glob("*.jsonl")):
        assert path.read_bytes() == (EXAMPLES / path.name).read_bytes(), path.name


@pytest.mark.slow
@pytest.mark.parametrize("config", ["sft.yaml", "dpo.yaml"])
def test_the_openai_examples_run(config, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(EXAMPLES.parents[1])
    args = ["--set", "training.max_steps=2", "--set", f"output_dir={tmp_path}/{{name}}"]
    result = _cli("run", f"examples/openai/{config}", *args)
    assert result.exit_code == 0, result.output
    assert (next(tmp_path.iterdir()) / "final" / "adapter_model.safetensors").is_file()
