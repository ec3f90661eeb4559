"""``sparkserve train fit``: train a DSpark, DFlash or Eagle3 drafter against a frozen target.

One optimizer step:
1. the sampler yields a global batch of sample indices; rank r takes its contiguous slice;
2. per sample, anchors are drawn with a generator seeded by (seed, step, position in the global
   batch), so the blocks do not depend on how the batch is split across ranks;
3. the loss normalisers (weight sums; Eagle3: valid rows per TTT step) are summed over micro-batches
   and ranks *before* any forward, so each micro-batch's loss is already divided by the global sum;
4. per micro-batch: target features online (or from the cache), drafter forward, backward;
5. gradients are summed over ranks, clipped, AdamW steps, the LR follows warmup + cosine.
Hence N ranks with global batch G compute the same update as one process with G; with the same
micro-batches (one process: G/N per micro-batch) even the float sums agree, so the weights are
bit-identical (``tests/train/test_ddp.py``). Rank 0 writes checkpoints (``train/lm/checkpoint.py``: safetensors + JSON,
atomic) to ``OUT/checkpoints`` and, at the end, the drafter to ``OUT`` (``config.json`` +
``model.safetensors``, DeepSpec layout). ``resume`` continues from the newest checkpoint with the
same weights, moments, LR schedule and data position, so an interrupted run ends bit-identical to
an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace

import torch

from sparkserve.layers.rotary import RotaryEmbedding
from sparkserve.models.loader import load_model
from sparkserve.train.drafter.blocks import build_blocks, loss_weights, pad_anchors, sample_anchors
from sparkserve.train.drafter.dataset import EpochSampler, TokenDataset, collate
from sparkserve.train.drafter.drafter_io import Parallel, export, initial_drafter_dir, load_trainable
from sparkserve.train.drafter.features import FeatureCache, TargetFeatures
from sparkserve.train.drafter.losses import LossWeights, block_hidden, dspark_loss, eagle3_ttt_loss, shift_left
from sparkserve.train.lm.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from sparkserve.train.lm.trainer import TrainConfig, lr_factor, make_optimizer

METHODS = ("dspark", "dflash", "eagle3")


@dataclass(frozen=True)
class FitConfig:
    """What is trained and how; a checkpoint only resumes under the same FitConfig. Defaults follow
    DeepSpec's Qwen3 recipes (DSPARK.md §1.6, §3) except the batch, sized for small targets."""

    method: str
    steps: int = 1000
    batch_size: int = 16  # global sequences per optimizer step (split across ranks)
    micro_batch_size: int = 0  # sequences per forward on one rank (0: the rank's whole share)
    lr: float = 6e-4
    warmup_ratio: float = 0.04
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    block_size: int = 7  # DSpark/DFlash rows per block (= drafts); Eagle3 TTT steps (= chain length)
    num_anchors: int = 512
    max_length: int = 2048
    loss_decay_gamma: float = 4.0
    loss_weights: tuple[float, float, float] | None = None  # DSpark (CE, TV-L1, confidence); None: 0.1/0.9/1.0
    step_loss_decay: float = 0.8  # Eagle3
    markov_head_type: str = "vanilla"
    markov_rank: int | None = None
    num_layers: int | None = None  # DSpark/DFlash draft layers (Eagle3 always has one)
    mask_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.steps < 1 or self.batch_size < 1 or self.block_size < 1 or self.num_anchors < 1:
            raise ValueError(f"steps, batch_size, block_size and num_anchors must be >= 1: {self}")
        if self.loss_weights is not None and (self.method != "dspark" or len(self.loss_weights) != 3
                                              or min(self.loss_weights) < 0 or max(self.loss_weights) == 0):
            raise ValueError(f"loss_weights are three non-negative DSpark weights (CE, TV-L1, confidence), "
                             f"not all zero, got {self.loss_weights} for {self.method}")

    def train_config(self) -> TrainConfig:
        return TrainConfig(max_steps=self.steps, lr=self.lr, min_lr_ratio=self.min_lr_ratio,
                           warmup_steps=math.ceil(self.warmup_ratio * self.steps), weight_decay=self.weight_decay,
                           grad_clip=self.grad_clip, seed=self.seed)


