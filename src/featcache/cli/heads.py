"""Head commands: ``train``, ``evaluate``, ``predict`` and ``heads list|show|delete|promote|
upgrade``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from featcache.cli._next import after_evaluate, after_train
from featcache.cli._shared import (
    EXIT_STRICT,
    confirm_or_exit,
    err,
    note,
    out,
    reports_errors,
    show_tf_logs,
    store_option,
    usage_error,
    verbose_option,
    which_store,
)

if TYPE_CHECKING:
    from featcache.classifier.finetune import Epoch

heads_app = typer.Typer(
    rich_markup_mode=None,
    help="List, show, delete and promote heads in a store.",
    no_args_is_help=True,
)


HEAD_HELP = "NAME (its newest version), NAME@N (version N) or NAME@promoted."


def _store_and_head(
    store: Path | None, words: list[str] | None, command: str, usage: str
) -> tuple[Path, list[str]]:
    """``--store S HEAD...``, or the older ``S HEAD...`` (noted as deprecated)."""
    words = list(words or [])
    old = words.pop(0) if store is None and len(words) > 1 else None
    path = which_store(store, old, command)
    if not words:
        usage_error(f"Missing HEAD: featcache {command} --store {path} {usage}")
    return path, words


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise typer.BadParameter(f"expected key=value, got {text!r}", param_hint="--param")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare word: class_weight=balanced
    return key.strip(), value


@reports_errors
def train(
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name."),
    layer: str | None = typer.Option(
        None,
        help="Which stored layer to train on [default: the backbone's: alexnet fc7, vgg16 fc2, "
        "resnet50 avg_pool; pool5 for finetune].",
    ),
    backbone: str | None = typer.Option(
        None,
        help="Whose vectors: alexnet, vgg16 or resnet50 [default: the one the dataset has "
        "vectors of; alexnet if several].",
    ),
    kind: str = typer.Option(
        "softmax",
        help="softmax (fast, ours), logreg (scikit-learn) or finetune (every layer above "
        "the cut --from, fc8 new).",
    ),
    from_layer: str | None = typer.Option(
        None,
        "--from",
        help="finetune: the cached cut to train above (AlexNet: pool2, conv3, conv4, conv5, "
        "pool5, fc6; VGG16: block5_pool) [default: pool5].",
    ),
    legacy_kind: str | None = typer.Option(
        None, "--head", help="Old name of --kind (deprecated: --head names a head elsewhere)."
    ),
    param: list[str] = typer.Option([], help="Head parameter key=value, repeatable."),
    val_fraction: float = typer.Option(0.2, help="Held out by key hash if there is no val split."),
    name: str | None = typer.Option(None, help="Head name [default: DATASET-KIND]."),
    fingerprint: str | None = typer.Option(None, help="Extractor, if the dataset has several."),
    split_groups: bool = typer.Option(
        False,
        help="Keep near-duplicate groups (featcache doctor) on one side of the held-out split.",
    ),
    weights: Path | None = typer.Option(
        None, help="finetune: the weights file the vectors were extracted with."
    ),
    verbose: bool = verbose_option(),
) -> None:
    """Fit a head on cached vectors, evaluate it, register a new version."""
    from featcache.classifier.train import KINDS, train_head
    from featcache.errors import ConfigError
    from featcache.store import FeatureStore

    show_tf_logs(verbose)
    if legacy_kind is not None:
        err.print("note: in train, --head is now --kind (--head names a head in every command)")
        kind = legacy_kind
    if kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}. Got {kind!r}.")
    if from_layer is not None:
        if kind != "finetune":
            raise ConfigError(
                f"--from names the cut a finetune trains above; --kind is {kind!r}. Use "
                "--kind finetune, or --layer to choose the vectors of a softmax or logreg head."
            )
        if layer is not None and layer != from_layer:
            raise ConfigError(f"--from {from_layer} and --layer {layer} disagree; give one.")
        layer = from_layer
    params = dict(_param(p) for p in param)
    pretrained = None
    if weights is not None:
        from featcache.extractor.registry import recognise_weights

        pretrained = recognise_weights(weights)  # AlexNet's .npy or VGG16's .h5
    with FeatureStore(store, create=False) as fs:
        if kind == "finetune" and backbone is not None:
            from featcache.classifier.train import check_cut

            check_cut(layer or "pool5", backbone)  # before reading any vectors
        if kind != "finetune" or backbone is not None:
            from featcache.extractor.stored import resolve_vectors, stored_layers

            cut = (layer or "pool5") if kind == "finetune" else layer
            chosen = resolve_vectors(
                fs, dataset, backbone=backbone, layer=cut, fingerprint=fingerprint
            )
            layer, fingerprint = chosen.layer, chosen.fingerprint
            held = stored_layers(fs, dataset).backbones
            if len(held) > 1:  # say which, and how to choose another
                others = ", ".join(name for name in held if name != chosen.backbone)
                out.print(
                    f"training on {chosen.backbone} '{layer}' vectors (the dataset also has "
                    f"{others}: --backbone)"
                )
        groups = None
        if split_groups:
            groups = fs.groups(dataset)
            if groups is None:  # never recorded, or the dataset changed since
                from featcache.analysis.doctor import near_duplicate_groups

                groups = near_duplicate_groups(
                    fs, dataset, layer=layer or "fc7", fingerprint=fingerprint
                )
            copies = len(groups) - len(set(groups.values()))
            out.print(f"near-duplicate groups: {copies} image(s) held together with another")
        if kind == "finetune":
            err.print("finetune: TensorFlow loads first (seconds), then a line per epoch")
        result = train_head(
            fs,
            dataset,
            layer=layer,
            head=kind,
            params=params,
            val_fraction=val_fraction,
            name=name,
            fingerprint=fingerprint,
            groups=groups,
            weights=pretrained,
            on_epoch=_print_epoch if kind == "finetune" else None,
        )
        info = fs.dataset(dataset)
    record, metrics = result.record, result.metrics
    out.print(
        f"head '{record.name}' v{record.version} ({kind}) on {metrics['n_train']} vectors "
        f"of '{dataset}' [{record.meta['layer']}]: fit {result.timings['fit']:.2f}s, "
        f"read {result.timings['read_vectors']:.2f}s"
    )
    out.print(f"  train accuracy {metrics['train_accuracy']:.4f}")
    if metrics["n_val"]:
        out.print(
            f"  held-out ({metrics['n_val']} rows): accuracy {metrics['val_accuracy']:.4f}, "
            f"top-{min(5, len(record.meta['classes']))} {metrics['val_top5_accuracy']:.4f}"
        )
    else:
        out.print(f"  no held-out rows: {metrics['no_held_out']}")
    if "finetune" in metrics:
        out.print(f"  {_finetune_line(metrics['finetune'])}")
    for line in after_train(str(store), info, record.name, bool(metrics["n_val"])):
        out.print(line)
    note(record.meta.get("weights_note"))


def _print_epoch(epoch: Epoch) -> None:
    """One line per epoch, as Keras's ``fit`` prints them; epoch 0 is the frozen start, and
    `*` marks an epoch kept so far (the lowest held-out loss); the refit on every training
    row says so."""
    if epoch.epoch == 0:
        head = f"Epoch 0/{epoch.epochs} (frozen start + linear probe) - {epoch.seconds:.1f}s"
    else:
        refit = " (refit on all training rows)" if epoch.refit else ""
        head = (
            f"Epoch {epoch.epoch}/{epoch.epochs}{refit} - {epoch.seconds:.1f}s - "
            f"loss: {epoch.loss:.4f}"
        )
    held = "" if epoch.val_loss is None else f" - val_loss: {epoch.val_loss:.4f}"
    held += "" if epoch.val_accuracy is None else f" - val_accuracy: {epoch.val_accuracy:.4f}"
    mark = " *" if epoch.kept and epoch.val_loss is not None else ""
    err.print(head + held + mark)


def _finetune_line(ft: dict[str, Any]) -> str:
    """What fine-tuning gained over the frozen start, in words."""
    layers = ", ".join(ft["trained_layers"])
    if "gain_points" not in ft:
        return (
            f"fine-tuned {layers} above {ft['cut']} for {ft['epochs_run']} epoch(s) on every "
            "training row; no held-out rows, so no number of epochs is chosen and no gain "
            "is measured"
        )
    lowest = ft["lowest_val_loss_epoch"]
    by_loss = ft.get("epochs_by_loss", 0)
    if ft["epoch_kept"] == 0:
        if by_loss:
            why = (
                f"the {by_loss} epoch(s) the held-out loss chose did not classify the "
                f"held-out rows significantly better (fixed {ft['held_out_fixed']}, broke "
                f"{ft['held_out_broken']}; McNemar's p = {ft['p_value']:.3g} > "
                f"{ft['selection_significance']:g})"
            )
        elif lowest == 0:
            why = "no epoch lowered the held-out loss"
        else:
            why = (
                f"epoch {lowest}'s lower held-out loss ({ft['lowest_val_loss']:.4f}) was not "
                f"lower by more than {ft['selection_se']:g} standard error(s)"
            )
        return (
            f"kept the frozen start (0 epochs), the frozen softmax head's solution: {why} "
            f"in {ft['epochs_run']} epoch(s) of fine-tuning {layers} above {ft['cut']} "
            f"(frozen start: loss {ft['frozen_val_loss']:.4f}, accuracy "
            f"{ft['frozen_val_accuracy']:.4f})"
        )
    return (
        f"fine-tuning {layers} above {ft['cut']} gained {ft['gain_points']:+.2f} points over "
        f"the frozen start on its held-out rows (accuracy {ft['frozen_val_accuracy']:.4f} → "
        f"{ft['kept_val_accuracy']:.4f}, loss {ft['frozen_val_loss']:.4f} → "
        f"{ft['kept_val_loss']:.4f}{_evidence(ft)}); chose {ft['epoch_kept']} of "
        f"{ft['epochs_run']} epoch(s), refitted on every training row "
        f"({ft['refit_seconds']:.1f}s)"
    )


def _evidence(ft: dict[str, Any]) -> str:
    """McNemar's test behind a kept fine-tune, in words ('' for a head saved before it)."""
    if "p_value" not in ft:
        return ""
    return (
        f"; fixed {ft['held_out_fixed']} row(s), broke {ft['held_out_broken']}: McNemar's "
        f"p = {ft['p_value']:.3g} <= {ft['selection_significance']:g}"
    )


