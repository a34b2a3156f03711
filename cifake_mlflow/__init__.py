"""cifake-mlflow: an experiment-tracked MobileNetV2 detector of AI-generated images (CIFAKE)."""

__version__ = "0.1.0"
