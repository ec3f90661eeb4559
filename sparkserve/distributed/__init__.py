"""Tensor parallelism over torch.distributed (``--tensor-parallel-size N``).

``sizes.py`` (torch-free) refuses sizes that do not divide; ``shard.py`` slices a loaded full model into
one rank's shard (``layers/parallel_linear.py``); ``group.py`` sets up the process group (NCCL on GPUs,
gloo on CPUs); ``worker.py`` is the loop of ranks 1..N-1; ``driver.py`` is rank 0, the engine's model.
"""
