"""Local fine-tune: LoRA on a local causal LM, on the CPU, merged into a full model folder.

Instruction data is JSON Lines with `instruction` and `response` (the JumpStart
instruction-tuning field names). With `instruction_tuned` the pair goes through the
model's chat template and only the response tokens count in the loss; otherwise the
model learns the plain concatenation. The merged model is saved with its tokenizer, so
the local server serves it like any other model folder.

    python -m llmeval.evaluation.finetune --model-id smollm2-135m-instruct \
        --train train.jsonl --validation val.jsonl --output-dir out --epochs 2

Writes training_metrics.json: loss per step, mean validation loss, wall time, and the
sha256 of the saved weights (the tuned model's identity in the response cache).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("llmeval.finetune")


def read_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or not row.get("instruction") or not row.get("response"):
            raise ValueError(f"{path}:{number}: expected an object with 'instruction' and 'response'")
        pairs.append((str(row["instruction"]), str(row["response"])))
    if not pairs:
        raise ValueError(f"{path}: no training examples")
    return pairs


def encode(tokenizer, pairs: list[tuple[str, str]], max_length: int, chat: bool) -> list[dict[str, list[int]]]:
    """Token ids and labels; prompt tokens are masked (-100) so only the response is learned."""
    examples = []
    for instruction, response in pairs:
        if chat:
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
            )
        else:
            prompt = f"{instruction}\n"
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt_ids + answer_ids)[:max_length]
        labels = ([-100] * len(prompt_ids) + answer_ids)[:max_length]
        examples.append({"input_ids": ids, "labels": labels})
    return examples


def _batch(tokenizer, examples: list[dict[str, list[int]]]):
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([e["input_ids"] + [pad] * (width - len(e["input_ids"])) for e in examples])
    labels = torch.tensor([e["labels"] + [-100] * (width - len(e["labels"])) for e in examples])
    mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in examples])
    return ids, mask, labels


def mean_loss(model, tokenizer, examples, batch_size: int) -> float:
    import torch

    model.eval()
    losses = []
    with torch.inference_mode():
        for i in range(0, len(examples), batch_size):
            ids, mask, labels = _batch(tokenizer, examples[i : i + batch_size])
            losses.append(float(model(input_ids=ids, attention_mask=mask, labels=labels).loss))
    model.train()
    return sum(losses) / len(losses)


def train_lora(model: Any, tokenizer: Any, train: list[Any], args: argparse.Namespace, started: float) -> list[dict]:
    """The training loop: AdamW over the LoRA weights, shuffled batches, at most `max_steps`;
    the loss of every step (logged as it goes)."""
    import torch

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = min(args.max_steps or steps_per_epoch * args.epochs, steps_per_epoch * args.epochs)
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(args.epochs):
        order = list(range(len(train)))
        random.shuffle(order)
        for i in range(0, len(order), args.batch_size):
            if step >= total:
                break
            ids, mask, labels = _batch(tokenizer, [train[j] for j in order[i : i + args.batch_size]])
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            history.append({"step": step, "epoch": epoch + 1, "loss": round(float(loss), 5)})
            elapsed = time.perf_counter() - started
            log.info("step %d/%d epoch %d loss %.4f (%.1fs)", step, total, epoch + 1, float(loss), elapsed)
    return history


def finetune(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model

    from llmeval.evaluation.local_models import load_causal_lm, resolve_model_dir

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    model, tokenizer = load_causal_lm(resolve_model_dir(args.model_id))
    tokenizer.padding_side = "right"
    train = encode(tokenizer, read_pairs(args.train), args.max_input_length, args.instruction_tuned)
    validation = (
        encode(tokenizer, read_pairs(args.validation), args.max_input_length, args.instruction_tuned)
        if args.validation
        else []
    )
    lora = LoraConfig(
        r=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    validation_before = mean_loss(model, tokenizer, validation, args.batch_size) if validation else None
    history = train_lora(model, tokenizer, train, args, started)
    step = len(history)
    validation_after = mean_loss(model, tokenizer, validation, args.batch_size) if validation else None
    merged = model.merge_and_unload()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(args.output_dir)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(args.output_dir)
    digest = hashlib.sha256((args.output_dir / "model.safetensors").read_bytes()).hexdigest()
    metrics = {
        "base_model": args.model_id,
        "steps": step,
        "epochs": args.epochs,
        "train_examples": len(train),
        "validation_examples": len(validation),
        "train_loss_first": history[0]["loss"] if history else None,
        "train_loss_last": history[-1]["loss"] if history else None,
        "validation_loss_before": validation_before,
        "validation_loss_after": validation_after,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "weights_sha256": digest,
        "loss_per_step": history,
    }
    (args.output_dir / "training_metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info(
        "saved the tuned model to %s: validation loss %s -> %s in %.0fs",
        args.output_dir,
        validation_before,
        validation_after,
        metrics["wall_seconds"],
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmeval.evaluation.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--validation", type=Path)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: all epochs)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--max-input-length", type=int, default=128)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--instruction-tuned", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s", stream=sys.stdout)
    finetune(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
