"""Stage 6, registry: register a run's model through the champion/challenger gate.

``register_run`` is the one way in (``cifake register``, a study's best trial, the quick
start); ``gate`` holds the champion/challenger rule, ``card`` the version's model card.
"""

from cifake_mlflow.registry.gate import (
    CHALLENGER,
    CHAMPION,
    GATE_METRICS,
    GateDecision,
    RegistryError,
    champion,
    champion_uri,
    gate_metric,
    logged_model_uri,
    register_and_gate,
    score_model,
)
from cifake_mlflow.registry.register import (
    attach_evaluation,
    register_run,
    run_config,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "GATE_METRICS",
    "GateDecision",
    "RegistryError",
    "attach_evaluation",
    "champion",
    "champion_uri",
    "gate_metric",
    "logged_model_uri",
    "register_and_gate",
    "register_run",
    "run_config",
    "score_model",
]
