"""Extraction speed, side by side in one run: featcache against the seed program.

    python benchmarks/extract.py [--images 1024] [--precision float32|bf16] [--weights W]
    python benchmarks/extract.py --backbone vgg16,resnet50 [--runtime openvino]
        [--precision float32|bf16|both]

Every figure is measured in this run on the same images and weights:

- whole-process wall time (start-up included) of the seed program and of
  ``featcache extract --profile udacity``, their ratio, and each one's images/s;
- the network's share of featcache's time and where the rest went (``--profile-time``);
- the time of a fully cached rerun against the first run;
- the machine's matrix-product rate (a 4096^3 product in TensorFlow) in the same precision,
  and the fraction of it the network reaches (AlexNet: about 1.44 GFLOP an image);
- with ``--precision bf16``: bf16 against float32 fc7 (cosine similarity) and the accuracy
  of a softmax head trained on each, on the bundled digits sample;
- with ``--layers``: the time of each layer of the network on one batch;
- with ``--engine ray``: Ray with 2 workers against the local engine on the same images, on
  a Ray started here or on the cluster at ``--ray-address`` (run this on one of its
  machines, with the environment that cluster needs, e.g. RAY_AUTH_TOKEN), and where the
  Ray run's time went: connecting, the first worker's start (TensorFlow and the weights
  loaded in each worker), then the batches;
- with ``--runtime openvino``: instead of the above, one table over the same images: the
  seed program, TensorFlow float32 and bf16, and OpenVINO float32 and bf16, each once with
  the model converted in that run and once with the converted model already in the store;
  whole-process seconds, ratio to the seed program, images/s overall and in the network
  (steady state); then OpenVINO's fc7 against TensorFlow's and bf16's against float32;
- with ``--backbone``: instead of all the above, each backbone's steady-state images/s per
  runtime and precision against AlexNet's in the same run, and how close each comes to
  the machine's matrix-product rate (``benchmarks/extract_backbones.py``).

Weights are seeded RANDOM weights in the real layout unless --weights is given: speed does
not depend on the values, and the accuracies printed are those of random features.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "reference" / "seed_program.py"
GFLOP_PER_IMAGE = 1.44


def run(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def children_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def make_images(folder: Path, count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth colour blobs, not noise, so PNG decoding costs what real signs cost.
    base = rng.integers(0, 256, (count, 4, 4, 3), dtype=np.uint8)
    images = np.stack([np.asarray(Image.fromarray(b).resize((32, 32))) for b in base])
    for i, pixels in enumerate(images):
        cls = folder / str(i % 43)
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(cls / f"{i:05d}.png")
    return images


def matmul_rate(precision: str, repeats: int = 5) -> float:
    """GFLOP/s of a 4096x4096 product in TensorFlow, best of `repeats`."""
    import tensorflow as tf

    dtype = {"float32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}[precision]
    a = tf.cast(tf.random.normal((4096, 4096)), dtype)
    b = tf.cast(tf.random.normal((4096, 4096)), dtype)
    product = tf.function(lambda: tf.matmul(a, b))
    product().numpy()
    best = min(_timed(lambda: product().numpy()) for _ in range(repeats))
    return 2 * 4096**3 / best / 1e9


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def extract_cmd(
    data: Path, store: Path, weights: Path, profile: str, precision: str, *extra: str
) -> list[str]:
    command = f"extract {data} --store {store} --weights {weights} --profile {profile}"
    command += f" --precision {precision} --dataset bench --profile-time"
    return [sys.executable, "-m", "featcache", *command.split(), *extra]


def layer_times(weights: Path, precision: str, batch: int = 64) -> None:
    """Time each stage of the caffe network on one batch, each stage on its own."""
    import tensorflow as tf

    from featcache.extractor.alexnet import AlexNet
    from featcache.extractor.weights import load_weights

    net = AlexNet(load_weights(weights), "caffe", precision=precision)
    p = net._params
    stages: list[tuple[str, Callable[[Any], Any]]] = [
        ("conv1+lrn+pool", lambda h: net._lrn_pool(net._conv(h, "conv1", 4, "VALID"))),
        ("conv2+lrn+pool", lambda h: net._lrn_pool(net._conv(h, "conv2", 1, 2))),
        ("conv3", lambda h: net._conv(h, "conv3", 1, 1)),
        ("conv4", lambda h: net._conv(h, "conv4", 1, 1)),
        ("conv5+pool", lambda h: net._pool(net._conv(h, "conv5", 1, 1))),
        (
            "fc6",
            lambda h: tf.nn.relu(tf.matmul(tf.reshape(h, [batch, -1]), p["fc6"][0]) + p["fc6"][1]),
        ),
        ("fc7", lambda h: tf.nn.relu(tf.matmul(h, p["fc7"][0]) + p["fc7"][1])),
    ]
    x = np.random.default_rng(0).normal(0, 60, (batch, 227, 227, 3))
    h = tf.cast(tf.constant(x, tf.float32), net._dtype)
    print(f"time per layer ({precision}, caffe profile, batch {batch}):")
    for name, stage in stages:
        fn = tf.function(stage)
        out = fn(h)
        out.numpy()
        best = min(_timed(lambda fn=fn, h=h: fn(h).numpy()) for _ in range(3))
        print(f"  {name:<16} {1000 * best:8.1f} ms  ({1000 * best / batch:.2f} ms/image)")
        h = out


def network_rate(output: str) -> float:
    found = re.search(r"([\d.]+) img/s in the network", output)
    return float(found.group(1)) if found else float("nan")


def stages(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if line.startswith("  "))


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link the files of `source` (immutable converted models) into `target`."""
    for path in source.rglob("*"):
        dest = target / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, dest)


