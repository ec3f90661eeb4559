"""``sparkserve train data``: regenerated samples are the ids serving sees (chat-templated prompt +
generated response) with the assistant loss mask; the run resumes by skipping finished prompts."""
import json
import os

from sparkserve.cli import main
from sparkserve.models.tokenizer import Tokenizer
from sparkserve.train.drafter.data import load_prompts, target_sampling
from sparkserve.train.drafter.dataset import EpochSampler, TokenDataset, collate
from tests.train.conftest import PROMPTS, write_prompts


def test_regenerated_ids_and_masks(data_dir, target):
    ds = TokenDataset(data_dir)
    with open(os.path.join(data_dir, "index.json")) as f:
        index = json.load(f)
    assert index["settings"]["sampling"]["temperature"] == 0.8
    assert len(index["done"]) == len(PROMPTS)
    # one sample per (conversation, turn); the two-turn conversation gives two
    assert sorted(ds.keys) == sorted([f"demo-a:{i}#t0" for i in range(5)] + ["demo-a:1#t1"] +
                                     [f"demo-b:{i}#t0" for i in range(3)])
    tok = Tokenizer(target)
    eos = set(tok.eos_token_ids)
    for key, (ids, mask) in zip(ds.keys, ds.samples):
        first = int(mask.argmax())
        assert mask[:first].sum() == 0 and bool(mask[first:].all())  # prompt 0s, then response 1s
        n = int(mask.sum())
        assert n == 40 or int(ids[-1]) in eos  # a response ends with its end token or at the cap
        if key.endswith("#t0"):
            file = os.path.join(os.path.dirname(data_dir), key.split(":")[0] + ".jsonl")
            turns = dict(load_prompts([file]))[key.split("#")[0]]
            text = tok.apply_chat_template([{"role": "user", "content": turns[0]}])
            assert ids[:first].tolist() == tok.encode(text, add_special_tokens=True)
    two = ds.samples[ds.keys.index("demo-a:1#t1")]
    one = ds.samples[ds.keys.index("demo-a:1#t0")]
    assert len(two[0]) > len(one[0])  # turn 2's prompt holds turn 1 and the target's own answer
    ids, mask = collate([one, two])
    assert ids.shape == mask.shape == (2, len(two[0])) and int(mask[0, len(one[0]):].sum()) == 0


def test_resume_skips_done_prompts(root, target, prompt_files):
    out = os.path.join(root, "data-resume")
    args = ["train", "data", "--target", target, "--out", out, "--max-tokens", "12", "--batch-size", "3",
            "--threads", "1", "--prompts"]
    assert main(args + prompt_files[:1]) == 0
    index = json.load(open(os.path.join(out, "index.json")))
    assert len(index["done"]) == 5 and len(index["shards"]) == 2
    before = sorted(os.listdir(out))
    assert main(args + prompt_files[:1]) == 0  # nothing left: no new shard
    assert sorted(os.listdir(out)) == before
    assert main(args + prompt_files) == 0  # only the new file's prompts
    index = json.load(open(os.path.join(out, "index.json")))
    assert len(index["done"]) == 8 and len(index["shards"]) == 3 and index["shards"][2]["num_samples"] == 3
    ds = TokenDataset(out)
    assert len(ds) >= 8


def test_target_sampling_and_prompt_formats(tmp_path):
    with open(tmp_path / "generation_config.json", "w") as f:
        json.dump({"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20}, f)
    assert target_sampling(str(tmp_path)) == {"temperature": 0.7, "top_p": 0.8, "top_k": 20}
    assert target_sampling(str(tmp_path), temperature=0.0)["temperature"] == 0.0
    path = tmp_path / "p.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"prompt": "a"}) + "\n\n")
        f.write(json.dumps({"messages": [{"role": "user", "content": "b"}]}) + "\n")
    assert load_prompts([str(path)]) == [("p:0", ["a"]), ("p:2", ["b"])]
    write_prompts(str(tmp_path / "q.jsonl"), [["x"], ["y"], ["z"]])
    assert len(load_prompts([str(tmp_path / "q.jsonl")], max_prompts=2)) == 2
    picked = load_prompts([str(path), str(tmp_path / "q.jsonl")], subsample=3, seed=1)
    assert len(picked) == 3 and picked == load_prompts([str(path), str(tmp_path / "q.jsonl")], subsample=3, seed=1)


def test_epoch_sampler_resumes_exactly():
    a = EpochSampler(10, 4, seed=3)
    seq = [a.next_batch() for _ in range(7)]
    b = EpochSampler(10, 4, seed=3)
    for _ in range(3):
        b.next_batch()
    c = EpochSampler(10, 4, seed=3)
    c.load_state(b.state())
    assert [c.next_batch() for _ in range(4)] == seq[3:]
    assert sorted(seq[0] + seq[1]) == sorted(set(seq[0] + seq[1]))  # no repeats within an epoch
