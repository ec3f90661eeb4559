"""Data-parallel training: two ``torchrun`` CPU processes (gloo) with a global batch of 6 (3 each) end
with the same parameters as one process with the same global batch. The single process runs the batch
as two micro-batches of 3, the very sums the two ranks compute, so gradients agree to the bit (a + b
is the same in either order) and so do the weights."""
import os
import subprocess
import sys

import torch

from sparkserve.train.drafter.trainer import FitConfig, fit
from tests.train.conftest import state_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_two_process_torchrun_equals_one_process(root, target, data_dir):
    common = dict(method="dspark", steps=3, batch_size=6, lr=5e-3, warmup_ratio=0.0, block_size=3, num_layers=1,
                  markov_head_type="gated", seed=2)
    single = os.path.join(root, "ddp-single")
    fit(FitConfig(**common, micro_batch_size=3), target, data_dir, single, save_dtype=torch.float32,
        log=lambda *_: None)
    multi = os.path.join(root, "ddp-two")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sparkserve", "train", "fit", "--method", "dspark", "--target", target, "--data", data_dir,
           "--out", multi, "--steps", "3", "--batch-size", "6", "--lr", "5e-3",
           "--warmup-ratio", "0", "--block-size", "3", "--num-layers", "1", "--markov-head-type", "gated",
           "--seed", "2", "--save-dtype", "float32", "--threads", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on 2 rank(s)" in proc.stdout
    a, b = state_of(single), state_of(multi)
    assert a.keys() == b.keys()
    moved = 0
    init = state_of(os.path.join(single, "init"))
    for key in a:
        assert torch.equal(b[key], a[key]), (key, float((b[key] - a[key]).abs().max()))
        moved += int(not torch.equal(a[key], init[key].float()))
    assert moved > 10  # training changed the weights, and both runs changed them alike
