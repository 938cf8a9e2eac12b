# syntax=docker/dockerfile:1
# Two images from one file; docker-compose.yml builds both.
#
#   docker build --target web -t autoregress-web .                  Flask + gunicorn, no torch
#   docker build --target worker -t autoregress-worker:cpu .         Celery worker, CPU torch (default)
#   docker build --target worker --build-arg TORCH_VARIANT=cu128 -t autoregress-worker:cuda .
#
# TORCH_VARIANT names a PyTorch wheel index: cpu, or a CUDA build such as cu126 or cu128. The CUDA
# wheels carry their own CUDA runtime, so the same slim base runs on a GPU host that has the NVIDIA
# driver and container toolkit; bf16 is chosen automatically on CUDA.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- shared base: Python, no build tools, the project importable from /app -----------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app
WORKDIR /app

# ---- dependency layers: one virtual environment per image, from pyproject.toml only ---------
FROM base AS web-deps
COPY pyproject.toml /build/pyproject.toml
COPY deploy/requirements.py /build/deploy/requirements.py
RUN python -m venv /opt/venv \
 && python /build/deploy/requirements.py web > /build/requirements.txt \
 && pip install -r /build/requirements.txt

FROM base AS worker-deps
ARG TORCH_VARIANT=cpu
ARG TORCH_SPEC="torch>=2.3,<2.14"
# torch alone first, before pyproject.toml is even copied: its layer (0.2 to 3 GB) stays cached
# while the project's other dependencies change.
RUN python -m venv /opt/venv \
 && pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "${TORCH_SPEC}"
COPY pyproject.toml /build/pyproject.toml
COPY deploy/requirements.py /build/deploy/requirements.py
# With a constraints.txt (pinned versions), copy it too and add `-c /build/constraints.txt` here.
RUN python /build/deploy/requirements.py worker > /build/requirements.txt \
 && pip install -r /build/requirements.txt

# ---- runtime base: an unprivileged user; writable data dir and Hugging Face cache ----------
FROM base AS runtime
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/app app \
 && mkdir -p /app/data /cache/huggingface \
 && chown app:app /app/data /cache/huggingface
ENV DATA_DIR=/app/data \
    HF_HOME=/cache/huggingface

# ---- web: the Flask app under gunicorn; contract and web code only, no torch ---------------
FROM runtime AS web
COPY --from=web-deps /opt/venv /opt/venv
COPY contract/ contract/
COPY web/ web/
USER app
EXPOSE 8000
CMD ["python", "-m", "gunicorn", "--workers", "4", "--worker-class", "gthread", "--threads", "16", \
     "--bind", "0.0.0.0:8000", "--access-logfile", "-", "--graceful-timeout", "10", \
     "--limit-request-line", "8190", "--config", "python:web.gunicorn_conf", "web:create_app()"]

# ---- worker: one Celery process holding one model (threads pool), the demo model included --
FROM runtime AS worker
COPY --from=worker-deps /opt/venv /opt/venv
COPY contract/ contract/
COPY engine/ engine/
COPY worker/ worker/
COPY models/ models/
USER app
CMD ["celery", "-A", "worker.celery_app", "worker", "--pool", "threads", "--hostname", "worker@%h", \
     "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
