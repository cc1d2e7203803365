"""Import TensorFlow once, quietly.

TensorFlow 2.21 prints start-up lines from C++ (oneDNN notice, CUDA probing on machines
without a GPU) straight to file descriptor 2, before TF_CPP_MIN_LOG_LEVEL is read. They are
captured while TensorFlow loads and initialises its devices, and shown again only if the
import fails or FEATCACHE_TF_LOGS=1 is set.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

__all__ = ["import_tensorflow"]


def import_tensorflow(threads: int | None = None) -> Any:
    """Return the ``tensorflow`` module, importing it with its start-up chatter captured.

    `threads` caps TensorFlow's intra-op pool; it only takes effect on the first import.
    """
    if "tensorflow" in sys.modules or os.environ.get("FEATCACHE_TF_LOGS") == "1":
        import tensorflow as tf

        _set_threads(tf, threads)
        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            _set_threads(tf, threads)
            tf.config.list_logical_devices()  # device probing logs now, not mid-run
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf


def _set_threads(tf: Any, threads: int | None) -> None:
    if threads is None:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # the runtime is already up; its pools are fixed
        pass