def _fc7(store: Path, images: Path) -> np.ndarray:
    from featcache.data.source import bytes_key
    from featcache.store import FeatureStore

    data = FeatureStore(store).vectors("bench")
    by_key = dict(zip(data.keys, data.X, strict=True))
    paths = sorted(images.rglob("*.png"), key=lambda p: p.name)
    return np.stack([by_key[bytes_key(p.read_bytes())] for p in paths])


def compare_runtimes(
    work: Path, weights: Path, count: int, seed_wall: float | None, seed_cpu: float | None
) -> None:
    """TensorFlow and OpenVINO, float32 and bf16, whole process on the same images."""
    images = work / "images"
    one = work / "one-image"
    make_images(one, 1, seed=99)
    rows: list[tuple[str, float, float, float]] = []
    stores: dict[str, Path] = {}

    def timed(label: str, store: Path, precision: str, runtime: str) -> None:
        cpu = children_cpu()
        wall, output = run(
            extract_cmd(images, store, weights, "udacity", precision, "--runtime", runtime)
        )
        assert f"{count} extracted" in output, output
        rows.append((label, wall, children_cpu() - cpu, network_rate(output)))
        stores[label] = store
        print(f"{label}: {wall:.2f} s; time by stage:\n{stages(output)}", flush=True)

    timed("TensorFlow float32", work / "tf-float32", "float32", "tensorflow")
    timed("TensorFlow bf16", work / "tf-bf16", "bf16", "tensorflow")
    for precision in ("float32", "bf16"):
        first = work / f"ov-{precision}"
        timed(f"OpenVINO {precision}, converts", first, precision, "openvino")
        # A store that already holds the converted model (and knows the weights' digest),
        # as when a user extracts a new dataset into it: one image extracted beforehand.
        cached = work / f"ov-{precision}-cached"
        _link_tree(first / "runtimes", cached / "runtimes")
        run(extract_cmd(one, cached, weights, "udacity", precision, "--runtime", "openvino"))
        timed(f"OpenVINO {precision}, model cached", cached, precision, "openvino")

    print(f"\nwhole process over {count} 32x32 PNGs (udacity profile), one run, same images")
    print("(wall seconds and their ratio to the seed's; CPU seconds of the process, which a")
    print("busy machine disturbs less, and their ratio; img/s overall and in the network):")
    header = (
        f"{'seconds':>8} {'vs seed':>8} {'CPU s':>7} {'vs seed':>8} {'img/s':>6} {'network':>8}"
    )
    print(f"  {'':<32} {header}")
    if seed_wall is not None and seed_cpu is not None:
        print(
            f"  {'seed program':<32} {seed_wall:8.2f} {'1.00x':>8} {seed_cpu:7.1f} "
            f"{'1.00x':>8} {count / seed_wall:6.1f}"
        )
    for label, wall, cpu, rate in rows:
        ratio = f"{seed_wall / wall:.2f}x" if seed_wall is not None else "-"
        cpu_ratio = f"{seed_cpu / cpu:.2f}x" if seed_cpu is not None else "-"
        print(
            f"  {label:<32} {wall:8.2f} {ratio:>8} {cpu:7.1f} {cpu_ratio:>8} "
            f"{count / wall:6.1f} {rate:8.1f}"
        )

    tf32 = _fc7(stores["TensorFlow float32"], images)
    ov32 = _fc7(stores["OpenVINO float32, converts"], images)
    ov16 = _fc7(stores["OpenVINO bf16, converts"], images)
    tf16 = _fc7(stores["TensorFlow bf16"], images)
    err = np.linalg.norm(ov32 - tf32, axis=1) / np.linalg.norm(tf32, axis=1)
    print(f"OpenVINO float32 fc7 vs TensorFlow's: relative error max {err.max():.2e}")
    pairs = (
        ("OpenVINO bf16 vs float32", ov16, ov32),
        ("TensorFlow bf16 vs float32", tf16, ov32),
        ("OpenVINO bf16 vs TensorFlow bf16", ov16, tf16),
    )
    for label, a, b in pairs:
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        print(f"{label}, fc7: cosine similarity mean {cosine.mean():.5f}, min {cosine.min():.5f}")


