"""Drafters (``Proposer`` implementations): DSpark/DFlash, Eagle3 and prompt-lookup n-gram.

Load a checkpoint with ``sparkserve.spec.checkpoint.load_drafter``; write a random one with
``sparkserve.spec.init_drafter.init_drafter``.
"""
from sparkserve.spec.drafters.config import DraftConfig
from sparkserve.spec.drafters.dspark import DSparkDraftModel, DSparkProposer
from sparkserve.spec.drafters.eagle3 import Eagle3DraftModel, Eagle3Proposer
from sparkserve.spec.drafters.ngram import NgramProposer, ngram_lookup

__all__ = ["DSparkDraftModel", "DSparkProposer", "DraftConfig", "Eagle3DraftModel", "Eagle3Proposer",
           "NgramProposer", "ngram_lookup"]
