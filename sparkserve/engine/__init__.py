"""Engine (add/abort/step), detokenization and the offline ``LLM`` API."""
