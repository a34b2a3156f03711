"""Thin entry point: run an Optuna study over the detector (same as `cifake tune`).

    python tuning/tune.py --data PATH --weights none --image-size 32 --n-trials 6 \
        --search-space tuning/search_space_scratch.yaml

All logic lives in cifake_mlflow.tuning; the search spaces are the YAML files beside this one.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package first

from cifake_mlflow.cli import main

if __name__ == "__main__":
    main(["tune", *sys.argv[1:]])
