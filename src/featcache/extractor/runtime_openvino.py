"""The OpenVINO runtime: featcache's own TensorFlow graph, converted once, run on the CPU.

- **Conversion** (no TensorFlow): the float32 graph `AlexNet.export_function` traced, with
  the weights as inputs, shipped as a GraphDef file per profile (`graphdef`), goes to
  ``openvino.convert_model``; the weights are bound as constants, the layers not asked for
  are cut off, and ``openvino.save_model`` writes the model with ``compress_to_fp16=False``
  (fp16 weights would change float32's numbers) into the store's runtime cache,
  ``runtimes/FP/openvino-LAYERS-PRECISION/`` (`FeatureStore.runtime_models`), while the
  first batches already run (`OpenVINONetwork.close` waits for it).
- **Signed**: a cached model is used only if its manifest carries this user's signature
  (`featcache.store.localkey`); a model converted elsewhere or rewritten (digests and all)
  is converted again from the weights, then signed. A store this user may only read keeps
  no conversion: it runs from memory.
- **Cached**: the next run reads and compiles that model (or one converted for more
  layers) without importing TensorFlow or reading the weights. The files' SHA-256 is
  checked against the manifest in a thread while the model compiles (unless they are
  unchanged since they last hashed sound: `RuntimeFiles.check`); a damaged model
  (truncated, changed bytes) is removed and converted again.
- **Precision**: ``INFERENCE_PRECISION_HINT`` is always set. float32 pins ``f32``, because
  OpenVINO picks bf16 by itself on CPUs with BF16 and the numbers would change silently; bf16
  sets ``bf16`` when the CPU lists BF16 in ``OPTIMIZATION_CAPABILITIES`` and is refused
  otherwise (OpenVINO would quietly run float32 under a bf16 fingerprint).
- **Batches**: a forward call is cut into requests of `REQUEST_BATCH` images that an
  ``AsyncInferQueue`` runs on OpenVINO's streams; the caller's threads decode the next batch
  meanwhile. Shapes are static (compiled once for one size; the last partial request is
  padded with zeros).

``pip install "featcache[openvino]"``; without it, `require_openvino` says so.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import numpy as np

from featcache._openvino import bind_parameter, import_openvino
from featcache.errors import ConfigError, FeatcacheError, StoreError, WeightsError
from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.graphdef import shipped_graph
from featcache.extractor.network import Network, Runtime, WeightsSource
from featcache.extractor.registry import DEFAULT_BACKBONE, backbone_named
from featcache.extractor.tfgraph import check_square_batch
from featcache.extractor.weights import Weights
from featcache.store import FeatureStore, RuntimeFiles, RuntimeModel

__all__ = [
    "PERFORMANCE_HINT",
    "REQUEST_BATCH",
    "OpenVINONetwork",
    "convert_alexnet",
    "convert_network",
    "find_converted",
    "has_bf16",
    "model_name",
    "openvino_runtime",
    "require_openvino",
]

log = logging.getLogger(__name__)

#: Images per inference request, and OpenVINO's performance hint, chosen by measurement:
#: 256 images in bf16 (caffe profile), each setting run 4 times interleaved with the others
#: on the 2-core AVX512-BF16 machine this was built on, median img/s: THROUGHPUT (one stream
#: and one request per core) with requests of 16 / 32 / 64: 16 / 25 / 21; LATENCY (one
#: stream over both cores) with 32 / 64: 18 / 21; THROUGHPUT with a dynamic batch of 32: 21.
#: The machine was shared with other jobs (load 16-22), hence the low figures; only the order
#: counts. Two requests keep both cores busy where one stream's threads wait on each other
#: between layers, and 32 rows amortise reading fc6/fc7's weights (150 MB) per request.
REQUEST_BATCH: Final = 32
PERFORMANCE_HINT: Final = "THROUGHPUT"
_HINTS: Final = {"float32": "f32", "bf16": "bf16"}
_XML: Final = "model.xml"
_READ_ONLY: Final = (errno.EACCES, errno.EPERM, errno.EROFS)


def require_openvino() -> Any:
    """Import OpenVINO (its telemetry off: `featcache._openvino`), or raise
    `DependencyError` saying how to install it."""
    return import_openvino("runtime 'openvino'", "openvino")


def has_bf16(core: Any) -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 on this machine (AVX512-BF16, AMX)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def model_name(layers: Sequence[str], precision: str, backbone: str = DEFAULT_BACKBONE) -> str:
    """The runtime-cache folder name of a converted model: ``openvino-fc7-bf16``."""
    return "openvino-" + "+".join(_canonical(layers, backbone)) + f"-{precision}"


def _canonical(layers: Sequence[str], backbone: str = DEFAULT_BACKBONE) -> tuple[str, ...]:
    return backbone_named(backbone).canonical(layers)


def find_converted(
    cache: RuntimeFiles, spec: ExtractorSpec, layers: Sequence[str]
) -> RuntimeModel | None:
    """The cached model of `spec` for `layers`, else one converted for more layers (it serves
    these too, at the cost of the extra outputs), else None. Digests are not checked here.

    Raises `StoreError` when the exact model's manifest is unreadable.
    """
    wanted = _canonical(layers, spec.network)
    exact = cache.find(spec.fingerprint, model_name(wanted, spec.precision, spec.network))
    if exact is not None:
        return exact
    for prefix, folder, _ in cache.folders():
        if prefix != spec.fingerprint[:16] or cache.is_temporary(folder):
            continue
        if not folder.name.startswith("openvino-") or not folder.name.endswith(spec.precision):
            continue
        try:
            found = cache.find(spec.fingerprint, folder.name)
        except StoreError:
            continue
        if (
            found is not None
            and found.fingerprint == spec.fingerprint
            and set(wanted) <= set(found.meta.get("layers", ()))
        ):
            return found
    return None


def convert_alexnet(weights: Weights, profile: str, layers: Sequence[str]) -> Any:
    """`convert_network` for AlexNet (its first name, kept for callers)."""
    return convert_network(weights, profile, layers)


def convert_network(weights: Weights, profile: str, layers: Sequence[str]) -> Any:
    """Convert featcache's network for `weights`' backbone (float32, `layers` out) to an
    ``openvino.Model``.

    The graph is the TensorFlow network's ``export_function``, traced once and shipped
    (`graphdef`), so no TensorFlow is imported: ``openvino.convert_model`` reads the GraphDef
    file by itself
    (0.2 s, where importing TensorFlow and tracing took 2.5 s). Its inputs after the batch
    are the weights, bound here as constants sharing the arrays' memory until the model is
    saved (the converter took 5.6 s on a graph holding the 244 MB as constants, 1.1 s
    without). The outputs not in `layers` are removed, and with them every layer only they
    needed (fc6 alone keeps neither fc7 nor fc8). The batch dimension stays dynamic.
    """
    ov = require_openvino()
    wanted = _canonical(layers, weights.network)
    graph = shipped_graph(profile, backbone=weights.network)
    model = ov.convert_model(str(graph.path))
    by_name = {p.get_friendly_name().split(":")[0]: p for p in model.get_parameters()}
    for layer, part in graph.inputs:
        parameter = by_name.pop(f"{layer}_{part}", None)
        if parameter is None:
            raise FeatcacheError(
                f"OpenVINO's conversion lost the input '{layer}_{part}'; found {sorted(by_name)}"
            )
        array = weights.layers[layer][0 if part == "weights" else 1]
        if not parameter.get_partial_shape().compatible(ov.PartialShape(list(array.shape))):
            raise FeatcacheError(
                f"{weights.path}: layer '{layer}' {part} has shape {array.shape}, the network "
                f"takes {parameter.get_partial_shape()}"
            )
        bind_parameter(ov, model, parameter, array)
    if len(model.get_parameters()) != 1:
        raise FeatcacheError(f"OpenVINO's conversion left inputs {sorted(by_name)} unbound")
    # The GraphDef names outputs by tensor ("Identity:0"); name them by layer again, and
    # drop those not asked for (the nodes only they used go with them).
    tensors = {tensor: layer for layer, tensor in graph.outputs.items()}
    for output, result in zip(list(model.outputs), list(model.get_results()), strict=True):
        found = [tensors[name] for name in output.get_names() if name in tensors]
        if len(found) != 1:
            raise FeatcacheError(f"OpenVINO's conversion has an unexpected output {output}")
        if found[0] in wanted:
            output.get_tensor().set_names({found[0]})
        else:
            model.remove_result(result)
    model.validate_nodes_and_infer_types()
    return model


def _collect(
    request: Any,
    userdata: tuple[dict[str, np.ndarray], dict[str, int], list[BaseException], int, int],
) -> None:
    """The queue's callback: copy one request's outputs into their rows of the results.

    A plain function with everything in `userdata`: a bound method would make a reference
    cycle through the queue (a C++ object the garbage collector cannot see into), and every
    compiled model would leak.
    """
    results, outputs, errors, start, count = userdata
    try:
        for name, index in outputs.items():
            results[name][start : start + count] = request.get_output_tensor(index).data[:count]
    except BaseException as exc:  # raised again in run(); a callback must not throw
        errors.append(exc)


class _Compiled:
    """One compiled model (serving one layer set) and its queue of inference requests."""

    def __init__(self, ov: Any, compiled: Any, layers: tuple[str, ...]) -> None:
        self.compiled = compiled
        self.layers = layers
        found = {o.get_any_name(): i for i, o in enumerate(compiled.outputs)}
        missing = [name for name in layers if name not in found]
        if missing:
            raise FeatcacheError(f"the OpenVINO model has no output {missing}")
        self.outputs = {name: found[name] for name in layers}
        # Each layer's vector length, from the compiled (static) shapes: narrow test
        # networks have other lengths than the registry's.
        self.dims = {
            name: int(compiled.outputs[found[name]].get_partial_shape()[1].get_length())
            for name in layers
        }
        requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.queue = ov.AsyncInferQueue(compiled, max(1, requests))
        self.queue.set_callback(_collect)

    def run(self, batch: np.ndarray, chunk: int) -> dict[str, np.ndarray]:
        n = len(batch)
        results = {name: np.empty((n, self.dims[name]), np.float32) for name in self.layers}
        errors: list[BaseException] = []
        padded: list[np.ndarray] = []  # kept alive until the queue is done with them
        for start in range(0, n, chunk):
            part = batch[start : start + chunk]
            count = len(part)
            if count < chunk:
                part = np.concatenate(
                    [part, np.zeros((chunk - count, *part.shape[1:]), part.dtype)]
                )
                padded.append(part)
            userdata = (results, self.outputs, errors, start, count)
            self.queue.start_async({0: part}, userdata, share_inputs=True)
        self.queue.wait_all()
        if errors:
            raise FeatcacheError(f"OpenVINO inference failed: {errors[0]}")
        return results


class OpenVINONetwork:
    """The `Network` of the OpenVINO runtime for one extractor.

    ``forward(batch, layers)`` takes a preprocessed float32 NHWC batch of 227x227x3 and
    returns ``{layer: (N, dim) float32}``, like `AlexNet.forward`. Each layer set gets its
    own converted model, found in `cache` (a store's `FeatureStore.runtime_models`) or
    converted (once) from `weights`, a `Weights` or a function that loads them, called only
    when a conversion is needed. With ``cache=None`` the converted model is kept in memory.
    """

    def __init__(
        self,
        spec: ExtractorSpec,
        weights: WeightsSource,
        cache: RuntimeFiles | None = None,
        *,
        request_batch: int = REQUEST_BATCH,
        threads: int | None = None,
    ) -> None:
        if spec.precision not in _HINTS:
            raise ConfigError(
                f"The 'precision' {spec.precision!r} is not available with runtime 'openvino'; "
                f"use one of {list(_HINTS)}."
            )
        if request_batch < 1:
            raise ConfigError(f"The 'request_batch' must be >= 1. Got {request_batch}.")
        if threads is not None and threads < 1:
            raise ConfigError(f"The 'threads' must be >= 1 (or None: all cores). Got {threads}.")
        self._ov = require_openvino()
        self._core = self._ov.Core()
        if spec.precision == "bf16" and not has_bf16(self._core):
            raise ConfigError(
                "precision 'bf16' with runtime 'openvino' needs a CPU with BF16 "
                "(AVX512-BF16 or AMX); this one offers "
                f"{self._core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}. Use "
                "--precision float32, or --runtime tensorflow (which emulates bf16)."
            )
        self.spec = spec
        self.backbone = backbone_named(spec.network)
        self.cache = cache
        self.request_batch = request_batch
        self.threads = threads
        self._weights = weights
        self._lock = threading.Lock()
        self._models: dict[tuple[str, ...], _Compiled] = {}
        self._saver = ThreadPoolExecutor(1, thread_name_prefix="featcache-ov-save")
        self._saving: list[Future[None]] = []
        #: Layer sets converted by this network, and why a cached one was not used.
        self.conversions: list[tuple[str, ...]] = []
        self.rebuilt: list[str] = []

    @property
    def config(self) -> dict[str, str]:
        """OpenVINO's compile properties for this network."""
        config = {
            "INFERENCE_PRECISION_HINT": _HINTS[self.spec.precision],
            "PERFORMANCE_HINT": PERFORMANCE_HINT,
        }
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = str(self.threads)
        return config

    def _load_weights(self) -> Weights:
        if not isinstance(self._weights, Weights):
            self._weights = self._weights()
        if self._weights.network != self.spec.network:
            raise WeightsError(
                f"{self._weights.path}: {self._weights.network} weights, but the extractor "
                f"is a {self.spec.network}"
            )
        return self._weights

    def _compile(self, model: Any, layers: tuple[str, ...]) -> _Compiled:
        size = self.backbone.input_size
        model.reshape([self.request_batch, size, size, 3])
        return _Compiled(self._ov, self._core.compile_model(model, "CPU", self.config), layers)

    def _find(self, cache: RuntimeFiles, layers: tuple[str, ...]) -> RuntimeModel | None:
        try:
            return find_converted(cache, self.spec, layers)
        except StoreError as exc:  # an unreadable manifest: convert again
            name = model_name(layers, self.spec.precision, self.spec.network)
            self._discard(cache, cache.folder(self.spec.fingerprint, name), [str(exc)])
            return None

    def _discard(self, cache: RuntimeFiles, folder: Path, problems: list[str]) -> None:
        log.warning("cached OpenVINO model is damaged, converting again: %s", problems[0])
        self.rebuilt.extend(problems)
        cache.remove(folder)

    def _cached(
        self, cache: RuntimeFiles, layers: tuple[str, ...], entry: RuntimeModel
    ) -> _Compiled | None:
        """Compile a cached model while its digests are checked; None if it is damaged."""
        with ThreadPoolExecutor(1, thread_name_prefix="featcache-ov-check") as checker:
            checking = checker.submit(cache.check, entry)
            try:
                compiled = self._compile(self._core.read_model(entry.folder / _XML), layers)
                unreadable = []
            except RuntimeError as exc:  # a truncated .bin or a mangled .xml
                compiled = None
                unreadable = [f"{entry.folder}: OpenVINO cannot read it ({exc})"]
            problems = checking.result() + unreadable
        if not problems:
            return compiled
        self._discard(cache, entry.folder, problems)
        return None

    def _convert(self, layers: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
        """Convert featcache's graph; return the ``ov.Model`` and what its manifest records."""
        weights = self._load_weights()
        if weights.sha256 != self.spec.weights_sha256:
            raise FeatcacheError(
                f"{weights.path}: SHA-256 {weights.sha256[:12]}... is not the extractor's "
                f"{self.spec.weights_sha256[:12]}..."
            )
        start = time.perf_counter()
        model = convert_network(weights, self.spec.profile, layers)
        self.conversions.append(layers)
        graph = shipped_graph(self.spec.profile, backbone=self.spec.network)
        meta = {
            "runtime": "openvino",
            "openvino": self._ov.__version__,
            "graph": {"file": graph.path.name, "sha256": graph.sha256, "traced": graph.tensorflow},
            "layers": list(layers),
            "precision": self.spec.precision,
            "extractor": self.spec.as_dict(),
            "weights_note": weights.demo_note,
            "convert_seconds": round(time.perf_counter() - start, 3),
        }
        return model, meta

    def _publish(
        self, cache: RuntimeFiles, model: Any, layers: tuple[str, ...], meta: dict[str, Any]
    ) -> None:
        ov = self._ov

        def write(folder: Path) -> None:
            # float32 weights as they are: fp16 compression would change float32's numbers
            ov.save_model(model, str(folder / _XML), compress_to_fp16=False)

        try:
            cache.publish(
                self.spec.fingerprint,
                model_name(layers, self.spec.precision, self.spec.network),
                write,
                meta,
                layers=layers,
                precision=self.spec.precision,
            )
        except StoreError as exc:
            cause = exc.__cause__
            if not isinstance(cause, OSError) or cause.errno not in _READ_ONLY:
                raise
            # A store this user may only read (a colleague's, shared): the model converted
            # here serves this run from memory; the next run converts it again.
            log.warning("converted OpenVINO model not kept (%s): %s", cache.root, cause)

    def _compiled(self, layers: tuple[str, ...]) -> _Compiled:
        with self._lock:
            compiled = self._models.get(layers)
            if compiled is None:  # a model already compiled for more layers serves these
                compiled = next(
                    (m for key, m in self._models.items() if set(layers) <= set(key)), None
                )
            if compiled is None:
                entry = None if self.cache is None else self._find(self.cache, layers)
                if entry is not None and self.cache is not None:
                    compiled = self._cached(self.cache, layers, entry)
                if compiled is None:
                    model, meta = self._convert(layers)
                    compiled = self._compile(model, layers)
                    if self.cache is not None:
                        # Written while the first batches run (serialising, hashing and
                        # fsyncing 244 MB); `close` waits for it.
                        size = self.backbone.input_size
                        model.reshape([-1, size, size, 3])
                        self._saving.append(
                            self._saver.submit(self._publish, self.cache, model, layers, meta)
                        )
                self._models[layers] = compiled
            return compiled

    def close(self) -> None:
        """Wait until converted models are written to the cache; raise if one could not be."""
        pending, self._saving = self._saving, []
        errors = [exc for exc in (future.exception() for future in pending) if exc is not None]
        if errors:
            raise errors[0]

    def ensure_converted(self, layers: Sequence[str] = ("fc7",)) -> RuntimeModel:
        """Make sure the cache holds a sound converted model for `layers` (digests checked;
        converted when missing or damaged) without compiling it; return its entry."""
        if self.cache is None:
            raise ConfigError("ensure_converted needs a runtime-model cache (a store)")
        wanted = _canonical(layers, self.spec.network)
        with self._lock:
            entry = self._find(self.cache, wanted)
            if entry is not None:
                problems = self.cache.check(entry)
                if not problems:
                    return entry
                self._discard(self.cache, entry.folder, problems)
            model, meta = self._convert(wanted)
            self._publish(self.cache, model, wanted, meta)
            entry = self._find(self.cache, wanted)
        if entry is None:
            raise StoreError(f"{self.cache.root}: the converted model was not kept")
        return entry

    def prepare(self, layers: Sequence[str] = ("fc7",)) -> None:
        """Find or convert, then compile, the model for `layers` now rather than on first use."""
        self._compiled(_canonical(layers, self.spec.network))

    def forward(self, batch: np.ndarray, layers: Sequence[str] = ("fc7",)) -> dict[str, np.ndarray]:
        """Run a (N, S, S, 3) float32 batch; return ``{layer: (N, dim) float32}``."""
        wanted = self.backbone.check_layers(layers)
        check_square_batch(batch, self.backbone.input_size)
        compiled = self._compiled(_canonical(wanted, self.spec.network))
        inputs = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:  # one batch at a time through the queue (its results are shared)
            results = compiled.run(inputs, self.request_batch)
        return {name: results[name] for name in wanted}


def openvino_runtime(store: FeatureStore | None, layers: Sequence[str] = ("fc7",)) -> Runtime:
    """The OpenVINO `Runtime` for `layers`: models cached in `store` (or in memory only).

    ``converted(spec)`` is the cached model's manifest metadata (what it was converted from,
    the weights' note), so the engine needs no weights.
    """
    # An absolute path: Ray's workers get this runtime pickled and run elsewhere.
    cache = None if store is None else RuntimeFiles(store.runtime_models.root.resolve())
    wanted = tuple(layers)  # checked against the backbone of the spec each network is for

    def build(weights: WeightsSource, spec: ExtractorSpec) -> Network:
        network = OpenVINONetwork(spec, weights, cache)
        network.prepare(wanted)
        return network

    def converted(spec: ExtractorSpec) -> Mapping[str, object] | None:
        if cache is None:
            return None
        try:
            found = find_converted(cache, spec, wanted)
        except StoreError:  # an unreadable manifest: the network converts again
            return None
        return None if found is None else found.meta

    # No warm_up: nothing here imports TensorFlow, converting included.
    return Runtime("openvino", build, converted=converted)