@reports_errors
def evaluate(
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    head: str = typer.Option(..., "--head", help=HEAD_HELP),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name."),
    split: str = typer.Option(
        "test", help="Split to evaluate on: train, val, test or all (valid reads as val)."
    ),
    version: int | None = typer.Option(None, help="Head version (same as --head NAME@N)."),
    out_dir: Path | None = typer.Option(None, "--out", help="Report folder [default: in store]."),
) -> None:
    """Accuracy, top-5, per-class P/R/F1 (CSV), confusion matrix (PNG, CSV), JSON summary."""
    from featcache.classifier.evaluate import evaluate_head, write_report
    from featcache.store import FeatureStore
    from featcache.store.commands import store_command
    from featcache.store.names import normalize_split

    # 'valid' and 'validation' read as 'val', as in extract; 'all' is every labelled row
    chosen = None if split.strip().lower() == "all" else normalize_split(split, where="--split")
    split = chosen or "all"
    with FeatureStore(store, create=False) as fs:
        evaluation = evaluate_head(fs, head, dataset, split=chosen, version=version)
        # a read-only store cannot hold the report: it goes to the working folder
        reports = Path("featcache-reports") if fs.read_only else fs.path / "reports"
    summary = evaluation.summary
    head = summary["head"]
    folder = out_dir or reports / f"{head}-v{summary['version']}-{dataset}-{split}"
    paths = write_report(evaluation, folder)
    topk = next(k for k in summary if k.startswith("top"))
    out.print(
        f"head '{head}' v{summary['version']} on '{dataset}' [{split}], {summary['n']} images: "
        f"accuracy {summary['accuracy']:.4f}, {topk.replace('_', ' ')} {summary[topk]:.4f}, "
        f"macro F1 {summary['macro_f1']:.4f}"
    )
    if summary.get("clean_accuracy") is not None:
        out.print(
            f"  clean accuracy {summary['clean_accuracy']:.4f} on the {summary['clean_n']} images "
            "with no exact or near duplicate in train"
        )
    elif split != "train":
        doctor = store_command("doctor", str(store), "--dataset", dataset)
        out.print(f"  (clean accuracy: run '{doctor}')")
    for pair in summary["most_confused"][:5]:
        out.print(f"  {pair['true']} → {pair['predicted']}: {pair['count']}")
    out.print(f"report: {', '.join(str(p) for p in paths)}")
    for line in after_evaluate(str(store), head):
        out.print(line)
    note(summary.get("weights_note"))


