"""``featcache export-model``: one model to deploy (ONNX, SavedModel, OpenVINO), verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from featcache.cli._shared import EXIT_ERROR, err, note, out, reports_errors, usage_error
from featcache.cli.heads import HEAD_HELP

__all__ = ["export_model"]


def _summary(verification: dict[str, Any]) -> str:
    side = verification.get("input_size", 227)  # records before VGG16/ResNet50: AlexNet's
    return (
        f"{verification['images_checked']} image(s) checked with {verification['runtime']} "
        f"in a fresh process ({verification['images_at_input_size']} at {side}x{side}, "
        f"{verification['images_resized']} resized in the graph): max |diff| "
        f"{verification['max_abs_diff_at_input_size']:.2g} at {side}x{side}, "
        f"{verification['max_abs_diff_resized']:.2g} resized (tolerance "
        f"{verification['tolerance']['at_input_size']:g} / "
        f"{verification['tolerance']['resized']:g}); top-1 agreement "
        f"{verification['top1_agreement']:.1%}"
    )


@reports_errors
def export_model(
    store: Path | None = typer.Option(None, "--store", help="Feature store directory."),
    head: str | None = typer.Option(None, "--head", help=HEAD_HELP),
    version: int | None = typer.Option(None, help="Head version (same as --head NAME@N)."),
    weights: Path | None = typer.Option(
        None, help="The weights file the head's vectors were extracted with."
    ),
    fmt: str = typer.Option("onnx", "--format", help="onnx, savedmodel or openvino."),
    out_path: Path | None = typer.Option(
        None, "--out", help="Folder to write (the model and verification.json)."
    ),
    sample: int = typer.Option(32, help="Images of the dataset to verify on (0: do not verify)."),
    dataset: str | None = typer.Option(
        None, help="Dataset to verify on [default: the one the head was trained on]."
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing --out folder."),
    verify: Path | None = typer.Option(
        None, "--verify", help="Verify an exported model again (its folder); nothing else."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Export a head with its backbone and preprocessing as one model: uint8 RGB images
    [N, H, W, 3] in, probabilities [N, C] out. Verified in a fresh process with the format's
    own runtime against predict; exit 1 past the tolerance."""
    if verify is not None:
        from featcache.export.verify import reverify

        check = reverify(verify)
        if as_json:
            out.print_json(json.dumps(check), indent=None)
        elif check["passed"]:
            out.print(f"verified {check['model']} ({check['format']}): " + _summary(check))
        for problem in check["problems"]:
            err.print(f"error: {problem}")
        if not check["passed"]:
            raise typer.Exit(EXIT_ERROR)
        return
    if store is None or head is None or weights is None or out_path is None:
        usage_error(
            "export-model needs --store, --head, --weights and --out (or --verify PATH): "
            "featcache export-model --store S --head NAME --weights W --format onnx --out DIR"
        )
    from featcache.export.api import ExportConfig
    from featcache.export.api import export_model as run_export
    from featcache.store import FeatureStore

    config = ExportConfig(format=fmt, sample=sample, dataset=dataset, overwrite=overwrite)
    with FeatureStore(store, create=False) as fs:
        result = run_export(fs, head, weights, out_path, config, version=version)
    verification = result.verification
    if as_json:
        answer = {
            "path": str(result.path),
            "format": result.format,
            "bytes": result.bytes,
            "seconds": result.seconds,
            "passed": result.passed,
            "head": result.metadata["head"],
            "weights_note": result.metadata["weights_note"],
            "verification": {k: v for k, v in (verification or {}).items() if k != "reference"},
        }
        out.print_json(json.dumps(answer), indent=None)
    else:
        h = result.metadata["head"]
        out.print(
            f"exported head '{h['name']}' v{h['version']} as {result.format}: {result.path} "
            f"({result.bytes / 1e6:.1f} MB, {result.seconds['export']:.1f} s)"
        )
        if verification is None:
            out.print("not verified (--sample 0)")
        else:
            out.print(_summary(verification) + f"; {result.path / 'verification.json'}")
        note(result.metadata["weights_note"])
    for problem in (verification or {}).get("problems", []):
        err.print(f"error: {problem}")
    if not result.passed:
        raise typer.Exit(EXIT_ERROR)
