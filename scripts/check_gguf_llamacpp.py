"""Check an exported GGUF with llama.cpp itself: greedy tokens from llama-cpp-python against transformers.

tunesmith's tests read the GGUF back with the ``gguf`` package (tensors, metadata) but do not run llama.cpp:
llama-cpp-python builds llama.cpp from source when installed, which the test machines do not do. Where it
is installed (``pip install llama-cpp-python``), this script closes the loop:

    tunesmith export runs/my-run --quant f32
    python scripts/check_gguf_llamacpp.py runs/my-run/gguf/my-run-f32.gguf runs/my-run

It merges the run (``tunesmith merge``) unless given a model directory, renders a few prompts with the
run's chat template, tokenizes them with the HF tokenizer (and checks llama.cpp's tokenizer agrees), then
generates greedily with both and compares the new token ids. With ``--quant f32`` the ids should match;
f16 and q8_0 may part ways after some tokens where two logits are nearly tied. Exit status 0 when every
prompt matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPTS = ["What is 2+2?", "Write the date 2076-10-04 in US format.", "Say hello."]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("gguf", type=Path, help="the exported .gguf file")
    parser.add_argument("model", type=Path, help="the run directory, or a merged model directory")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("-p", "--prompt", action="append", help="a user message (repeatable)")
    args = parser.parse_args()
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama-cpp-python is not installed: pip install llama-cpp-python", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if (args.model / "run.json").is_file():
            model_dir = Path(tmp) / "merged"
            subprocess.run(["tunesmith", "merge", str(args.model), "-o", str(model_dir)], check=True)
        return compare(Llama, args.gguf, model_dir, args.prompt or PROMPTS, args.max_new_tokens)


def compare(llama_class, gguf_path: Path, model_dir: Path, prompts: list[str], max_new_tokens: int) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    llm = llama_class(model_path=str(gguf_path), n_ctx=512, logits_all=False, verbose=False)
    failures = 0
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        llama_ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([ids]),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        hf_new = out[0, len(ids) :].tolist()
        llama_new = []
        stops = {tokenizer.eos_token_id}
        for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            llama_new.append(token)
            if token in stops or len(llama_new) >= max_new_tokens:
                break
        same_prompt = llama_ids == ids
        same = hf_new == llama_new
        failures += not (same and same_prompt)
        print(f"{'OK ' if same and same_prompt else 'DIFF'} {prompt!r}")
        if not same_prompt:
            print(
                f"  prompt tokens differ: transformers {ids}\n                       llama.cpp    {llama_ids}"
            )
        if not same:
            print(f"  transformers: {hf_new}\n  llama.cpp:    {llama_new}")
        llm.reset()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
