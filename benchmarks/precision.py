"""Training-step rate of the 32 px detector under mixed precision and XLA, against float32.

    python benchmarks/precision.py [--quick]

``mixed_precision`` and ``jit_compile`` default to on with a GPU and off on CPU; this measures
what they would do on the machine at hand to the accurate recipe's model (native stem,
``alpha`` 1, batch 128, AdamW): float16 mixed precision (what ``mixed_precision=on`` sets,
with Keras' dynamic loss scaling, as training compiles it), bfloat16 mixed precision (no
option selects it; CPUs with AVX512_BF16 or AMX compute it natively), and the XLA-compiled
step (``jit_compile=on``). One random in-memory batch is repeated, so only the model's step is
timed; options are timed in alternating rounds and each reports its median. A ratio above 1
means faster than float32 without XLA, the CPU default.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import widths
from common import script_main

import cifake_mlflow  # noqa: F401  (before TensorFlow: its start-up lines stay off the console)

#: name: (Keras dtype policy, XLA-compiled step); the first is the baseline
OPTIONS = {
    "float32": ("float32", False),
    "mixed_bfloat16": ("mixed_bfloat16", False),
    "mixed_float16": ("mixed_float16", False),
    "xla": ("float32", True),
}


def compiled(policy: str, jit_compile: bool):
    """The accurate recipe's model (:func:`widths.compiled`) built under the dtype ``policy``."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return widths.compiled({}, jit_compile)
    finally:
        keras.config.set_dtype_policy(previous)


def run(data: Path, quick: bool = False) -> dict[str, dict]:
    """Measure; returns results.json entries (``data`` is unused: the batches are random)."""
    models = {name: compiled(*option) for name, option in OPTIONS.items()}
    return widths.option_rates(models, quick, "precision_")


def main(argv: list[str] | None = None) -> int:
    return script_main(run, __doc__, ("option", "float32"), argv)


if __name__ == "__main__":
    sys.exit(main())
