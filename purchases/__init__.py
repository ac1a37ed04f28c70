"""Purchases Recorder: what the ingest API, the Airflow DAGs and the tests share."""
