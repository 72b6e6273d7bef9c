"""`[core] hostname_callable` for the test stack's Celery workers: two workers on one machine
report distinct hostnames on their task instances, as two machines would."""

import os


def hostname() -> str:
    return os.environ["LLM_EVAL_TEST_HOSTNAME"]