def anchor_seed(seed: int, step: int, position: int) -> int:
    return ((seed * 1_000_003 + step) * 65_537 + position) % (1 << 62)


@dataclass(frozen=True)
class FitRuntime:
    """How a run executes; none of these change the trained weights (on a given device and dtype)."""

    device: str = "auto"  # auto: cuda:LOCAL_RANK when there is a GPU, else cpu
    target_dtype: str = "auto"
    feature_cache: str | None = None
    feature_cache_dtype: torch.dtype = torch.bfloat16
    ckpt_every_steps: int = 0  # 0: only every ckpt_every_s and at the end
    ckpt_every_s: float = 600.0
    log_every: int = 10
    save_dtype: torch.dtype = torch.bfloat16  # of the exported drafter
    stop_after_steps: int | None = None  # end this call early (checkpointing first): tests simulate a kill


def fit(cfg: FitConfig, target_dir: str, data_dir: str, out_dir: str, *, init: str | None = None,
        resume: bool = False, log=print, **runtime) -> dict:
    """Train to ``cfg.steps`` (module docstring); ``runtime``: ``FitRuntime`` fields. Returns
    {"step", "history" (the logged records of this call), "seconds"}."""
    rt = FitRuntime(**runtime)
    par = Parallel(rt.device)
    if cfg.batch_size % par.world:
        raise ValueError(f"global batch {cfg.batch_size} is not divisible by {par.world} ranks")
    say = log if par.is_main else (lambda *_: None)
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    latest = latest_checkpoint(ckpt_dir)
    if latest is not None and not resume:
        raise ValueError(f"{out_dir} already has checkpoints ({latest}); pass --resume or use a fresh --out")
    torch.manual_seed(cfg.seed)
    target, model, start_dir, cfg = _load(cfg, target_dir, out_dir, init, rt, par, say)
    params = [p for p in model.parameters() if p.requires_grad]
    dataset = TokenDataset(data_dir, cfg.max_length)
    sampler = EpochSampler(len(dataset), cfg.batch_size, cfg.seed)
    tcfg = cfg.train_config()
    opt = make_optimizer(model, tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, tcfg))
    step, comparable = 0, json.loads(json.dumps(asdict(cfg)))  # as it reads back from a checkpoint
    if cfg.loss_weights is None:
        comparable.pop("loss_weights")  # checkpoints written before the option existed still resume
    if latest is not None:
        state = load_checkpoint(latest, model, opt, sched)
        if state["extra"].get("fit_config") != comparable:
            raise ValueError(f"{latest} was written by a run with {state['extra'].get('fit_config')}, not {comparable}")
        step = state["step"]
        sampler.load_state(state["data"])
        say(f"resumed from {latest} at step {step}")
    features = _features(cfg, target, model.config, dataset, target_dir, data_dir, rt, par, say)
    m = model.config.model
    rotary = RotaryEmbedding(m.head_dim, cfg.max_length + cfg.block_size + 2, m.rope_theta,
                             m.rope_scaling).to(par.device)
    lw = LossWeights.for_method(cfg.method, cfg.loss_decay_gamma)
    if cfg.loss_weights is not None:
        lw = LossWeights(*cfg.loss_weights, cfg.loss_decay_gamma)
    say(f"fit {cfg.method}: {sum(p.numel() for p in params)} trainable parameters, {len(dataset)} samples "
        f"({dataset.num_tokens} tokens), global batch {cfg.batch_size} on {par.world} rank(s), "
        f"steps {step}->{cfg.steps}")
    model.train()
    t_start = t_ckpt = time.time()
    window, steps_this_call, history = _Window(), 0, []
    while step < cfg.steps:
        stats = _train_step(cfg, model, features, rotary, lw, dataset, sampler.next_batch(), step, par)
        par.sum_grads(params)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        steps_this_call += 1
        window.add(par, stats)
        if step % rt.log_every == 0 or step == cfg.steps:
            rec = window.flush(step, sched.get_last_lr()[0], float(grad_norm), cfg, t_start)
            history.append(rec)
            say(json.dumps(rec))
            if par.is_main:
                with open(os.path.join(out_dir, "train_log.jsonl"), "a") as f:
                    f.write(json.dumps(rec) + "\n")
        stop = rt.stop_after_steps is not None and steps_this_call >= rt.stop_after_steps
        due = (rt.ckpt_every_steps and step % rt.ckpt_every_steps == 0) or time.time() - t_ckpt >= rt.ckpt_every_s
        if (step == cfg.steps or due or stop) and par.is_main:  # rank 0 writes; every rank can read it
            path = save_checkpoint(ckpt_dir, step, model, opt, sched, sampler.state(), {"fit_config": comparable})
            say(f"checkpoint {path}")
            t_ckpt = time.time()
        if stop:
            break
    if step == cfg.steps and par.is_main:
        export(model, start_dir, out_dir, rt.save_dtype)
        say(f"wrote the {cfg.method} drafter to {out_dir}")
    par.barrier()
    par.close()
    return {"step": step, "history": history, "seconds": time.time() - t_start}


