"""A run-local worker that dies (as if killed or out of memory) on one signature; imported by the pool's workers."""

from __future__ import annotations

import os

from genesig.pipeline.run import SignatureResult, _worker_run
from genesig.pipeline.signatures import MatchedSignature

VICTIM = "metagene_19"


def run_or_die(matched: MatchedSignature) -> SignatureResult:
    if matched.signature.name == VICTIM:
        os._exit(3)
    return _worker_run(matched)
