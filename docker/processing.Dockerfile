# Image for the SageMaker Processing job that runs the evaluation entry point.
# The code itself is shipped by the DAG as a Processing input (/opt/ml/processing/input/code),
# so this image only needs the worker environment; `python3` must be its interpreter.
#   docker build -f docker/processing.Dockerfile -t llmeval-worker .
#   aws ecr create-repository --repository-name llmeval-worker
#   docker tag llmeval-worker <account>.dkr.ecr.<region>.amazonaws.com/llmeval-worker:latest
#   docker push <account>.dkr.ecr.<region>.amazonaws.com/llmeval-worker:latest
FROM python:3.11-slim

COPY requirements-worker.txt requirements-worker-nodeps.txt /opt/llmeval/
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -r /opt/llmeval/requirements-worker.txt \
 && pip install --no-cache-dir --no-deps -r /opt/llmeval/requirements-worker-nodeps.txt
ENV PYTHONUNBUFFERED=1 HF_HUB_DISABLE_TELEMETRY=1
