"""Head training speed and accuracy on GTSRB-sized, fc7-like data, side by side in one run.

    python benchmarks/heads.py [--train 34799] [--test 12630] [--classes 43] [--seed 0]

Makes seeded synthetic vectors shaped like AlexNet fc7 on GTSRB: 4096 non-negative floats,
about half exact zeros (ReLU), classes that overlap, class sizes differing about 10x. Then
fits `SoftmaxHead()` and `sklearn.linear_model.LogisticRegression()` (both with their
defaults) on the same arrays and prints fit times, test accuracies, the speed ratio and the
accuracy gap. Also prints `LogRegHead()` (featcache's tuned LogisticRegression) for reference.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from featcache.classifier.heads import LogRegHead, SoftmaxHead


def fc7_like(
    n_train: int, n_test: int, n_classes: int, dim: int = 4096, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-negative, ~50% zeros, overlapping classes, sizes from 1x to ~10x.

    Like real fc7 units, features differ in scale (a log-normal factor per feature, sigma
    0.7): a head that does not standardise its inputs pays for it in iterations.
    """
    rng = np.random.default_rng(seed)
    sizes = np.geomspace(1.0, 10.0, n_classes)
    p = rng.permutation(sizes / sizes.sum())
    n = n_train + n_test
    y = rng.choice(n_classes, size=n, p=p)
    # Classes share a common low-rank structure plus a class-specific direction; noise is
    # large enough that a linear model cannot separate them perfectly.
    basis = rng.standard_normal((64, dim)).astype(np.float32)
    centres = rng.standard_normal((n_classes, 64)).astype(np.float32) * 0.5
    latent = centres[y] + rng.standard_normal((n, 64)).astype(np.float32)
    X = latent @ basis / 8.0
    X += rng.standard_normal((n, dim), dtype=np.float32) * 1.5
    np.maximum(X, 0, out=X)  # centred near zero: ReLU leaves about half the entries at 0
    X *= np.exp(rng.normal(0.0, 0.7, dim)).astype(np.float32) * 3.0
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def timed_fit(model: object, X: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    tracemalloc.start()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=34799)
    parser.add_argument("--test", type=int, default=12630)
    parser.add_argument("--classes", type=int, default=43)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-sklearn", action="store_true")
    args = parser.parse_args()

    X, y, X_test, y_test = fc7_like(args.train, args.test, args.classes, seed=args.seed)
    counts = np.bincount(y)
    print(
        f"data: {X.shape[0]} x {X.shape[1]} float32 train, {X_test.shape[0]} test, "
        f"{args.classes} classes (sizes {counts.min()}..{counts.max()}), "
        f"{100 * (X == 0).mean():.0f}% zeros, X is {X.nbytes / 1e6:.0f} MB"
    )
    rows = []
    models: list[tuple[str, object]] = [
        ("SoftmaxHead()", SoftmaxHead(random_state=0)),
        ("LogRegHead()", LogRegHead()),
    ]
    if not args.skip_sklearn:
        models.append(("LogisticRegression()", LogisticRegression()))
    for name, model in models:
        seconds, peak = timed_fit(model, X, y)
        accuracy = float((model.predict(X_test) == y_test).mean())  # type: ignore[attr-defined]
        rows.append((name, seconds, accuracy))
        print(
            f"{name:<22} fit {seconds:7.2f} s   test accuracy {accuracy:.4f}   "
            f"peak extra memory {peak / 1e6:6.0f} MB ({peak / X.nbytes:.2f} x X)"
        )
    if not args.skip_sklearn:
        soft, sk = rows[0], rows[-1]
        print(
            f"SoftmaxHead is {sk[1] / soft[1]:.1f}x faster than LogisticRegression(); "
            f"accuracy difference {100 * (soft[2] - sk[2]):+.2f} points"
        )


if __name__ == "__main__":
    main()
