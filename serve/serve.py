"""Serve the registered champion detector over HTTP (a thin wrapper over ``cifake serve``).

    python serve/serve.py                                # models:/cifake-detector@champion on :5001
    python serve/serve.py --alias challenger --port 5002 --workers 2

It runs ``mlflow models serve -m models:/<name>@<alias> --env-manager local -h 127.0.0.1`` from
the folder holding the tracking store (``mlflow.db``; or set MLFLOW_TRACKING_URI). Options:
``--model-name``, ``--alias``, ``--model-uri``, ``--host``, ``--port``, ``--workers``.
"""

from cifake_mlflow.cli import serve

if __name__ == "__main__":
    serve()
