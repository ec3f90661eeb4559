"""A small, exactly resumable causal-LM trainer for CPU (fp32, AdamW, warmup + cosine, clipping).

`train()` resumes from the newest checkpoint in `ckpt_dir` if there is one. Given the same model
initialisation, data and thread count, an interrupted-and-resumed run ends with the same weights as
an uninterrupted one: everything a step depends on (weights, AdamW moments, scheduler, data position,
torch RNG) is in the checkpoint.
"""

from __future__ import annotations

import json
import math
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
    num_threads: int = 2  # 0: auto, re-pick 1 or 2 threads as the (shared) machine's load changes
    ckpt_every_steps: int = 0  # 0: only time-based and final checkpoints
    ckpt_every_s: float = 300.0
    log_every: int = 10
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.max_steps <= 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"bad schedule: {self}")


class ThreadTuner:
    """On a shared CPU, two threads can be slower than one (a descheduled thread stalls the other at
    every barrier). Every `period` steps, time `probe` steps with each candidate and keep the fastest.
    Thread counts change float summation order, so an auto-threaded run is not bitwise repeatable."""

    def __init__(self, candidates: tuple[int, ...] = (1, 2), period: int = 50, probe: int = 3):
        self.candidates, self.period, self.probe = candidates, period, probe
        self.current = candidates[-1]
        self.timings: dict[int, list[float]] = {}

    def before_step(self, step: int) -> None:
        phase = step % self.period
        slot = phase // self.probe
        if slot < len(self.candidates):
            self.current = self.candidates[slot]
        elif slot == len(self.candidates) and phase % self.probe == 0 and self.timings:
            self.current = min(self.timings, key=lambda n: sorted(self.timings[n])[len(self.timings[n]) // 2])
            self.timings = {}
        torch.set_num_threads(self.current)

    def after_step(self, step: int, seconds: float) -> None:
        if (step % self.period) // self.probe < len(self.candidates):
            self.timings.setdefault(self.current, []).append(seconds)


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


def training_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """Masked next-token loss. With sparkserve's decoder API (flat `forward` + `compute_logits`) the
    vocabulary projection runs on the loss positions only (about half of them in chat data: prompts
    and padding carry no loss); any other model goes through `forward_train` and `masked_loss`."""
    if not hasattr(model, "compute_logits"):
        return masked_loss(model.forward_train(inputs), targets, mask)
    from sparkserve.attention.base import DenseCausalContext

    b, s = inputs.shape
    positions = torch.arange(s).repeat(b)
    hidden, _ = model(inputs.reshape(-1), positions, DenseCausalContext(b, s, model.scale))  # [B*S, H]
    keep = mask.reshape(-1).nonzero().squeeze(1)  # [N]
    if keep.numel() == 0:
        return hidden.sum() * 0.0
    logits = model.compute_logits(hidden.index_select(0, keep))  # [N, V]
    return torch.nn.functional.cross_entropy(logits, targets.reshape(-1).index_select(0, keep))


def train(model: torch.nn.Module, loader: PackedLoader, cfg: TrainConfig, ckpt_dir: str,
          log: Callable[[str], None] = print, metrics_path: str | None = None,
          stop_after_steps: int | None = None) -> dict:
    """Train to `cfg.max_steps` (resuming from `ckpt_dir`); returns a summary dict.

    `stop_after_steps` ends the call early after that many steps of this call (checkpointing
    first), which is how tests simulate an interruption.
    """
    tuner = ThreadTuner() if cfg.num_threads == 0 else None
    if tuner is None:
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
        t_step = time.time()
        if tuner is not None:
            tuner.before_step(step)
        loss = training_loss(model, inputs, targets, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if tuner is not None:
            tuner.after_step(step, time.time() - t_step)
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
                   "threads": torch.get_num_threads(),
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
    for volatile in ("ckpt_every_steps", "ckpt_every_s", "log_every", "keep_checkpoints", "num_threads"):
        d.pop(volatile)
    return d
