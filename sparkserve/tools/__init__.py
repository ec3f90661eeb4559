"""Offline commands beside `train/` and `demo/`: drafter initialisation (`sparkserve drafter`), the
step-time profiler (`sparkserve profile`) and the slim-checkpoint writer. Nothing here runs while serving."""