def _load(cfg: FitConfig, target_dir, out_dir, init, rt: FitRuntime, par: Parallel, say):
    """The frozen target, the trainable drafter, the directory its config comes from, and ``cfg``
    with ``block_size`` taken from the drafter (its block size / TTT length is what serving uses)."""
    target, _ = load_model(target_dir, rt.target_dtype, par.device)
    for p in target.parameters():
        p.requires_grad_(False)
    start_dir = initial_drafter_dir(cfg.method, target_dir, out_dir, init, block_size=cfg.block_size, seed=cfg.seed,
                                    markov_head_type=cfg.markov_head_type, markov_rank=cfg.markov_rank,
                                    num_layers=None if cfg.method == "eagle3" else cfg.num_layers,
                                    mask_token_id=cfg.mask_token_id,
                                    target_layer_ids=None, is_main=par.is_main)
    par.barrier()
    model = load_trainable(start_dir, cfg.method, target)
    dcfg = model.config
    gamma = dcfg.ttt_length if dcfg.kind == "eagle3" else dcfg.block_size
    if gamma != cfg.block_size:
        say(f"note: the initial drafter at {start_dir} has block size {gamma}; training with it")
        cfg = replace(cfg, block_size=gamma)
    return target, model, start_dir, cfg


def _features(cfg, target, dcfg, dataset, target_dir, data_dir, rt: FitRuntime, par: Parallel, say) -> TargetFeatures:
    features = TargetFeatures(target, dcfg.target_layer_ids, need_logits=cfg.method != "dflash")
    if not rt.feature_cache:
        return features
    identity = {"target": os.path.abspath(target_dir), "data": os.path.abspath(data_dir),
                "layer_ids": list(dcfg.target_layer_ids), "max_length": cfg.max_length, "num_samples": len(dataset)}
    cache = FeatureCache(rt.feature_cache, identity, rt.feature_cache_dtype)
    size = FeatureCache.estimate_bytes(dataset.num_tokens, len(dcfg.target_layer_ids), dcfg.model.hidden_size,
                                       cache.dtype)
    say(f"feature cache {rt.feature_cache}: {len(dataset)} samples, {dataset.num_tokens} tokens, "
        f"about {size / 2**20:.1f} MiB")
    cache.build(dataset, features, par.rank, par.world, log=say)
    par.barrier()
    cache.refresh()
    features.cache = cache
    return features


def _train_step(cfg: FitConfig, model, features, rotary, lw: LossWeights, dataset, batch: list[int], step: int,
                par: Parallel) -> "_Stats":
    """Forward + backward of this rank's share of one global batch (gradients accumulate in .grad)."""
    share = cfg.batch_size // par.world
    local = list(enumerate(batch))[par.rank * share:(par.rank + 1) * share]
    mb = cfg.micro_batch_size or share
    chunks = [_prepare(cfg, dataset, local[i:i + mb], step, model.config, par.device)
              for i in range(0, len(local), mb)]
    norm = par.sum_(sum(c["norm"] for c in chunks).to(par.device).double()).float()  # global normalisers
    stats = _Stats(cfg.block_size)
    for c in chunks:
        feats, logits = features(c["input_ids"], c["sample_ids"])
        if cfg.method == "eagle3":
            sums, st = eagle3_ttt_loss(model, rotary, feats, c["input_ids"], c["loss_mask"], logits, cfg.block_size)
            loss = sum(cfg.step_loss_decay ** s * x / norm[s].clamp_min(1) for s, x in enumerate(sums))
        else:
            hidden = block_hidden(model, rotary, feats, c["blocks"])
            numer, st = dspark_loss(model, hidden, c["blocks"], logits, c["weights"], lw)
            loss = numer / norm.clamp_min(1e-12)
        loss.backward()
        stats.add(float(loss.detach()), st, c["tokens"])
    return stats


