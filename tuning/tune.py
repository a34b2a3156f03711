"""Thin entry point: run an Optuna study over the detector (same as `cifake tune`).

    python tuning/tune.py --data ../shared/data --weights none --image-size 32 --n-trials 6

All logic lives in cifake_mlflow.tuning; the search space is tuning/search_space.yaml.
"""

from cifake_mlflow.cli import main

if __name__ == "__main__":
    main(["tune", *__import__("sys").argv[1:]])
