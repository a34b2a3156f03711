"""The model file MLflow logs with every detector (MLflow's models-from-code).

MLflow runs this file to load a logged detector, with the package logged beside it on the
path; nothing is pickled, so a logged model does not depend on the Python objects of the
process that trained it.
"""

import mlflow

from cifake_mlflow.serving.pyfunc import CifakeDetector

mlflow.models.set_model(CifakeDetector())
