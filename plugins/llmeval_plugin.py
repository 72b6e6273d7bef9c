"""The Airflow plugin: the LLM evaluations page in the navigation and a Leaderboard tab on
every DAG run (evaluation DAGs show their leaderboard, other DAGs say they are not one),
served by the FastAPI app in `llmeval.web.app` behind Airflow's authentication.

Every Airflow process loads plugins, task processes included, so this module imports
nothing heavy: the app is built on the first request the api-server routes to it.
"""

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/llm-evaluations"
_BASE = URL_PREFIX.lstrip("/")  # relative to the UI's base URL, so a deployment under a path prefix works


class LazyApp:
    """An ASGI app that imports and builds `llmeval.web.app` when it is first called."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from llmeval.web.app import app

            self._app = app
        await self._app(scope, receive, send)


class LLMEvaluationPlugin(AirflowPlugin):
    name = "llm_evaluation"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "LLM evaluations"}]
    external_views = [
        {"name": "LLM evaluations", "href": f"{_BASE}/", "destination": "nav", "url_route": "llm-evaluations"},
        {
            "name": "Leaderboard",
            "href": f"{_BASE}/dags/{{DAG_ID}}/runs/{{RUN_ID}}/leaderboard",
            "destination": "dag_run",
            "url_route": "llm-leaderboard",
        },
    ]
