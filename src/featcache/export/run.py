"""The fresh process that runs an exported model with its own runtime, for verification.

``python -m featcache.export.run FORMAT MODEL_FOLDER INPUTS.npz OUTPUTS.npz`` loads the model
(`featcache.export.formats.load_model`: onnxruntime, TensorFlow or OpenVINO, nothing of
featcache's own network or heads), runs every ``images_I`` array of INPUTS (uint8 [N, H, W,
3]) and writes ``probabilities_I`` to OUTPUTS, with ``report`` (JSON: the runtime, the
metadata and class names read back from the file, seconds). Exit 1 with the reason on
stderr if the model cannot be loaded or run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from featcache.errors import FeatcacheError

__all__: list[str] = []  # a program: python -m featcache.export.run


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: python -m featcache.export.run FORMAT MODEL INPUTS.npz OUTPUTS.npz")
        return 2
    fmt, folder, inputs, outputs = argv[0], Path(argv[1]), Path(argv[2]), Path(argv[3])
    from featcache.export.formats import load_model

    started = time.perf_counter()
    try:
        model = load_model(fmt, folder)
        loaded = time.perf_counter()
        results: dict[str, np.ndarray] = {}
        images = 0
        with np.load(inputs, allow_pickle=False) as batches:
            for name in sorted(batches.files):
                batch = batches[name]
                results[name.replace("images_", "probabilities_")] = model.run(batch)
                images += len(batch)
    except (FeatcacheError, RuntimeError, ValueError, OSError) as exc:
        print(f"{folder}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    report = {
        "runtime": model.runtime,
        "runtime_version": model.runtime_version,
        "metadata": model.metadata,
        "class_names": model.class_names,
        "load_seconds": loaded - started,
        "run_seconds": time.perf_counter() - loaded,
        "images": images,
    }
    results["report"] = np.array(json.dumps(report))
    np.savez(outputs, **results)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
