"""``featcache demo``: the whole job on the bundled sample."""

from __future__ import annotations

from pathlib import Path

import typer

from featcache.cli._shared import out, progress_bar, reports_errors, show_tf_logs, verbose_option


@reports_errors
def demo(
    out_dir: Path = typer.Option(Path("featcache-demo"), "--out", help="Where to put it all."),
    limit: int | None = typer.Option(None, help="Use only the first N digits (quick look)."),
    verbose: bool = verbose_option(),
) -> None:
    """The whole job on the bundled digits sample with RANDOM demo weights."""
    show_tf_logs(verbose)
    from featcache.demo import run_demo

    with progress_bar("extracting") as update:
        result = run_demo(out_dir, limit=limit, progress=update)
    ex = result.extraction
    out.print(f"sample: {ex.total} digit images (scikit-learn's digits) in {result.data}")
    out.print(f"weights: {result.weights}")
    out.print(
        f"extract: {ex.extracted} extracted, {ex.cached} already cached, {ex.failed} failed "
        f"in {ex.seconds:.1f}s → {result.store}"
    )
    for kind, trained in result.heads.items():
        summary = result.evaluations[kind].summary
        out.print(
            f"train {kind}: head '{trained.record.name}' v{trained.record.version}, "
            f"fit {trained.timings['fit']:.2f}s; test accuracy {summary['accuracy']:.4f} "
            f"(n={summary['n']}); report in {result.reports[kind]}"
        )
    out.print("predict (digits-softmax, top 3):")
    for p in result.predictions:
        ranked = ", ".join(f"{x.label}: {x.probability:.3f}" for x in p.predictions)
        out.print(f"  {p.path} → {ranked}")
    out.print(
        f"next: featcache predict --store {result.store} --head digits-softmax "
        f"--weights {result.weights} IMAGE..."
    )
    out.print(
        f"      featcache serve --store {result.store} --head digits-softmax "
        f"--weights {result.weights}"
    )
    out.print(
        "[bold yellow]note:[/bold yellow] these features come from seeded RANDOM weights, "
        "NOT ImageNet-trained AlexNet. Run the same commands with the real bvlc_alexnet.npy "
        "(featcache weights fetch) for ImageNet features.",
        markup=True,
    )