@reports_errors
def predict(
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    head: str = typer.Option(..., "--head", help=HEAD_HELP),
    top_k: int = typer.Option(5, help="How many classes per image."),
    weights: Path | None = typer.Option(None, help="Weights, to extract images not in the store."),
    version: int | None = typer.Option(None, help="Head version (same as --head NAME@N)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    runtime: str | None = typer.Option(
        None, help="tensorflow or openvino, to extract [default: what the head's vectors need]."
    ),
    verbose: bool = verbose_option(),
    max_file_mb: float = typer.Option(
        256.0, help="Larger input files are that file's failure, refused before reading."
    ),
    max_pixels: int = typer.Option(50_000_000, help="Refuse larger images (decompression bombs)."),
) -> None:
    """Top-k classes per image: cached images need no TensorFlow; new ones are extracted."""
    show_tf_logs(verbose)
    from featcache.predictor import NOT_STORED, Predictor
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False) as fs:
        predictor = Predictor(
            fs,
            head,
            weights=weights,
            version=version,
            top_k=top_k,
            runtime=runtime,
            max_file_bytes=max(1, int(max_file_mb * 1024 * 1024)),
            max_pixels=max_pixels,
        )
        results = predictor.predict(images)
        weights_note = predictor.head.meta.get("weights_note")
        repairs = list(fs.repairs)
    for i, result in enumerate(results):
        if as_json:
            answer = result.as_dict()
            if weights_note:
                answer["weights_note"] = weights_note
            out.print_json(json.dumps(answer), indent=None)
            continue
        if result.error is not None:
            out.print(f"Image {i}: {result.path}\n  error: {result.error}\n")
            continue
        source = "cached" if result.cached else "extracted"
        out.print(f"Image {i}: {result.path} ({source})")
        for p in result.predictions:
            out.print(f"{p.label}: {p.probability:.3f}")
        out.print()
    for repair in repairs:  # damaged shards found while looking the images up, and dropped
        err.print(f"[yellow]repaired[/yellow] {escape(repair)}", markup=True)
    if not as_json:
        note(weights_note)
    unanswered = [r for r in results if r.error is not None]
    if unanswered:
        err.print(f"{len(unanswered)} of {len(results)} image(s) could not be answered")
        if weights is None and any(NOT_STORED in (r.error or "") for r in unanswered):
            err.print(
                "  to extract the images the store does not hold, run again with --weights "
                "WEIGHTS (the weights file the head's vectors came from)"
            )
        raise typer.Exit(EXIT_STRICT)


