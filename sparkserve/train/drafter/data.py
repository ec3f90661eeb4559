"""``sparkserve train data``: regenerate assistant responses with the target through sparkserve's own
engine, so a drafter learns the distribution it will be asked to predict at serving time.

Input: prompt files, one JSON object per line: ``{"turns": ["user turn 1", ...]}`` (also accepted:
``{"prompt": "..."}`` or ``{"messages": [{"role": "user", "content": ...}, ...]}``, user turns only).
A conversation's turn t is answered with the chat template applied to the earlier turns and the
target's own earlier answers; each (conversation, turn) becomes one sample
``prompt_ids + response_ids`` with loss mask 0 on the prompt and 1 on the response (including its
end-of-turn token), exactly the ids serving sees: the engine encodes the rendered prompt and the
response is what it generated.

``subsample`` N draws N conversations uniformly from all files (seeded): a proportional share of
every domain of a corpus that lists its domains one after another.

Sampling: the target's recommended settings from ``generation_config.json`` (temperature, top_p,
top_k) unless given; one seed per (conversation, turn), so the data do not depend on batching.

Output (no pickle): ``OUT/shard-XXXXX.safetensors`` with ``input_ids`` int32 [T], ``loss_mask``
uint8 [T], ``offsets`` int64 [N + 1] and the sample keys in the metadata, plus ``OUT/index.json``
(shards, settings, the keys of finished prompts). A killed run resumes: prompts already done are
skipped; the index is replaced atomically after each shard.
"""
from __future__ import annotations

import json
import os
import random
import time
import zlib

import torch
from safetensors.torch import save_file

INDEX = "index.json"


def read_prompt_file(path: str) -> list[tuple[str, list[str]]]:
    """[(key, user turns)]; key = ``file_stem:line_number``."""
    stem = os.path.splitext(os.path.basename(path))[0]
    out = []
    with open(path) as f:
        for line_no, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no + 1}: not JSON: {e}") from None
            if "turns" in rec:
                turns = list(rec["turns"])
            elif "prompt" in rec:
                turns = [rec["prompt"]]
            elif "messages" in rec:
                turns = [m["content"] for m in rec["messages"] if m.get("role") == "user"]
            else:
                raise ValueError(f"{path}:{line_no + 1}: expected a 'turns', 'prompt' or 'messages' field")
            if not turns or not all(isinstance(t, str) and t for t in turns):
                raise ValueError(f"{path}:{line_no + 1}: turns must be non-empty strings")
            out.append((f"{stem}:{line_no}", turns))
    return out


def load_prompts(paths: list[str], max_prompts: int | None = None, subsample: int | None = None,
                 seed: int = 0) -> list[tuple[str, list[str]]]:
    """All prompt files, at most ``max_prompts`` conversations from each (the first ones); then, with
    ``subsample``, that many drawn uniformly from all of them (seeded, kept in file order)."""
    out = []
    for p in paths:
        out += read_prompt_file(p)[:max_prompts]
    if subsample is not None and subsample < len(out):
        keep = sorted(random.Random(f"subsample-{seed}").sample(range(len(out)), subsample))
        out = [out[i] for i in keep]
    return out


def target_sampling(target_dir: str, temperature: float | None = None, top_p: float | None = None,
                    top_k: int | None = None) -> dict:
    """The target's recommended sampling (generation_config.json), overridden by explicit values."""
    gen = {}
    path = os.path.join(target_dir, "generation_config.json")
    if os.path.exists(path):
        with open(path) as f:
            gen = json.load(f)
    sampled = gen.get("do_sample", True)
    out = {"temperature": float(gen.get("temperature", 1.0)) if sampled else 0.0,
           "top_p": float(gen.get("top_p", 1.0)), "top_k": int(gen.get("top_k", 0) or 0)}
    for name, value in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k)):
        if value is not None:
            out[name] = value
    return out


def request_seed(seed: int, key: str) -> int:
    return zlib.crc32(f"{seed}|{key}".encode()) & 0x7FFFFFFF


def _read_index(out_dir: str) -> dict | None:
    path = os.path.join(out_dir, INDEX)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_index(out_dir: str, index: dict) -> None:
    tmp = os.path.join(out_dir, INDEX + ".tmp")
    with open(tmp, "w") as f:
        json.dump(index, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, INDEX))


