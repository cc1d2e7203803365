"""featcache imports OpenVINO with its telemetry off: nothing is sent, nothing forked."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON

pytest.importorskip("openvino_telemetry")

_SCRIPT = """
import json
from openvino_telemetry.backend import backend_ga4
sent = []
backend_ga4.GA4Backend.send = lambda self, message: sent.append(message)
from featcache._openvino import import_openvino
ov = import_openvino("this test", "openvino")
import onnx
from onnx import TensorProto, helper
graph = helper.make_graph(
    [helper.make_node("Relu", ["x"], ["y"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
)
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "relu.onnx")
model = ov.convert_model("relu.onnx")
import openvino_telemetry
print(json.dumps({"sent": len(sent), "consent": openvino_telemetry.Telemetry().consent}))
"""


@pytest.mark.slow
def test_importing_openvino_sends_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env["HOME"] = str(tmp_path)  # OpenVINO would consent by default here (no opt-out file)
    done = subprocess.run(
        [PYTHON, "-c", _SCRIPT], capture_output=True, text=True, env=env, cwd=tmp_path, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == {"sent": 0, "consent": False}


def test_openvino_is_imported_only_through_featcache_openvino() -> None:
    """Tests as well as the package: a direct import would send telemetry outside CI."""
    root = Path(__file__).resolve().parents[1]
    direct = re.compile(r"^\s*(import openvino\b(?!_telemetry)|from openvino(\.\w+)* import)", re.M)
    offenders = [
        str(path.relative_to(root))
        for folder in ("src", "tests", "benchmarks")
        for path in sorted((root / folder).rglob("*.py"))
        if path.name != "_openvino.py" and direct.search(path.read_text())
    ]
    assert offenders == []
