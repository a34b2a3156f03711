"""``python -m cifake_mlflow`` runs the ``cifake`` CLI (used by the MLproject entry points)."""

from cifake_mlflow.cli import main

main()
