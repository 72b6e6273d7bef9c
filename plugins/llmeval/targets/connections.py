"""The Airflow connections of a config's OpenAI-compatible models: where each is served
(the connection's host, with its schema and port when the host has none) and its API key
(the password, or on SageMaker the Secrets Manager secret named by the extra
`api_key_secret_arn`). Read by the task that starts the evaluation, never written to the YAML,
the run store or the job's command line."""

from __future__ import annotations

from llmeval.config import EvalConfig
from llmeval.contracts import ModelKind
from llmeval.evaluation.served import ServedAt

SECRET_EXTRA = "api_key_secret_arn"


class ConnectionProblem(RuntimeError):
    """A model's connection is missing or cannot be used where the evaluation runs."""


def _called(cfg: EvalConfig, names: list[str]) -> list[tuple[str, str]]:
    """(model, connection id) of the OpenAI-compatible models among `names` and the judges."""
    models = [cfg.model(n) for n in names] + cfg.judged_by
    return [(m.name, m.connection_id or "") for m in models if m.kind == ModelKind.OPENAI_COMPATIBLE]


def check_connections(cfg: EvalConfig, names: list[str], for_processing: bool) -> None:
    """Refuse the run before anything is deployed when a model's connection does not exist or
    would put its API key where others can read it."""
    problems = []
    for model, conn_id in _called(cfg, names):
        try:
            served_at(cfg, model, conn_id, for_processing)
        except ConnectionProblem as exc:
            problems.append(str(exc))
    if problems:
        raise ConnectionProblem("; ".join(problems))


def served_at(cfg: EvalConfig, model: str, conn_id: str, for_processing: bool) -> ServedAt:
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    where = f"model {model!r} (connection_id {conn_id!r} in pipeline {cfg.pipeline.name!r})"
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ConnectionProblem(
            f"{where}: no Airflow connection {conn_id!r}; create it with the base URL as its host (e.g. "
            "https://llm.example.com/v1) and the API key as its password"
        ) from None
    if not conn.host:
        raise ConnectionProblem(f"{where}: the connection has no host; set it to the base URL")
    base = conn.host if "://" in conn.host else f"{conn.schema or 'https'}://{conn.host}"
    if conn.port and base.count(":") < 2:
        scheme, _, rest = base.partition("://")
        host, slash, path = rest.partition("/")
        base = f"{scheme}://{host}:{conn.port}{slash}{path}"
    secret = (conn.extra_dejson or {}).get(SECRET_EXTRA)
    if for_processing and conn.password and not secret:
        raise ConnectionProblem(
            f"{where}: a SageMaker Processing job's environment can be read by anyone allowed to describe it, so "
            f"the API key cannot go there: store it in Secrets Manager and put the secret's ARN in the "
            f"connection's extra {SECRET_EXTRA} (the execution role reads it)"
        )
    if for_processing:
        return ServedAt(base, api_key_secret_arn=secret)
    return ServedAt(base, api_key=conn.password or None, api_key_secret_arn=secret)


def served_models(cfg: EvalConfig, names: list[str], for_processing: bool) -> dict[str, ServedAt]:
    """Where each OpenAI-compatible model among `names` and the judges is served."""
    return {model: served_at(cfg, model, conn_id, for_processing) for model, conn_id in _called(cfg, names)}
