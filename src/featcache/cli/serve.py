"""``featcache serve``: the HTTP service under uvicorn."""

from __future__ import annotations

from pathlib import Path

import typer

from featcache.cli._shared import err, reports_errors


@reports_errors
def serve(
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    head: str = typer.Option(..., "--head", help="Head name (retrained versions are picked up)."),
    weights: Path | None = typer.Option(None, help="Weights, to extract unseen uploads."),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, help="Port."),
    token_file: Path | None = typer.Option(
        None, help="File holding a bearer token [or env FEATCACHE_TOKEN]."
    ),
    top_k: int = typer.Option(5, help="Classes per answer."),
    max_upload_mb: float = typer.Option(10.0, help="Largest accepted upload, in MB."),
    max_files: int = typer.Option(16, help="Most files in one request."),
    max_pixels: int = typer.Option(50_000_000, help="Largest accepted image, in pixels."),
) -> None:
    """Serve predictions over HTTP (OpenAPI docs at /docs)."""
    import os
    import socket

    import uvicorn

    from featcache.errors import ConfigError
    from featcache.service import ServiceConfig, create_app

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
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_files=max_files,
        max_pixels=max_pixels,
    )
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535. Got {port}.")
    application = create_app(config)
    # Bind before saying "serving": a busy or forbidden port is one line and exit 1.
    listener: socket.socket | None = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as exc:
        if listener is not None:
            listener.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another server using "
            "it? Pick another --port, or check --host"
        ) from None
    served = application.state.predictor.head
    err.print(
        f"serving head '{served.name}' v{served.version} from {store} on http://{host}:{port} "
        f"({'can' if weights else 'cannot'} extract unseen images; "
        f"{'token required' if token else 'no token'})"
    )
    if served.meta.get("weights_note"):
        err.print(f"note: {served.meta['weights_note']}")
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning"))
    server.run(sockets=[listener])
