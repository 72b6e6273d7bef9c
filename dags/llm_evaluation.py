"""One Airflow DAG per evaluation config in include/configs/ (or $LLM_EVAL_CONFIGS_DIR).

Thin on purpose: `llmeval.dag` builds the DAGs; a broken config shows
up as an import error for that config file without hiding the other DAGs.
"""

from llmeval.dag import load_dags

globals().update(load_dags())
