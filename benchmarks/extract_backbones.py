"""Steady-state speed of each backbone, per runtime and precision, against AlexNet's.

    python benchmarks/extract.py --backbone vgg16,resnet50 [--runtime openvino]
        [--precision float32|bf16|both] [--batch 64] [--repeats 3]

(or run this file directly with the same options). AlexNet, the baseline, is always
measured in the same run. Each backbone runs in a child process of its own (its weights
loaded once, then freed with the process): for every runtime (TensorFlow, and OpenVINO
with ``--runtime openvino``) and precision, one warm-up batch (tracing, converting,
compiling), then `repeats` timed batches of `batch` images at the backbone's input size;
the best batch gives the steady-state images/s. Printed per row: images/s, its ratio to
AlexNet's in the same runtime and precision, the GFLOP/s reached (2 x the registry's
multiply-adds an image) and its share of the machine's matrix-product rate in that
precision (a 4096^3 product in TensorFlow, best of three, measured in the same child
right before the row's batches, so that both see the same load): how close each network
is to the limit.

The weights are seeded RANDOM weights in each backbone's real layout (`weights demo`):
speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BASELINE = "alexnet"


def _child(name: str, runtimes: list[str], precisions: list[str], batch: int, repeats: int) -> None:
    """Measure one backbone; print one JSON line per (runtime, precision)."""
    from featcache.extractor.fingerprint import ExtractorSpec
    from featcache.extractor.network import runtime_named
    from featcache.extractor.registry import backbone_named

    backbone = backbone_named(name)
    layer = backbone.default_layer
    with tempfile.TemporaryDirectory(prefix=f"featcache-{name}-") as tmp:
        path = backbone.write_demo_weights(Path(tmp) / backbone.weights_file, 0)
        weights = backbone.read_weights(path)
    size = backbone.input_size
    x = np.random.default_rng(0).normal(0, 60, (batch, size, size, 3)).astype(np.float32)
    from extract import matmul_rate

    for runtime in runtimes:
        for precision in precisions:
            peak = matmul_rate(precision, repeats=3)
            spec = ExtractorSpec(
                weights.sha256, "caffe", "squash", precision, network=name, runtime=runtime
            )
            start = time.perf_counter()
            network: Any = runtime_named(runtime, None, (layer,)).build(weights, spec)
            network.forward(x, [layer])
            first = time.perf_counter() - start
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                network.forward(x, [layer])
                best = min(best, time.perf_counter() - start)
            if hasattr(network, "close"):
                network.close()
            row = {
                "backbone": name,
                "runtime": runtime,
                "precision": precision,
                "layer": layer,
                "images_per_s": batch / best,
                "first_batch_s": first,
                "gflop_per_image": 2 * backbone.gmacs,
                "peak_gflops": peak,
            }
            print(json.dumps(row), flush=True)


def measure(
    names: list[str], runtimes: list[str], precisions: list[str], batch: int, repeats: int
) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        command = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--runtimes",
            ",".join(runtimes),
            "--precision",
            ",".join(precisions),
            "--batch",
            str(batch),
            "--repeats",
            str(repeats),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                rows.append(row)
                print(
                    f"  measured {row['backbone']} {row['runtime']} {row['precision']}: "
                    f"{row['images_per_s']:.1f} img/s (first batch {row['first_batch_s']:.1f} s)",
                    flush=True,
                )
    return rows


def report(rows: list[dict[str, Any]], batch: int) -> None:
    base = {
        (r["runtime"], r["precision"]): r["images_per_s"] for r in rows if r["backbone"] == BASELINE
    }
    print(
        f"\nsteady state, best of the timed batches of {batch} (seeded RANDOM weights; "
        "GFLOP = 2 x multiply-adds):"
    )
    print(
        f"  {'backbone':<9} {'runtime':<10} {'precision':<9} {'layer':<9} {'img/s':>7} "
        f"{'vs alexnet':>10} {'GFLOP/img':>9} {'GFLOP/s':>8} {'peak':>6} {'share':>6}"
    )
    for r in rows:
        rate = r["images_per_s"]
        ratio = rate / base[(r["runtime"], r["precision"])]
        reached = rate * r["gflop_per_image"]
        peak = r["peak_gflops"]
        print(
            f"  {r['backbone']:<9} {r['runtime']:<10} {r['precision']:<9} {r['layer']:<9} "
            f"{rate:7.1f} {ratio:9.3f}x {r['gflop_per_image']:9.2f} {reached:8.0f} "
            f"{peak:6.0f} {reached / peak:6.0%}"
        )
    print(
        "peak: the matrix-product rate (TensorFlow, 4096^3, best of 3) in that precision, "
        "measured in the same child just before the row's batches"
    )


def run(names: list[str], runtime: str, precision: str, batch: int, repeats: int) -> None:
    """The comparison `benchmarks/extract.py --backbone` runs."""
    from featcache.extractor.registry import backbone_named

    names = [BASELINE, *(n for n in dict.fromkeys(names) if n != BASELINE)]
    for name in names:
        backbone_named(name)  # an unknown name fails before any work
    runtimes = ["tensorflow", "openvino"] if runtime == "openvino" else ["tensorflow"]
    precisions = ["float32", "bf16"] if precision == "both" else [precision]
    print(
        f"backbones {', '.join(names)}; runtimes {', '.join(runtimes)}; precisions "
        f"{', '.join(precisions)}; weights: seeded RANDOM weights in each backbone's real layout "
        "(not ImageNet; speed does not depend on them)"
    )
    before = os.getloadavg()[0]
    rows = measure(names, runtimes, precisions, batch, repeats)
    report(rows, batch)
    print(
        f"load average (1 min) {before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
        f"on {os.cpu_count()} CPUs: a loaded machine slows every row, the ratios less"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vgg16,resnet50")
    parser.add_argument("--runtime", default="tensorflow", choices=["tensorflow", "openvino"])
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--runtimes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(
            args.child,
            args.runtimes.split(","),
            args.precision.split(","),
            args.batch,
            args.repeats,
        )
        return
    run(args.backbone.split(","), args.runtime, args.precision, args.batch, args.repeats)


if __name__ == "__main__":
    main()
