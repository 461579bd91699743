"""The commented starter config written by ``tunesmith init``."""

STARTER_CONFIG = """\
# tunesmith run config. Validate with `tunesmith data check tunesmith.yaml`, train with `tunesmith run`.
# Every component (data source, formatter, method, objective, evaluator) is chosen by `name`, with its
# options beside it. `tunesmith plugins show NAME` lists a component's options.

name: my-run                    # the run directory is output_dir with {name} filled in
output_dir: runs/{name}

model:
  path: tiny                    # a Hugging Face id (meta-llama/Llama-3.1-8B) or a local directory;
                                # `tiny` is the built-in ~1M-parameter Llama, built locally on first use
  # trust_remote_code: false
  # dtype: auto                 # auto: float32 on CPU, bfloat16 on a GPU that supports it

data:
  train: {name: jsonl, path: data/train.jsonl}
  # validation: {name: jsonl, path: data/validation.jsonl}
  test: {name: jsonl, path: data/test.jsonl}     # held out: never trained on
  max_length: 1024              # tokens per example; longer ones are errors unless `truncate: true`
  packing: true                 # several examples per row, no attention across them
  train_on_prompt: false        # loss on completions / assistant turns only
  on_invalid: error             # or `drop` to skip (and count) bad records

formatter: {name: alpaca}       # alpaca (instruction/input/output), chat (messages), text

method: {name: lora, r: 16, alpha: 32, dropout: 0.05}   # or: full
objective: {name: sft}

training:
  epochs: 3
  # learning_rate: 2.0e-4       # default depends on the method (LoRA 2e-4, full 2e-5)
  batch_size: 8
  gradient_accumulation_steps: 1
  seed: 42

evaluators:
  - {name: perplexity}
  - {name: exact-match}

evaluation:
  splits: [test]
  compare_base: true            # score the base model too, side by side
  max_new_tokens: 64
"""
