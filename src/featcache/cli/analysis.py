"""Analysis commands: ``doctor`` (can the held-out numbers be trusted?) and ``advise`` (which of
the seed's four transfer-learning cases applies, and the command to run next)."""

from __future__ import annotations

from pathlib import Path

import typer

from featcache.cli._shared import note, out, reports_errors, stage_printer

__all__ = ["advise", "doctor"]


@reports_errors
def doctor(
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name."),
    layer: str | None = typer.Option(
        None,
        help="Which stored layer's vectors to compare [default: the backbone's: alexnet fc7, "
        "vgg16 fc2, resnet50 avg_pool].",
    ),
    backbone: str | None = typer.Option(
        None,
        help="Whose vectors: alexnet, vgg16 or resnet50 [default: the one the dataset has "
        "vectors of; alexnet if several].",
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Report folder [default: STORE/reports/doctor-DATASET]."
    ),
    top: int = typer.Option(24, help="Entries per contact sheet."),
    folds: int = typer.Option(5, help="Folds of the heads that give out-of-fold probabilities."),
    fingerprint: str | None = typer.Option(None, help="Extractor, if the dataset has several."),
) -> None:
    """Exact and near duplicates, leakage across splits, label issues, outliers (no TensorFlow)."""
    from featcache.analysis.doctor import DoctorConfig
    from featcache.analysis.doctor import doctor as run_doctor
    from featcache.extractor.stored import resolve_vectors
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False) as fs:
        chosen = resolve_vectors(
            fs, dataset, backbone=backbone, layer=layer, fingerprint=fingerprint
        )
        # a bucket store's reports go to this host's folder for it, as its other local files
        folder = out_dir or fs.path / "reports" / f"doctor-{dataset}"
        report = run_doctor(
            fs,
            dataset,
            layer=chosen.layer,
            fingerprint=chosen.fingerprint,
            config=DoctorConfig(folds=folds, top=top),
            out=folder,
            on_stage=stage_printer("doctor"),
        )
    for line in report.summary(store):
        out.print(line)
    if report.hashes_computed:
        out.print(
            f"  ({report.hashes_computed} pixel hashes computed from the sources and recorded)"
        )
    out.print(f"report: {folder}/doctor.json, *.csv, *.png ({report.timings['total']:.1f}s)")
    note(report.weights_note)


@reports_errors
def advise(
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name."),
    layers: str = typer.Option(
        "",
        help="Cached layers to compare, comma-separated [default: each backbone's feature "
        "layers: alexnet pool5,fc6,fc7; vgg16 block5_pool,fc1,fc2; resnet50 "
        "conv4_block6_out,conv5_block3_out,avg_pool].",
    ),
    backbones: str = typer.Option(
        "", help="Backbones to compare, comma-separated [default: alexnet,vgg16,resnet50]."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Report folder [default: STORE/reports/advise-DATASET]."
    ),
    folds: int = typer.Option(5, help="Cross-validation folds."),
    fingerprint: str | None = typer.Option(None, help="Extractor, if the dataset has several."),
) -> None:
    """Which of the four transfer-learning cases applies, which backbone and layer to use, the
    numbers, and the next command."""
    from featcache.analysis.advise import advise as run_advise
    from featcache.store import FeatureStore

    names = [name.strip() for name in layers.split(",") if name.strip()]
    networks = [name.strip() for name in backbones.split(",") if name.strip()]
    with FeatureStore(store, create=False) as fs:
        folder = out_dir or fs.path / "reports" / f"advise-{dataset}"
        report = run_advise(
            fs,
            dataset,
            layers=names or None,
            backbones=networks or None,
            folds=folds,
            fingerprint=fingerprint,
            out=folder,
            on_stage=stage_printer("advise"),
        )
    for line in report.summary():
        out.print(line)
    out.print(f"report: {folder}/advise.json, advise.png ({report.timings['total']:.1f}s)")
    note(report.weights_note)