def write_shard(path: str, samples: list[tuple[str, list[int], list[int]]]) -> int:
    """samples [(key, ids, mask)] -> one safetensors file; returns its token count."""
    ids = [t for _, i, _ in samples for t in i]
    mask = [m for _, _, ms in samples for m in ms]
    lengths = torch.tensor([0] + [len(i) for _, i, _ in samples], dtype=torch.int64)
    save_file({"input_ids": torch.tensor(ids, dtype=torch.int32), "loss_mask": torch.tensor(mask, dtype=torch.uint8),
               "offsets": lengths.cumsum(0)}, path, metadata={"keys": json.dumps([k for k, _, _ in samples])})
    return len(ids)


def regenerate(target: str, prompt_files: list[str], out_dir: str, *, max_tokens: int = 512, batch_size: int = 64,
               seed: int = 0, temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
               max_prompts: int | None = None, subsample: int | None = None, max_model_len: int | None = None,
               log=print, **engine_kwargs) -> dict:
    """Generate the missing samples into ``out_dir``; returns the index (module docstring)."""
    from sparkserve import LLM

    os.makedirs(out_dir, exist_ok=True)
    sampling = target_sampling(target, temperature, top_p, top_k)
    settings = {"target": os.path.abspath(target), "sampling": sampling, "max_tokens": max_tokens, "seed": seed,
                "subsample": subsample}
    index = _read_index(out_dir) or {"version": 1, "settings": settings, "shards": [], "done": []}
    if index["settings"] != settings:
        raise ValueError(f"{out_dir} was generated with {index['settings']}, not {settings}: use a fresh --out")
    done = set(index["done"])
    prompts = [p for p in load_prompts(prompt_files, max_prompts, subsample, seed) if p[0] not in done]
    log(f"data: {len(done)} prompts done, {len(prompts)} to generate, sampling {sampling}")
    if not prompts:
        return index
    llm = LLM(target, max_model_len=max_model_len, max_num_seqs=batch_size, seed=seed, **engine_kwargs)
    limit = llm.engine.config.scheduler.max_model_len
    t0 = time.time()
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        samples = _generate_chunk(llm, chunk, sampling, max_tokens, limit, seed)
        name = f"shard-{len(index['shards']):05d}.safetensors"
        num_tokens = write_shard(os.path.join(out_dir, name), samples) if samples else 0
        if samples:
            index["shards"].append({"file": name, "num_samples": len(samples), "num_tokens": num_tokens})
        index["done"] += [k for k, _ in chunk]
        _write_index(out_dir, index)
        log(f"data: {start + len(chunk)}/{len(prompts)} prompts, {len(samples)} samples, {num_tokens} tokens "
            f"in {name} ({time.time() - t0:.0f}s)")
    return index


def _generate_chunk(llm, chunk, sampling: dict, max_tokens: int, limit: int, seed: int):
    """Turn by turn across the chunk's conversations; returns [(sample key, ids, mask)]."""
    from sparkserve import SamplingParams

    tok = llm.tokenizer
    history = {key: [] for key, _ in chunk}  # key -> messages so far
    samples = []
    for turn in range(max(len(turns) for _, turns in chunk)):
        batch, params, keys = [], [], []
        for key, turns in chunk:
            if turn >= len(turns) or (turn > 0 and not history[key]):
                continue
            history[key].append({"role": "user", "content": turns[turn]})
            text = tok.apply_chat_template(history[key], add_generation_prompt=True, enable_thinking=False)
            ids = tok.encode(text, add_special_tokens=True)
            room = min(max_tokens, limit - len(ids))
            if room < 1:
                history[key] = []  # too long: this conversation ends here
                continue
            batch.append({"prompt_token_ids": ids})
            params.append(SamplingParams(max_tokens=room, seed=request_seed(seed, f"{key}#t{turn}"), **sampling))
            keys.append(key)
        if not batch:
            break
        for key, out in zip(keys, llm.generate(batch, params)):
            comp = out.outputs[0]
            prompt = list(out.prompt_token_ids)
            samples.append((f"{key}#t{turn}", prompt + list(comp.token_ids),
                            [0] * len(prompt) + [1] * len(comp.token_ids)))
            history[key].append({"role": "assistant", "content": comp.text})
    return samples
