"""Importing OpenVINO with its telemetry off: the one place featcache imports it.

OpenVINO sends usage events to Google Analytics by default (`openvino_telemetry`; off only
when the user opted out with ``opt_in_out --opt_out`` or when ``CI=true``): ``import
openvino`` sends one, every ``convert_model`` a session more. featcache sends nothing
anywhere, and the sending is harmful besides: it forks a process from a background thread to
post each event, and a fork taken while NumPy's OpenBLAS threads work left the parent's next
multi-threaded product hung (measured here: a 32x9216 @ 9216x32 float32 product after one
``convert_model`` had not returned after 100 s; 0.2 s with the telemetry off). So, before
OpenVINO is first imported, every `Telemetry` instance is made to decline consent after it
initialises (its sending methods all check ``consent``), and one that exists already is
told so.
"""

from __future__ import annotations

from typing import Any

from featcache.errors import DependencyError

__all__ = ["bind_parameter", "import_openvino", "telemetry_off"]

_MARK = "_featcache_declines"


def telemetry_off() -> None:
    """Make OpenVINO's telemetry decline consent in this process (idempotent; nothing to do
    when `openvino_telemetry` is not installed: OpenVINO then uses its own stub)."""
    try:
        from openvino_telemetry import Telemetry
    except ImportError:
        return
    init = Telemetry.init
    if not getattr(init, _MARK, False):

        def declining_init(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self.consent = False

        setattr(declining_init, _MARK, True)
        Telemetry.init = declining_init
    existing = getattr(Telemetry, "_SingletonMetaClass__single_instance", None)
    if existing is not None:
        existing.consent = False


def import_openvino(needed_by: str, extra: str) -> Any:
    """``import openvino`` with the telemetry off, or `DependencyError` saying what
    (`needed_by`) needs it and to install ``featcache[extra]``."""
    telemetry_off()
    try:
        import openvino
    except ImportError as exc:
        raise DependencyError(
            f'{needed_by} needs OpenVINO: pip install "featcache[{extra}]" (import failed: {exc})'
        ) from exc
    return openvino


def bind_parameter(ov: Any, model: Any, parameter: Any, array: Any) -> None:
    """Replace `parameter` of the ``openvino.Model`` `model` by a constant holding `array`
    and remove it from the model's inputs. The constant shares the array's memory (no
    copy): keep the array alive until the model is compiled or saved. Binding weights after
    conversion keeps them out of the converter, which copies every constant it is given."""
    constant = ov.opset13.constant(array, shared_memory=True)
    for target in list(parameter.output(0).get_target_inputs()):
        target.replace_source_output(constant.output(0))
    model.remove_parameter(parameter)
