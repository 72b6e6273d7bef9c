"""An example custom algorithm: rewards short answers (fmeval's `evaluate_sample` interface).

Use it with `algorithm: custom:brevity:Brevity` and `include/algorithms` on PYTHONPATH
(the local target and the Processing job add it); `max_words` is a constructor option.
"""

from __future__ import annotations


class Brevity:
    def __init__(self, max_words: int = 8):
        self.max_words = int(max_words)

    def evaluate_sample(self, model_output: str) -> dict[str, float]:
        words = len(str(model_output).split())
        return {"brevity": 1.0 if words <= self.max_words else self.max_words / words}
