"""Fine-tuning from each cut of AlexNet: accuracy against the frozen head, and an epoch from
the cache against an uncached epoch.

    python benchmarks/finetune.py [--cuts pool2,conv3,conv4,conv5,pool5,fc6] [--epochs 10]
                                  [--out DIR] [--seeds N [--seed-cuts pool5,conv4]
                                  [--seeds-only]]

Uses SEEDED RANDOM weights in the bvlc_alexnet.npy layout (real ImageNet weights cannot be
downloaded here) on the bundled digits (sklearn's 1,797 8x8 digits as 32x32 PNGs, a fixed
test split), in one run:

1. `featcache extract --layers pool2,conv3,conv4,conv5,pool5,fc6,fc7` once (cuts in
   float16, as by default); the frozen head: `SoftmaxHead(random_state=0)` on fc7.
2. Per cut, in its own process: `FineTuneHead(cut=CUT)` with its defaults (linear probe,
   then fine-tuning; the number of epochs chosen on held-out rows, 0 included, kept only if
   McNemar's test finds it classifies them better than the frozen start, then the refit on
   every training row), test accuracy; its steady epoch from the cache (the
   median epoch of the choosing run after the first, which includes tracing); then, in the
   same process, the uncached epoch's extra work: the same number of images read, decoded,
   preprocessed and run through the network up to the cut (what the seed program pays in
   every epoch). Ratio: cached epoch / (that + the cached epoch).
3. The pool5 fine-tune again in a fresh process: the same weights bit for bit.
4. With ``--seeds N``: the ``--seed-cuts`` (pool5, conv4) fine-tunes and the frozen head
   with random_state 0 .. N-1 (test accuracy, the epochs the loss rule chose and those
   kept, the held-out rows fixed and broken and McNemar's p): how far the difference to the
   frozen head moves with the seed alone (the held-out rows, the batch order), its mean
   and its worst, against one test image's worth. ``--seeds-only`` skips steps 2 and 3.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ALL_CUTS = ("pool2", "conv3", "conv4", "conv5", "pool5", "fc6")


def step_cut(store: str, weights: str, images: str, cut: str, epochs: int) -> dict[str, object]:
    """One process: fine-tune from `cut` on the train rows, score the test rows, time an
    uncached epoch's network pass."""
    from featcache.classifier.finetune import FineTuneHead
    from featcache.classifier.rows import lazy_vectors
    from featcache.extractor.weights import read_weights
    from featcache.store import FeatureStore

    fs = FeatureStore(store, create=False)
    data = lazy_vectors(fs, "digits", cut)
    train = np.array([s == "train" for s in data.splits])
    pretrained = read_weights(weights)
    t = time.perf_counter()
    head = FineTuneHead(cut=cut, epochs=epochs, random_state=0)
    head.fit(data.X[train], data.y[train], pretrained=pretrained)
    fit_seconds = time.perf_counter() - t
    accuracy = float((head.predict(data.X[~train]) == data.y[~train]).mean())
    digest = hashlib.sha256()
    for a in head.coefs_ + head.intercepts_:
        digest.update(np.ascontiguousarray(a).tobytes())
    steady = head.epoch_seconds_[1:] or head.epoch_seconds_
    epoch_rows = int(train.sum()) - int(int(train.sum()) * head.validation_fraction)
    prepare_s, network_s = uncached_pass(pretrained, images, cut, epoch_rows)
    return {
        "cut": cut,
        "layers": list(head.layers_),
        "n_train": int(train.sum()),
        "n_test": int((~train).sum()),
        "epoch_rows": epoch_rows,
        "accuracy": accuracy,
        "frozen_val_accuracy": head.validation_scores_[0],
        "kept_val_accuracy": head.validation_scores_[head.best_epoch_],
        "epochs_run": head.n_iter_,
        "best_epoch": head.best_epoch_,
        "selection": _selection(head),
        "refit_seconds": head.refit_seconds_,
        "probe_seconds": head.probe_seconds_,
        "epoch_seconds": statistics.median(steady),
        "fit_seconds": fit_seconds,
        "prepare_seconds": prepare_s,
        "network_seconds": network_s,
        "digest": digest.hexdigest(),
    }


