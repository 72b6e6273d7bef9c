"""Model registries behind one interface: the local one (Model Registry's shape in the run
store) and SageMaker Model Registry; both register a version with its model card.

Rooms: `base` (approval statuses, `ModelVersion`, `Registry`), `card` (the model card),
`local`, `sagemaker`.
"""

from llmeval.registry.base import APPROVED, CARD_STATUS, PENDING, REJECTED, ModelVersion, Registry
from llmeval.registry.local import LocalRegistry
from llmeval.registry.sagemaker import SageMakerModelRegistry

__all__ = [
    "APPROVED",
    "CARD_STATUS",
    "PENDING",
    "REJECTED",
    "LocalRegistry",
    "ModelVersion",
    "Registry",
    "SageMakerModelRegistry",
]
