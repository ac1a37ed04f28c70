# Airflow 3 with this project: the DAGs, the plugin, the `purchases` package, dbt and their pinned
# requirements. Used by every Airflow service of docker-compose.yml (init, api-server, scheduler,
# dag-processor, triggerer, and the Celery workers of the `celery` profile) and by warehouse-init.
FROM apache/airflow:3.3.2-python3.11

ENV PROJECT_ROOT=/opt/purchases \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/purchases/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/purchases/plugins \
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

# purchases.transform runs the dbt found next to the Python interpreter (as in a virtualenv); in this
# image pip may have put it elsewhere on PATH.
USER root
RUN python_dir="$(dirname "$(python -c 'import sys; print(sys.executable)')")" \
    && if [ ! -x "$python_dir/dbt" ]; then ln -s "$(command -v dbt)" "$python_dir/dbt"; fi
USER airflow

COPY --chown=airflow:0 purchases ./purchases
COPY --chown=airflow:0 ingest_api ./ingest_api
COPY --chown=airflow:0 dags ./dags
COPY --chown=airflow:0 plugins ./plugins
COPY --chown=airflow:0 dbt ./dbt
COPY --chown=airflow:0 scripts ./scripts
# Editable, so that code locating the dbt project from the package finds /opt/purchases/dbt.
# The dbt manifest the DAG is rendered from is built here (dbt parse needs no database, but the profile
# it loads requires its DBT_* variables: stand-ins, for this command only; docker-compose.yml sets the real
# ones), so every container starts with it. /opt/airflow/auth: the named volume mounted there takes this
# directory's owner. /opt/airflow/pages: each container's working copies of the docs pages (published to the
# warehouse, purchases/pages.py).
RUN pip install --no-cache-dir --no-deps -e . \
    && DBT_HOST=localhost DBT_PORT=5432 DBT_USER=parse DBT_DBNAME=parse DBT_THREADS=1 \
        python -m purchases.transform parse \
    && mkdir -p /opt/airflow/auth /opt/airflow/pages
