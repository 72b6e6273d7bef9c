"""A scorer that takes its time (a custom algorithm): scoring that does not ask the model."""

from __future__ import annotations

import time


class SlowScorer:
    def __init__(self, seconds: float = 1.0):
        self.seconds = float(seconds)

    def evaluate_sample(self, model_output: str) -> dict[str, float]:
        time.sleep(self.seconds)
        return {"slow": float(bool(model_output))}