@heads_app.command("list")
@reports_errors
def heads_list(
    old_store: Path | None = typer.Argument(
        None, metavar="[STORE]", help="Deprecated: use --store."
    ),
    store: Path | None = store_option(),
) -> None:
    """Every head version with its dataset, extractor and held-out accuracy."""
    from featcache.store import FeatureStore

    store = which_store(store, old_store, "heads list")
    with FeatureStore(store, create=False) as fs:
        records = fs.heads()
        promoted = {name: fs.promoted_head(name) for name in {r.name for r in records}}
    for r in records:
        acc = r.meta.get("metrics", {}).get("val_accuracy")
        score = f"val accuracy {acc:.4f}" if acc is not None else "no held-out score"
        out.print(
            f"{r.name} v{r.version}: {r.meta.get('head')} on '{r.meta.get('dataset')}' "
            f"[{r.meta.get('layer')}, extractor {str(r.meta.get('fingerprint'))[:12]}], {score}"
            + (" (promoted)" if promoted[r.name] == r.version else "")
        )
    if not records:
        out.print("no heads")


@heads_app.command("show")
@reports_errors
def heads_show(
    words: list[str] | None = typer.Argument(None, metavar="HEAD", help=HEAD_HELP),
    store: Path | None = store_option(),
    version: int | None = typer.Option(None, help="Version [default: newest]."),
) -> None:
    """A head's full metadata as JSON, with the size of its file.

    A finetune head carries fc6 and fc7: about 220 MB in float32, 110 MB when trained in
    bf16 (stored as float16).
    """
    from featcache.store import FeatureStore, HeadSpec

    store, words = _store_and_head(store, words, "heads show", "HEAD")
    if len(words) != 1:
        usage_error(f"expected one HEAD, got {' '.join(words)}")
    with FeatureStore(store, create=False) as fs:
        r = fs.head(HeadSpec.parse(words[0], version))
        path = fs.path / r.file
        size = path.stat().st_size if path.exists() else None
    out.print_json(
        json.dumps(
            {
                "name": r.name,
                "version": r.version,
                "file": r.file,
                "file_bytes": size,
                "sha256": r.sha256,
                **r.meta,
            }
        )
    )