def compare_precisions(work: Path, weights: Path) -> None:
    """bf16 against float32 on the digits sample: cosine similarity and head accuracy."""
    from featcache.classifier.heads import SoftmaxHead
    from featcache.data import write_digits_folder
    from featcache.store import FeatureStore

    digits = write_digits_folder(work / "digits")
    results = {}
    for precision in ("float32", "bf16"):
        store = work / f"digits-{precision}"
        run(extract_cmd(digits, store, weights, "caffe", precision))
        results[precision] = FeatureStore(store).vectors("bench")
    a, b = results["float32"], results["bf16"]
    assert a.keys == b.keys
    cosine = (a.X * b.X).sum(1) / (np.linalg.norm(a.X, axis=1) * np.linalg.norm(b.X, axis=1))
    print(
        f"bf16 vs float32 fc7 cosine similarity over {len(cosine)} images: "
        f"mean {cosine.mean():.5f}, min {cosine.min():.5f}"
    )
    for precision, data in results.items():
        train = np.array([s == "train" for s in data.splits])
        head = SoftmaxHead(random_state=0).fit(data.X[train], data.y[train])
        accuracy = (head.predict(data.X[~train]) == data.y[~train]).mean()
        print(f"softmax head on {precision} digits features: test accuracy {accuracy:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "bf16", "fp16", "both"],
        help="both: float32 and bf16 (with --backbone)",
    )
    parser.add_argument("--weights", type=Path, help="real weights (default: seeded random)")
    parser.add_argument("--skip-seed", action="store_true", help="do not run the seed program")
    parser.add_argument("--engine", default="local", choices=["local", "ray"])
    parser.add_argument("--ray-address", help="Ray cluster for --engine ray (HOST:PORT, auto)")
    parser.add_argument("--layers", action="store_true", help="time each layer too")
    parser.add_argument(
        "--runtime",
        default="tensorflow",
        choices=["tensorflow", "openvino"],
        help="openvino: compare both runtimes in both precisions instead",
    )
    parser.add_argument(
        "--backbone",
        help="comma-separated backbones (vgg16,resnet50): their steady-state speed against "
        "AlexNet's, per runtime and precision, instead of the comparison with the seed",
    )
    parser.add_argument("--batch", type=int, default=64, help="with --backbone: images a batch")
    args = parser.parse_args()
    if args.backbone:
        from extract_backbones import run as compare_backbones

        compare_backbones(args.backbone.split(","), args.runtime, args.precision, args.batch, 3)
        return
    if args.precision == "both":
        parser.error("--precision both goes with --backbone")

    with tempfile.TemporaryDirectory(prefix="featcache-bench-") as tmp:
        work = Path(tmp)
        weights = args.weights
        if weights is None:
            from featcache.extractor.weights import write_demo_weights

            weights = write_demo_weights(work / "random_alexnet.npy", seed=0)
            print("weights: seeded RANDOM weights in the bvlc_alexnet.npy layout (not ImageNet)")
        images = make_images(work / "images", args.images)
        np.save(work / "images.npy", images)
        print(f"images: {args.images} PNG files, 32x32 RGB")

        seed_wall = seed_cpu = None
        if not args.skip_seed and SEED.exists():
            cpu = children_cpu()
            seed_wall, seed_out = run(
                [
                    sys.executable,
                    str(SEED),
                    str(weights),
                    str(work / "images.npy"),
                    str(work / "seed.npy"),
                    "--time",
                ]
            )
            seed_cpu = children_cpu() - cpu
            seed_rate = float(seed_out.split()[-1])
            print(
                f"seed program:     {seed_wall:7.2f} s whole process, "
                f"{args.images / seed_wall:6.1f} img/s overall, {seed_rate:6.1f} img/s in its loop"
            )

        if args.runtime == "openvino":
            compare_runtimes(work, weights, args.images, seed_wall, seed_cpu)
            return
        first_wall, first_out = run(
            extract_cmd(work / "images", work / "store", weights, "udacity", args.precision)
        )
        net_rate = network_rate(first_out)
        print(
            f"featcache ({args.precision}): {first_wall:7.2f} s whole process, "
            f"{args.images / first_wall:6.1f} img/s overall, {net_rate:6.1f} img/s in the network"
        )
        if seed_wall is not None:
            print(f"ratio seed / featcache, whole process: {seed_wall / first_wall:.2f}x")
        print("featcache time by stage (first run):")
        print(stages(first_out))

        cached_wall, cached_out = run(
            extract_cmd(work / "images", work / "store", weights, "udacity", args.precision)
        )
        assert f"{args.images} already cached" in cached_out, cached_out
        print(
            f"fully cached rerun: {cached_wall:.2f} s = "
            f"{100 * cached_wall / first_wall:.1f}% of the first run"
        )

        if seed_wall is not None:
            seed_fc7 = np.load(work / "seed.npy")
            from featcache.data.source import bytes_key
            from featcache.store import FeatureStore

            data = FeatureStore(work / "store").vectors("bench")
            by_key = dict(zip(data.keys, data.X, strict=True))
            paths = sorted((work / "images").rglob("*.png"), key=lambda p: p.name)
            ours = np.stack([by_key[bytes_key(p.read_bytes())] for p in paths])
            err = np.linalg.norm(ours - seed_fc7, axis=1) / np.linalg.norm(seed_fc7, axis=1)
            print(
                f"udacity fc7 vs seed program: relative error max {err.max():.2e} "
                f"(mean {err.mean():.2e})"
            )

        if args.engine == "ray":
            where = ["--ray-address", args.ray_address] if args.ray_address else []
            ray_wall, ray_out = run(
                extract_cmd(
                    work / "images",
                    work / "ray-store",
                    weights,
                    "udacity",
                    args.precision,
                    *("--engine", "ray", "--workers", "2", *where),
                )
            )
            print(
                f"ray engine, 2 workers on {args.ray_address or 'a Ray started here'}: "
                f"{ray_wall:7.2f} s whole process, {args.images / ray_wall:6.1f} img/s overall, "
                f"{network_rate(ray_out):6.1f} img/s from the first worker's start to the last "
                f"batch; local engine {args.images / first_wall:6.1f} img/s overall; "
                f"ray / local speed {first_wall / ray_wall:.2f}x"
            )
            print("ray run time by stage (ray_first_worker is part of network):")
            print(stages(ray_out))
            print("\n".join(line for line in ray_out.splitlines() if line.startswith("ray: ")))
        if args.layers:
            layer_times(weights, args.precision)
        peak = matmul_rate(args.precision)
        print(
            f"matrix-product rate ({args.precision}, 4096^3): {peak:.0f} GFLOP/s; network at "
            f"{net_rate * GFLOP_PER_IMAGE:.0f} GFLOP/s = "
            f"{100 * net_rate * GFLOP_PER_IMAGE / peak:.0f}% of it"
        )
        if args.precision == "bf16":
            compare_precisions(work, weights)


if __name__ == "__main__":
    main()