def _prepare(cfg: FitConfig, dataset, items: list[tuple[int, int]], step: int, dcfg, device) -> dict:
    """One micro-batch: (position in the global batch, sample index) pairs -> tensors and its normaliser."""
    ids, mask = collate([dataset[i] for _, i in items])
    out = {"sample_ids": [i for _, i in items], "tokens": int(mask.sum())}
    if cfg.method == "eagle3":  # valid rows of each TTT step
        out["norm"] = torch.tensor([float(shift_left(mask, s + 2).sum()) for s in range(cfg.block_size)])
    else:
        gens = [torch.Generator().manual_seed(anchor_seed(cfg.seed, step, g)) for g, _ in items]
        anchors = [sample_anchors(mask[r], cfg.num_anchors, gen) for r, gen in enumerate(gens)]
        a, keep = pad_anchors(anchors)
        blocks = build_blocks(ids, mask, a, keep, cfg.block_size, dcfg.mask_token_id)
        out["blocks"] = _to(blocks, device)
        out["weights"] = loss_weights(blocks.valid, cfg.loss_decay_gamma).to(device)
        out["norm"] = out["weights"].sum().double().cpu()
    out["input_ids"], out["loss_mask"] = ids.to(device), mask.to(device)
    return out


def _to(blocks, device):
    for name, value in vars(blocks).items():
        setattr(blocks, name, value.to(device))
    return blocks


class _Stats:
    """Per-step sums on one rank: loss, tokens, the loss terms, per-position argmax matches."""

    def __init__(self, k: int):
        self.v = torch.zeros(6 + 2 * k, dtype=torch.float64)  # loss, tokens, ce, l1, conf, weight, correct[k], count[k]
        self.k = k

    def add(self, loss: float, st: dict, tokens: int) -> None:
        self.v[0] += loss
        self.v[1] += tokens
        for j, name in enumerate(("ce", "l1", "conf", "weight")):
            self.v[2 + j] += st.get(name, 0.0)
        k = self.k
        self.v[6:6 + k] += torch.tensor((list(st["correct"]) + [0] * k)[:k], dtype=torch.float64)
        self.v[6 + k:] += torch.tensor((list(st["count"]) + [0] * k)[:k], dtype=torch.float64)


class _Window:
    def __init__(self):
        self.v, self.n, self.t = None, 0, time.time()

    def add(self, par: Parallel, stats: _Stats) -> None:
        v = par.sum_(stats.v.to(par.device)).cpu()
        self.v = v if self.v is None else self.v + v
        self.n += 1

    def flush(self, step, lr, grad_norm, cfg, t_start) -> dict:
        v, k, now = self.v, cfg.block_size, time.time()
        rate = float(v[1]) / max(now - self.t, 1e-9)
        rec = {"step": step, "loss": round(float(v[0]) / self.n, 4), "lr": lr,
               "grad_norm": round(grad_norm, 4), "acc": [round(float(c / max(n, 1)), 3) for c, n in
                                                         zip(v[6:6 + k], v[6 + k:])],
               "tok_per_s": round(rate, 1), "elapsed_s": round(now - t_start, 1),
               "eta_min": round((cfg.steps - step) * (now - self.t) / self.n / 60, 1)}
        if cfg.method != "eagle3" and float(v[5]) > 0:
            rec.update({name: round(float(v[2 + j] / v[5]), 4) for j, name in enumerate(("ce", "l1", "conf"))})
        self.v, self.n, self.t = None, 0, now
        return rec