@heads_app.command("delete")
@reports_errors
def heads_delete(
    words: list[str] | None = typer.Argument(
        None, metavar="HEAD", help="NAME (every version), NAME@N or NAME@promoted (that one)."
    ),
    store: Path | None = store_option(),
    version: int | None = typer.Option(None, help="Only this version [default: all]."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
) -> None:
    """Delete a head (every version, or one); asks first unless --yes."""
    from featcache.store import FeatureStore, HeadSpec

    store, words = _store_and_head(store, words, "heads delete", "HEAD")
    if len(words) != 1:
        usage_error(f"expected one HEAD, got {' '.join(words)}")
    spec = HeadSpec.parse(words[0], version)
    name = spec.name
    with FeatureStore(store, create=False) as fs:
        if spec.follow == "newest":
            versions = [r.version for r in fs.heads(name)]
        else:
            versions = [fs.head(spec).version]
        if versions and not yes:
            one = spec.follow != "newest"
            which = f"v{versions[0]}" if one else f"all {len(versions)} version(s)"
            confirm_or_exit(f"delete {which} of head '{name}' from {store}?", "delete", "deleted")
        count = fs.delete_head(spec)
    out.print(f"deleted {count} version(s) of head '{name}'")


@heads_app.command("promote")
@reports_errors
def heads_promote(
    words: list[str] | None = typer.Argument(
        None, metavar="HEAD", help="NAME@N: the version to promote."
    ),
    store: Path | None = store_option(),
) -> None:
    """Promote a head version: ``--head NAME@promoted`` names it from then on (``serve``
    switches to it; roll back by promoting an older one)."""
    from featcache.store import FeatureStore

    store, words = _store_and_head(store, words, "heads promote", "NAME@VERSION")
    if len(words) == 2 and words[1].isdigit():  # the older form: NAME VERSION
        words = [f"{words[0]}@{words[1]}"]
    if len(words) != 1:
        usage_error(f"expected one NAME@VERSION, got {' '.join(words)}")
    with FeatureStore(store, create=False) as fs:
        record = fs.promote_head(words[0])
    name, version = record.name, record.version
    acc = record.meta.get("metrics", {}).get("val_accuracy")
    score = f", val accuracy {acc:.4f}" if acc is not None else ""
    out.print(f"promoted head '{name}' v{version}{score}")


@heads_app.command("upgrade")
@reports_errors
def heads_upgrade(
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Convert without asking."),
) -> None:
    """Convert a store's old heads (joblib pickles, from earlier featcache versions) to head
    files of arrays plus JSON. Unpickling runs any code a file holds: only for a store you
    trust (you made it, or trust who did). Every other command refuses the old files."""
    from featcache.classifier.upgrade import legacy_heads, upgrade_heads
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False, read_only=False) as fs:
        old = legacy_heads(fs)
        if not old:
            out.print(f"{store}: no old (pickled) heads; nothing to convert")
            return
        names = ", ".join(f"{r.name} v{r.version}" for r in old)
        err.print(
            f"trusting the store {store}: unpickling {len(old)} old head file(s) ({names}), "
            "which runs any code they hold"
        )
        if not yes:
            confirm_or_exit(f"do you trust {store} and convert its heads?", "convert", "converted")
        done = upgrade_heads(fs)
    for item in done:
        out.print(f"head '{item.name}' v{item.version}: {item.old_file} -> {item.new_file}")
    out.print(f"converted {len(done)} head version(s); they load without unpickling from now on")
