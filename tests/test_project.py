"""The project's promises about itself: public names, no TensorFlow on import, CI = README."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import featcache

REPO = Path(__file__).resolve().parents[1]


def test_all_public_names_resolve() -> None:
    for name in featcache.__all__:
        assert getattr(featcache, name) is not None, name
    assert featcache.FeatureStore.__module__ == "featcache.store.featurestore"


def test_import_does_not_load_tensorflow_or_sklearn() -> None:
    code = (
        "import sys, featcache, featcache.cli, featcache.store, featcache.data\n"
        "bad = [m for m in ('tensorflow', 'sklearn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_command = next(b for b in blocks[:2] if "pytest" in b)
    assert test_command in (REPO / ".ci" / "run").read_text()
    assert "featcache demo" in blocks[0]
