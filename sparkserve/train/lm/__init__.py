"""Training a target causal LM from scratch on CPU: packed chat data, resumable trainer, evaluation."""
