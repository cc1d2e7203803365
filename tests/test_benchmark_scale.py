"""benchmarks/scale.py at the 10k size (what CI runs): every operation measured exits cleanly
under a 512 open-file limit and reports seconds, peak RSS and open files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"


@pytest.mark.slow
def test_scale_benchmark_runs_at_10k(tmp_path: Path) -> None:
    ops = (
        "catalog_cached,catalog_rows,catalog_write,lookup,stream,train,evaluate,export,doctor,"
        "advise"
    )
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "10000", "--dim", "32", "--classes", "10",
         "--epochs", "1", "--ops", ops, "--folder", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    table = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    assert "## 10,000 rows" in done.stdout
    for op in ops.split(","):
        assert op in table and table[op][1] != "FAILED", done.stdout
        assert float(table[op][1]) >= 0 and int(table[op][2]) > 0 and 0 < int(table[op][3]) < 512
    assert '"found": 10000' in done.stdout and "now 10000 rows" in done.stdout
    assert '"label_issues": 10000' in done.stdout and '"search_exact": false' in done.stdout
    advise = next(line for line in done.stdout.splitlines() if line.startswith("advise"))
    assert '{"case": ' in advise  # advise measures the synthetic fc7 as AlexNet's
    assert not any(tmp_path.iterdir())  # the store is deleted afterwards
