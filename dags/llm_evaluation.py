"""One Airflow DAG per evaluation config in include/configs/ (or $LLM_EVAL_CONFIGS_DIR).

Thin on purpose: the factory in plugins/llmeval builds the DAGs; a broken config shows
up as an import error for that config file without hiding the other DAGs.
"""

from llmeval.factory import load_dags

globals().update(load_dags())
