"""Training: the target LM trainer (`lm/`, used by the demo build) and the drafter toolchain (`drafter/`)."""
