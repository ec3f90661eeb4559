"""A small, exactly resumable causal-LM trainer for CPU (fp32, AdamW, warmup + cosine, clipping).

`train()` resumes from the newest checkpoint in `ckpt_dir` if there is one. Given the same model
initialisation, data and thread count, an interrupted-and-resumed run ends with the same weights as
an uninterrupted one: everything a step depends on (weights, AdamW moments, scheduler, data position,
torch RNG) is in the checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from sparkserve.train.lm.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from sparkserve.train.lm.data import PackedLoader


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    num_threads: int = 2
    ckpt_every_steps: int = 0  # 0: only time-based and final checkpoints
    ckpt_every_s: float = 300.0
    log_every: int = 10
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.max_steps <= 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"bad schedule: {self}")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to 1, then cosine decay to `min_lr_ratio` at `max_steps`."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; matrices decay, norms (1-D weights) don't."""
    decay = [p for _, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=False)


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions where mask is 1. logits [B, S, V]; targets, mask [B, S]."""
    nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    m = mask.flatten().to(nll.dtype)
    return (nll * m).sum() / m.sum().clamp(min=1)


def train(model: torch.nn.Module, loader: PackedLoader, cfg: TrainConfig, ckpt_dir: str,
          log: Callable[[str], None] = print, metrics_path: str | None = None,
          stop_after_steps: int | None = None) -> dict:
    """Train to `cfg.max_steps` (resuming from `ckpt_dir`); returns a summary dict.

    `stop_after_steps` ends the call early after that many steps of this call (checkpointing
    first), which is how tests simulate an interruption.
    """
    torch.set_num_threads(cfg.num_threads)
    model.train()
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    step = 0
    resume = latest_checkpoint(ckpt_dir)
    if resume is not None:
        state = load_checkpoint(resume, model, opt, sched)
        saved = state["extra"].get("train_config")
        if saved is not None and saved != _comparable(cfg):
            raise ValueError(f"{resume} was written with a different TrainConfig:\n{saved}\nvs\n{_comparable(cfg)}")
        step = state["step"]
        loader.load_state(state["data"])
        log(f"resumed from {resume} at step {step} (epoch {loader.epoch}, row {loader.row})")
    else:
        torch.manual_seed(cfg.seed)

    def checkpoint() -> None:
        path = save_checkpoint(ckpt_dir, step, model, opt, sched, loader.state(),
                               {"train_config": _comparable(cfg)}, keep=cfg.keep_checkpoints)
        log(f"checkpoint {path}")

    t_start = t_ckpt = time.time()
    tokens = 0
    window_loss, window_n, window_tokens, t_window = 0.0, 0, 0, time.time()
    steps_this_call = 0
    while step < cfg.max_steps:
        inputs, targets, mask = loader.next_batch()
        logits = model.forward_train(inputs)
        loss = masked_loss(logits, targets, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        steps_this_call += 1
        tokens += inputs.numel()
        window_loss += loss.item()
        window_n += 1
        window_tokens += inputs.numel()
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            now = time.time()
            rate = window_tokens / max(now - t_window, 1e-9)
            eta_s = (cfg.max_steps - step) * inputs.numel() / max(rate, 1e-9)
            rec = {"step": step, "loss": round(window_loss / window_n, 4), "lr": sched.get_last_lr()[0],
                   "grad_norm": round(float(grad_norm), 3), "tok_per_s": round(rate, 1),
                   "epoch": loader.epoch, "elapsed_s": round(now - t_start, 1), "eta_min": round(eta_s / 60, 1)}
            log(json.dumps(rec))
            if metrics_path:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            window_loss, window_n, window_tokens, t_window = 0.0, 0, 0, now
        due = (cfg.ckpt_every_steps and step % cfg.ckpt_every_steps == 0) or time.time() - t_ckpt >= cfg.ckpt_every_s
        if step == cfg.max_steps or due or (stop_after_steps and steps_this_call >= stop_after_steps):
            checkpoint()
            t_ckpt = time.time()
        if stop_after_steps and steps_this_call >= stop_after_steps:
            break
    model.eval()
    return {"step": step, "tokens_this_call": tokens, "seconds_this_call": time.time() - t_start}


def _comparable(cfg: TrainConfig) -> dict:
    """The fields a resumed run must share with the run that wrote the checkpoint."""
    d = asdict(cfg)
    for volatile in ("ckpt_every_steps", "ckpt_every_s", "log_every", "keep_checkpoints"):
        d.pop(volatile)
    return d
