"""Resolve a JumpStart model's container image, model artifacts and environment.

Runs in the worker environment (sagemaker 2.x) as a command, at task run time, never at
DAG parse time: the SDK reads the JumpStart manifest from S3 (or from local copies named
by AWS_JUMPSTART_MANIFEST_LOCAL_ROOT_DIR_OVERRIDE / AWS_JUMPSTART_SPECS_LOCAL_ROOT_DIR_OVERRIDE).

    python -m llmeval.jumpstart [--training] MODEL_ID VERSION REGION INSTANCE_TYPE
"""

from __future__ import annotations

import json
import sys


def resolve(model_id: str, version: str, region: str, instance_type: str) -> dict:
    from sagemaker import environment_variables, image_uris, model_uris

    image = image_uris.retrieve(
        framework=None,
        region=region,
        image_scope="inference",
        model_id=model_id,
        model_version=version,
        instance_type=instance_type,
    )
    model_data = model_uris.retrieve(model_id=model_id, model_version=version, model_scope="inference", region=region)
    env = environment_variables.retrieve_default(model_id=model_id, model_version=version, region=region)
    return {"image_uri": image, "model_data": model_data, "environment": env}


def resolve_training(model_id: str, version: str, region: str, instance_type: str) -> dict:
    """Training image, pretrained artifacts, training script and default hyperparameters."""
    from sagemaker import hyperparameters, image_uris, model_uris, script_uris

    kw = {"model_id": model_id, "model_version": version, "region": region}
    return {
        "image_uri": image_uris.retrieve(framework=None, image_scope="training", instance_type=instance_type, **kw),
        "model_uri": model_uris.retrieve(model_scope="training", **kw),
        "script_uri": script_uris.retrieve(script_scope="training", **kw),
        "hyperparameters": hyperparameters.retrieve_default(include_container_hyperparameters=True, **kw),
    }


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    training = args[:1] == ["--training"]
    args = args[1:] if training else args
    if len(args) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(resolve_training(*args) if training else resolve(*args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