def _selection(head: object) -> str:
    """The choice behind a head's epochs, in a few words."""
    choice = getattr(head, "selection_", None)
    if choice is None:
        return "no held-out rows"
    return (
        f"loss rule {choice.by_loss}, held-out fixed {choice.fixed} broke {choice.broken}, "
        f"McNemar p {choice.p_value:.3g}"
    )


def uncached_pass(weights: object, images: str, cut: str, rows: int) -> tuple[float, float]:
    """Seconds to read, decode and preprocess `rows` training images, and to run them
    through the network up to `cut`, 128 at a time (one uncached epoch's extra work)."""
    from featcache.data.decode import decode_image
    from featcache.extractor.alexnet import AlexNet
    from featcache.extractor.preprocess import INPUT_SIZE, preprocess_into

    files = sorted(Path(images).glob("train/*/*.png"))[:rows]
    network = AlexNet(weights.layers)  # type: ignore[attr-defined]
    batch = np.empty((128, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    network.forward(batch[:128], [cut])  # trace once, outside the timing
    prepare = run = 0.0
    for start in range(0, len(files), 128):
        part = files[start : start + 128]
        t = time.perf_counter()
        for i, path in enumerate(part):
            preprocess_into(decode_image(path.read_bytes(), str(path)), batch[i], "caffe")
        t1 = time.perf_counter()
        network.forward(batch[: len(part)], [cut])
        prepare, run = prepare + t1 - t, run + time.perf_counter() - t1
    return prepare, run


def step_frozen(store: str, seed: int = 0) -> dict[str, float]:
    from featcache.classifier.heads import SoftmaxHead
    from featcache.store import FeatureStore

    fc7 = FeatureStore(store, create=False).vectors("digits", "fc7")
    train = np.array([s == "train" for s in fc7.splits])
    head = SoftmaxHead(random_state=seed).fit(fc7.X[train], fc7.y[train])
    return {"accuracy": float((head.predict(fc7.X[~train]) == fc7.y[~train]).mean())}


def step_seed(store: str, weights: str, cut: str, seed: int, epochs: int) -> dict[str, object]:
    """One process: the fine-tune from `cut` and the frozen head with `random_state=seed`."""
    from featcache.classifier.finetune import FineTuneHead
    from featcache.classifier.rows import lazy_vectors
    from featcache.extractor.weights import read_weights
    from featcache.store import FeatureStore

    data = lazy_vectors(FeatureStore(store, create=False), "digits", cut)
    train = np.array([s == "train" for s in data.splits])
    head = FineTuneHead(cut=cut, epochs=epochs, random_state=seed)
    head.fit(data.X[train], data.y[train], pretrained=read_weights(weights))
    accuracy = float((head.predict(data.X[~train]) == data.y[~train]).mean())
    frozen = step_frozen(store, seed)["accuracy"]
    return {
        "accuracy": accuracy,
        "frozen": frozen,
        "best_epoch": head.best_epoch_,
        "epochs_run": head.n_iter_,
        "selection": _selection(head),
        "n_test": int((~train).sum()),
    }


def run_step(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, __file__, "--step", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=7200,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuts", default=",".join(ALL_CUTS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=0, help="--seed-cuts at seeds 0..N-1")
    parser.add_argument("--seed-cuts", default="pool5,conv4", help="cuts --seeds fine-tunes")
    parser.add_argument("--seeds-only", action="store_true", help="only the --seeds runs")
    parser.add_argument("--step", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        kind, *rest = args.step
        if kind == "cut":
            print(json.dumps(step_cut(rest[0], rest[1], rest[2], rest[3], int(rest[4]))))
        elif kind == "seed":
            print(json.dumps(step_seed(rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]))))
        else:
            print(json.dumps(step_frozen(rest[0])))
        return
    cuts = [c for c in args.cuts.split(",") if c]
    seed_cuts = [c for c in args.seed_cuts.split(",") if c]
    for option, given in (("--cuts", cuts), ("--seed-cuts", seed_cuts)):
        unknown = sorted(set(given) - set(ALL_CUTS))
        if unknown:
            parser.error(f"{option}: {unknown} are not cuts ({', '.join(ALL_CUTS)})")
    if args.seeds_only:
        if not args.seeds:
            parser.error("--seeds-only needs --seeds N")
        cuts = []
    extracted = list(dict.fromkeys([*cuts, *(seed_cuts if args.seeds else [])]))

    from featcache.data import write_digits_folder
    from featcache.extractor.weights import write_demo_weights

    root = args.out or Path(tempfile.mkdtemp(prefix="featcache-finetune-"))
    root.mkdir(parents=True, exist_ok=True)
    print("NOTE: SEEDED RANDOM weights (not ImageNet-trained); real weights not tested here.")
    print(f"work folder {root}; the machine may be shared: ratios are from this one run")
    weights = write_demo_weights(root / "demo_alexnet.npy", seed=0)
    digits = write_digits_folder(root / "digits")
    store = root / "store"
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "featcache", "extract", str(digits), "--store", str(store),
         "--weights", str(weights), "--layers", ",".join((*extracted, "fc7")),
         "--dataset", "digits"],
        check=True, capture_output=True, text=True, timeout=7200,
    )  # fmt: skip
    print(f"extract --layers {','.join((*extracted, 'fc7'))}: {time.perf_counter() - t:.0f} s")
    frozen = float(run_step("frozen", str(store))["accuracy"])  # type: ignore[arg-type]
    print(f"frozen head (SoftmaxHead on fc7): test accuracy {frozen:.4f}")
    print(
        "cut    trains               test acc  vs frozen  epochs (chosen)  epoch from cache  "
        "uncached epoch  cache/uncached"
    )
    results = {}
    for cut in cuts:
        r = run_step("cut", str(store), str(weights), str(digits), cut, str(args.epochs))
        results[cut] = r
        epoch = float(r["epoch_seconds"])  # type: ignore[arg-type]
        extra = float(r["prepare_seconds"]) + float(r["network_seconds"])  # type: ignore[arg-type]
        accuracy = float(r["accuracy"])  # type: ignore[arg-type]
        layers = r["layers"]
        trains = f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else layers[0]  # type: ignore[index,arg-type]
        print(
            f"{cut:<6} {trains:<20} {accuracy:.4f}    {100 * (accuracy - frozen):+.2f}      "
            f"{r['epochs_run']} ({r['best_epoch']})            {epoch:6.1f} s          "
            f"{extra + epoch:6.1f} s        {epoch / (extra + epoch):.2f}"
        )
        print(
            f"       {r['epoch_rows']} rows an epoch; uncached extra: read+decode+preprocess "
            f"{r['prepare_seconds']:.1f} s, network to {cut} {r['network_seconds']:.1f} s; "
            f"probes {r['probe_seconds']:.1f} s; held-out accuracy frozen start "
            f"{r['frozen_val_accuracy']:.4f} -> chosen {r['kept_val_accuracy']:.4f} "
            f"({r['selection']}); refit on every row {r['refit_seconds']:.1f} s; fit "
            f"{r['fit_seconds']:.0f} s"
        )
    if "pool5" in results:
        again = run_step("cut", str(store), str(weights), str(digits), "pool5", str(args.epochs))
        same = again["digest"] == results["pool5"]["digest"]
        print(
            f"pool5 again in a fresh process: test accuracy {again['accuracy']:.4f}, weights "
            f"{'identical bit for bit' if same else 'DIFFERENT'}"
        )
    for cut in seed_cuts if args.seeds else ():
        diffs = []
        for seed in range(args.seeds):
            r = run_step("seed", str(store), str(weights), cut, str(seed), str(args.epochs))
            diffs.append(100 * (float(r["accuracy"]) - float(r["frozen"])))  # type: ignore[arg-type]
            print(
                f"{cut} random_state={seed}: fine-tune {r['accuracy']:.4f} (epochs run "
                f"{r['epochs_run']}, kept {r['best_epoch']}: {r['selection']}), frozen head "
                f"{r['frozen']:.4f}: {diffs[-1]:+.2f} points",
                flush=True,
            )
        print(
            f"{cut} over {args.seeds} seeds: {statistics.mean(diffs):+.2f} points on average, "
            f"worst {min(diffs):+.2f}, best {max(diffs):+.2f}; one test image is "
            f"{100 / float(r['n_test']):.2f} points",  # type: ignore[arg-type]
            flush=True,
        )


if __name__ == "__main__":
    main()
