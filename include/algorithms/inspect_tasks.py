"""An example Inspect AI task: a dozen capital cities, scored by whether the answer names the
city. Its samples sit beside it (`capitals.jsonl`), so they ship with it to a Processing job.

Use it with `{algorithm: Inspect, task: inspect_tasks.py@capitals}`; `instructions` is a task
argument (`task_args: {instructions: ...}`).
"""

from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import json_dataset
from inspect_ai.scorer import includes
from inspect_ai.solver import generate, system_message

SAMPLES = Path(__file__).with_name("capitals.jsonl")


@task
def capitals(instructions: str = "Answer with the name of the city only.") -> Task:
    return Task(
        dataset=json_dataset(str(SAMPLES)),
        solver=[system_message(instructions), generate()],
        scorer=includes(),
    )
