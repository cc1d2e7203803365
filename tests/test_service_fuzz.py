"""Schemathesis, with all its checks, against the live app with and without a token: zero
failures. Bounded: a fixed seed, 30 examples per operation, about 10 s per run."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from featcache.service import ServiceConfig, create_app
from service_fakes import live_server, make_store

pytestmark = pytest.mark.slow  # two fuzzing runs, about 20 s

TOKEN = "s3cret-token-for-fuzzing"

# A random byte string is a schema-valid upload that is not an image: 422 (or 413, or 409
# for a real image the server cannot extract) is the documented answer, not a failure.
CONFIG = """
[parameters]
"path.key" = "{key}"

[[operations]]
include-path = "/v1/predict"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "409", "413", "422"]
"""


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
def test_schemathesis_finds_nothing(tmp_path: Path, token: str | None) -> None:
    store, images = make_store(tmp_path)
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(CONFIG.format(key=hashlib.sha256(images[0]).hexdigest()))
    app = create_app(ServiceConfig(store=store, head="signs", token=token, access_log=False))
    with live_server(app) as base:
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config_file),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "30",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--no-color",
        ]
        if token is not None:
            command += ["--header", f"Authorization: Bearer {token}"]
        run = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and "failed" not in run.stdout.split("SUMMARY")[-1]
