"""Drafters (``Proposer`` implementations): DSpark/DFlash, Eagle3 and prompt-lookup n-gram.

Load a checkpoint with ``sparkserve.spec_decode.checkpoint.load_drafter``; write a random one with
``sparkserve.tools.init_drafter.init_drafter``.
"""
from sparkserve.spec_decode.drafters.config import DraftConfig
from sparkserve.spec_decode.drafters.dspark import DSparkDraftModel, DSparkProposer
from sparkserve.spec_decode.drafters.eagle3 import Eagle3DraftModel, Eagle3Proposer
from sparkserve.spec_decode.drafters.ngram import NgramProposer, ngram_lookup

__all__ = ["DSparkDraftModel", "DSparkProposer", "DraftConfig", "Eagle3DraftModel", "Eagle3Proposer",
           "NgramProposer", "ngram_lookup"]
