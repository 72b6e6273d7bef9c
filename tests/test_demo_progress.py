"""`make demo`'s console (scripts/demo_progress.py): one line per task as it starts and ends, the
project's progress lines, errors; everything else only in the log file."""

from __future__ import annotations

import importlib.util
import io

from conftest import ROOT

spec = importlib.util.spec_from_file_location("demo_progress", ROOT / "scripts" / "demo_progress.py")
demo_progress = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo_progress)

LINES = [  # as `airflow dags test` prints them, abridged
    "2026-12-06T01:00:00.1Z [info     ] [DAG TEST] starting task_id=plan map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501\n",
    "2026-12-06T01:00:00.2Z [info     ] evaluating 2 model(s) on 48 records: ['a', 'b'] [llmeval.dag] loc=run_tasks.py:60\n",
    "2026-12-06T01:00:00.3Z [info     ] Task instance state updated [airflow.api_fastapi] new_state=success rows_affected=1\n",
    "2026-12-06T01:00:00.4Z [info     ] [DAG TEST] end task task_id=plan map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563\n",
    "2026-12-06T01:00:01.0Z [info     ] [DAG TEST] starting task_id=model.evaluate map_index=1 [airflow.sdk.definitions.dag]\n",
    "2026-12-06T01:00:02.0Z [info     ] llmeval.evaluation.generate INFO generate b: 24/48 (50%) 3.1 rec/s ETA 8s, cache hits 0, failed 0 [llmeval.local] loc=jobs.py:80\n",
    "2026-12-06T01:00:02.5Z [info     ] Filling up the DagBag from /dags [airflow.dag_processing.dagbag.DagBag]\n",
    "2026-12-06T01:00:03.0Z [error    ] LLM evaluation d: model b failed at step evaluate: boom [llmeval.taskrun] loc=taskrun.py:151\n",
    "2026-12-06T01:00:03.1Z [info     ] Task instance state updated [airflow.api_fastapi] new_state=failed rows_affected=1\n",
    "2026-12-06T01:00:03.2Z [info     ] [DAG TEST] end task task_id=model.evaluate map_index=1 [airflow.sdk.definitions.dag]\n",
]


def test_tasks_progress_and_errors_are_shown_the_rest_goes_to_the_log():
    log, out = io.StringIO(), io.StringIO()
    demo_progress.relay(iter(LINES), log, out)
    shown = out.getvalue().splitlines()
    assert log.getvalue() == "".join(LINES)
    assert shown[0] == "  > plan" and shown[2].startswith("  = plan success (")
    assert "evaluating 2 model(s) on 48 records" in shown[1]
    assert shown[3] == "  > model.evaluate[1]"
    assert "generate b: 24/48 (50%) 3.1 rec/s" in shown[4] and "llmeval.evaluation.generate" not in shown[4]
    assert "model b failed at step evaluate: boom" in shown[5]
    assert shown[6].startswith("  x model.evaluate[1] failed (")
    assert not any("DagBag" in line for line in shown) and len(shown) == 7
