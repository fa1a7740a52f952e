"""Step times of a prefill instance (the P of a P/D-disaggregated fleet).

One forward pass takes a batch of whole prompts, N tokens in all with Q causal (query,
key) pairs (Σ P(P+1)/2), and costs

    t(N, Q) = max(a·N + c·Q, w) + f

a seconds per token of weight FLOPs, c per pair of attention FLOPs, w the time to read
every weight once (the memory floor of a forward), f the fixed cost (launches, the
collectives' latencies). A batch longer than ``max_batch_tokens`` runs in several chunks,
each paying w and f. The KV cache then travels to the decode bundle:
``transfer(P) = t_k·P + t_0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from afdplan.errors import check_positive, require


@dataclass(frozen=True)
class PrefillTimes:
    """One prefill instance of ``gpus`` GPUs (seconds; see the module doc)."""

    per_token: float
    per_pair: float
    weights: float
    fixed: float
    transfer_per_token: float
    transfer_fixed: float
    max_batch_tokens: int = 8192
    gpus: int = 1
    name: str = "prefill"

    def __post_init__(self) -> None:
        for label in ("per_token", "per_pair", "weights", "fixed", "transfer_per_token",
                      "transfer_fixed"):  # fmt: skip
            value = getattr(self, label)
            require(math.isfinite(value) and value >= 0, f"prefill {label} must be >= 0")
        check_positive("prefill per-token time", self.per_token)
        require(self.max_batch_tokens >= 1, "--prefill-tokens must be >= 1")
        require(self.gpus >= 1, "prefill GPUs must be >= 1")

    def forward(self, tokens, pairs):
        """Seconds for one batch of ``tokens`` prompt tokens holding ``pairs`` causal
        pairs (vectorised), its chunks each paying the weight read and the fixed cost."""
        tokens = np.asarray(tokens, dtype=np.float64)
        chunks = np.maximum(np.ceil(tokens / self.max_batch_tokens), 1.0)
        work = self.per_token * tokens + self.per_pair * np.asarray(pairs, dtype=np.float64)
        return np.maximum(work, chunks * self.weights) + chunks * self.fixed

    def transfer(self, prompt):
        """Seconds to send a prompt's KV cache to its decode bundle."""
        return self.transfer_per_token * np.asarray(prompt, dtype=np.float64) + self.transfer_fixed
