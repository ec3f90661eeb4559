"""The drafter toolchain (``sparkserve train ...``): regenerate training data with the target,
train DSpark / DFlash / Eagle3 drafters on the target's online features, calibrate DSpark's
confidences (STS) and evaluate drafters through the engine.

Modules:
- ``data``       prompt files -> target-regenerated conversations (token ids + assistant loss mask)
- ``dataset``    reading them back; the epoch sampler (exact resumption, rank split)
- ``features``   the frozen target's features and distributions, online or from a disk cache
- ``blocks``     DSpark/DFlash anchor sampling, block construction, the training attention mask
- ``losses``     DSpark/DFlash block losses and Eagle3's test-time-training loss
- ``trainer``    ``fit``: AdamW, warmup + cosine, clipping, data parallel, checkpoints, export
- ``drafter_io`` initial weights, frozen vocabulary copies, export, the data-parallel plumbing
- ``rollouts``   per-verify-round records (verify length, accepted, confidence logits) from the engine
- ``metrics``    ECE, AUROC, reliability bins, tau and position-wise conditional acceptance
- ``calibrate``  Sequential Temperature Scaling -> ``calibration.json``
- ``evaluate``   the report: tau per dataset, cond@k, reliability diagrams (markdown + PNG)
"""
