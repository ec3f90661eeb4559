"""The demo world: a small Qwen3 chat model (math, code, chat) built from this machine's own sources.

`python -m sparkserve.demo build` generates the corpus, trains the tokenizer and the model, and
exports a Hugging Face model directory (see README.md in this folder).
"""
