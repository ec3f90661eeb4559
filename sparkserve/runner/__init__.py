"""Target model execution over a flat token batch (tensors stay in here)."""
