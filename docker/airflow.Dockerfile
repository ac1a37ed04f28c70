# Airflow 3 with this project: the DAGs, the `purchases` package, dbt and their pinned requirements.
# Used by every Airflow service of docker-compose.yml (init, api-server, scheduler, dag-processor,
# triggerer, and the Celery workers of the `celery` profile) and by the warehouse-init job.
FROM apache/airflow:3.3.2-python3.11

ENV PROJECT_ROOT=/opt/purchases \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/purchases/dags \
    DBT_PROJECT_DIR=/opt/purchases/dbt \
    DBT_PROFILES_DIR=/opt/purchases/dbt

USER root
RUN mkdir -p /opt/purchases && chown airflow:0 /opt/purchases
USER airflow
WORKDIR /opt/purchases
# Requirements first, so that editing the code does not reinstall them. Pinning apache-airflow to the
# image's version keeps pip from moving Airflow while it resolves the rest.
COPY --chown=airflow:0 requirements.txt pyproject.toml ./
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r requirements.txt

COPY --chown=airflow:0 purchases ./purchases
COPY --chown=airflow:0 ingest_api ./ingest_api
COPY --chown=airflow:0 dags ./dags
COPY --chown=airflow:0 dbt ./dbt
COPY --chown=airflow:0 scripts ./scripts
# /opt/airflow/auth: the named volume for the admin's password file takes this directory's owner.
# Editable, so that code locating the dbt project from the package finds /opt/purchases/dbt.
RUN pip install --no-cache-dir --no-deps -e . \
    && mkdir -p dbt/target dbt/logs /opt/airflow/auth
