"""Finished runs in an experiment tracker: `records` turns a result row and its curves into what a tracker
stores (params, tags, metrics, the config), `mlflow_export` writes them to MLflow, one tracker run per row."""
