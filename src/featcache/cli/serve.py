"""``featcache serve``: the HTTP service under uvicorn."""

from __future__ import annotations

from pathlib import Path

import typer

from featcache.cli._shared import err, reports_errors, show_tf_logs, verbose_option


@reports_errors
def serve(
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    head: str = typer.Option(
        ...,
        "--head",
        help="NAME (follows the newest version), NAME@promoted (follows 'heads promote') "
        "or NAME@3 (version 3 for good).",
    ),
    weights: Path | None = typer.Option(None, help="Weights, to extract unseen uploads."),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, help="Port."),
    workers: int = typer.Option(1, help="Server processes sharing the store."),
    token_file: Path | None = typer.Option(
        None, help="File holding a bearer token [or env FEATCACHE_TOKEN]."
    ),
    allowed_host: list[str] = typer.Option(
        [], help="Host name accepted without a token besides loopback ones, repeatable."
    ),
    allowed_origin: list[str] = typer.Option(
        [],
        help="Web page origin (https://app.example) whose requests are accepted, repeatable; "
        "other foreign Origin headers get 403.",
    ),
    top_k: int = typer.Option(5, help="Classes per answer."),
    max_request_mb: float = typer.Option(32.0, help="Largest request body, in MB."),
    max_upload_mb: float = typer.Option(10.0, help="Largest accepted upload, in MB."),
    max_files: int = typer.Option(16, help="Most files in one request."),
    max_pixels: int = typer.Option(50_000_000, help="Largest accepted image, in pixels."),
    max_request_pixels: int = typer.Option(
        50_000_000, help="Most pixels of unseen images in one request."
    ),
    answer_cache: int = typer.Option(
        50_000, help="Answers kept in memory per worker (about 1.2 KB each); 0 turns it off."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No access log line per request."),
    runtime: str | None = typer.Option(
        None, help="tensorflow or openvino, to extract [default: what the head's vectors need]."
    ),
    verbose: bool = verbose_option(),
) -> None:
    """Serve predictions over HTTP (OpenAPI docs at /docs)."""
    show_tf_logs(verbose)
    import os
    import socket

    from featcache.errors import ConfigError
    from featcache.service import ServiceConfig
    from featcache.service.heads import HeadFollower
    from featcache.service.runner import run
    from featcache.store import FeatureStore

    token = os.environ.get("FEATCACHE_TOKEN") or None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{token_file}: cannot read token file ({exc})") from exc
    config = ServiceConfig(
        store=store,
        head=head,
        weights=weights,
        token=token,
        top_k=top_k,
        max_request_bytes=int(max_request_mb * 1024 * 1024),
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_files=max_files,
        max_pixels=max_pixels,
        max_request_pixels=max_request_pixels,
        allowed_hosts=tuple(allowed_host),
        allowed_origins=tuple(allowed_origin),
        access_log=not quiet,
        answer_cache_size=answer_cache,
        runtime=runtime,
    )
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535. Got {port}.")
    # Try the port before saying "serving": a busy or forbidden port is one line and exit 1.
    # (uvicorn binds again a moment later; its own error would come after our banner.)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another server using "
            "it? Pick another --port, or check --host"
        ) from None
    with FeatureStore(store, create=False) as fs:
        served = HeadFollower(fs, config.head_spec).live.head
    err.print(
        f"serving head '{served.name}' v{served.version} ({config.head_spec.follow}) from "
        f"{store} on http://{host}:{port} with {workers} worker(s) "
        f"({'can' if weights else 'cannot'} extract unseen images; "
        f"{'token required' if token else 'no token: loopback Host names only'})"
    )
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    auth = ' -H "Authorization: Bearer $FEATCACHE_TOKEN"' if token else ""
    err.print(
        f"try: curl{auth} -F files=@IMAGE {url}/v1/predict   (API docs: {url}/docs; Ctrl-C "
        "stops the server)"
    )
    if served.meta.get("weights_note"):
        err.print(f"note: {served.meta['weights_note']}")
    run(config, host=host, port=port, workers=workers)
