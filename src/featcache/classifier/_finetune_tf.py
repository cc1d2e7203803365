"""The TensorFlow side of one fine-tune: variables, AdamW slots, the compiled step.

Imported by `FineTuneHead.fit` only. The layers above the cut (`featcache.architecture`)
run as TensorFlow ops: convolutions (oneDNN on the CPU, a GPU when TensorFlow sees one),
max pools and products, differentiated by TensorFlow. Grouped convolutions run group by
group: TensorFlow has no gradient for its native grouped convolution on the CPU.

Every layer sees its input standardised by constants measured on a sample at the start, and
its weights are kept in those units (the same function): Adam then moves each layer by the
same relative amount whatever the scale of the activations, which for pretrained weights
differs by orders of magnitude between files. Dense inputs are centred and scaled per
column; convolution inputs only scaled per channel, so that zero padding stays zero.
`weights` folds the constants back, so the head is plain AlexNet arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featcache.architecture import Stage, tf_stage

__all__ = ["Standardisation", "Trainer", "TrainerConfig", "input_stats"]


@dataclass(frozen=True)
class TrainerConfig:
    """What the trainer takes from the head's parameters."""

    learning_rate: float
    pretrained_learning_rate: float
    weight_decay: float
    dropout: float
    precision: str
    seed: int


@dataclass(frozen=True)
class Standardisation:
    """The constants of one layer's input: x_std = (x - mean) / scale (mean 0 for convs)."""

    mean: np.ndarray
    scale: np.ndarray


def input_stats(h: np.ndarray, conv: bool) -> Standardisation:
    """Per-column mean and standard deviation of a (N, features) sample (1 where constant);
    for a convolution's (N, H, W, C) input, the root mean square per channel and mean 0."""
    if conv:
        rms = np.sqrt(np.mean(np.square(h, dtype=np.float64), axis=(0, 1, 2)))
        scale = np.where(rms > 1e-6, rms, 1.0)
        return Standardisation(np.zeros_like(scale, np.float32), scale.astype(np.float32))
    mean = h.mean(axis=0, dtype=np.float64)
    std = h.std(axis=0, dtype=np.float64)
    scale = np.where(std > 1e-6 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return Standardisation(mean.astype(np.float32), scale.astype(np.float32))


def _kernel_scale(stats: Standardisation, w: np.ndarray) -> np.ndarray:
    """The factor of each kernel entry (in, out) that standardises a convolution's input:
    output channel o of group g reads input channels g*cin .. (g+1)*cin - 1."""
    cin, cout = w.shape[2], w.shape[3]
    groups = len(stats.scale) // cin
    per_group = cout // groups
    group_of_out = np.arange(cout) // per_group
    factors: np.ndarray = stats.scale[group_of_out[None, :] * cin + np.arange(cin)[:, None]]
    return factors


class Trainer:
    """Variables, optimizer and compiled functions for `stages` (weights in `params`, with
    whether each is pretrained), input standardised by `stats` (one per stage with weights)."""

    def __init__(
        self,
        stages: Sequence[Stage],
        params: Sequence[tuple[np.ndarray, np.ndarray, bool]],
        stats: Sequence[Standardisation],
        input_shape: tuple[int, int, int] | None,
        config: TrainerConfig,
    ) -> None:
        from featcache._tf import import_tensorflow

        tf = import_tensorflow()  # its start-up lines (oneDNN, cuInit) captured, not shown

        self.stages = tuple(stages)
        self.stats = list(stats)
        self.kinds = [s.kind for s in self.stages if s.has_weights]
        compute = tf.bfloat16 if config.precision == "bf16" else tf.float32
        self.variables: list[Any] = []
        slots = []
        for (w, b, was_pretrained), kind, st in zip(params, self.kinds, self.stats, strict=True):
            lr = config.pretrained_learning_rate if was_pretrained else config.learning_rate
            w_std, b_std = self._to_standard(w, b, kind, st)
            for array, decay in ((w_std, config.weight_decay), (b_std, 0.0)):
                var = tf.Variable(array, trainable=True)
                self.variables.append(var)
                zeros = tf.zeros_like(array)
                slots.append((var, tf.Variable(zeros), tf.Variable(zeros), lr, decay))
            del w_std, b_std
        self._slots = slots
        count = tf.Variable(0, dtype=tf.int64)
        self._count = count
        dropout = float(config.dropout)
        variables = self.variables
        shifts = [tf.constant(s.mean) for s in self.stats]
        inv_scales = [tf.constant(1.0 / s.scale) for s in self.stats]
        stage_list = self.stages
        seed = config.seed

        def forward(x: Any, seeds: Any, stop: int | None = None) -> Any:
            h = x if input_shape is None else tf.reshape(x, [-1, *input_shape])
            k = 0
            previous_dense = False
            for index, stage in enumerate(stage_list[:stop]):
                if stage.kind == "pool":
                    h = tf_stage(tf, h, stage, None, None)
                    continue
                w, b = variables[2 * k], variables[2 * k + 1]
                h = tf.cast(h, tf.float32)
                if stage.kind == "conv":
                    h = tf.cast(h * inv_scales[k], compute)
                else:
                    h = (tf.reshape(h, [-1, int(w.shape[0])]) - shifts[k]) * inv_scales[k]
                    if previous_dense and seeds is not None and dropout > 0:
                        # on the centred activations: a dropped unit takes its mean value
                        h = tf.nn.experimental.stateless_dropout(
                            h, dropout, seed=seeds + tf.constant([0, index], tf.int64)
                        )
                    h = tf.cast(h, compute)
                h = tf_stage(tf, h, stage, tf.cast(w, compute), tf.cast(b, compute),
                             split_groups=True)  # fmt: skip
                previous_dense = stage.kind == "dense"
                k += 1
            return tf.cast(h, tf.float32)

        def train_step(x: Any, y: Any) -> Any:
            step = count.assign_add(1)
            seeds = tf.stack([tf.constant(seed, tf.int64), step * 16])
            with tf.GradientTape() as tape:
                logits = forward(x, seeds)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
                )
            grads = tape.gradient(loss, variables)
            t = tf.cast(step, tf.float32)
            b1, b2 = 0.9, 0.999
            for (var, m, v, lr, decay), grad in zip(slots, grads, strict=True):
                if decay:
                    var.assign_sub(var * (lr * decay))  # decoupled weight decay (AdamW)
                tf.raw_ops.ResourceApplyAdam(
                    var=var.handle,
                    m=m.handle,
                    v=v.handle,
                    beta1_power=tf.pow(b1, t),
                    beta2_power=tf.pow(b2, t),
                    lr=tf.constant(lr, tf.float32),
                    beta1=tf.constant(b1, tf.float32),
                    beta2=tf.constant(b2, tf.float32),
                    epsilon=tf.constant(1e-8, tf.float32),
                    grad=grad,
                )
            return loss

        width = int(np.prod(input_shape)) if input_shape else int(params[0][0].shape[0])
        x_spec = tf.TensorSpec([None, width], tf.float32)
        self._step = tf.function(
            train_step,
            input_signature=[x_spec, tf.TensorSpec([None], tf.int32)],
            autograph=False,
        )
        self._logits = tf.function(
            lambda x: forward(x, None), input_signature=[x_spec], autograph=False
        )
        self._features = tf.function(
            lambda x: forward(x, None, len(stage_list) - 1),
            input_signature=[x_spec],
            autograph=False,
        )

    @staticmethod
    def _to_standard(
        w: np.ndarray, b: np.ndarray, kind: str, st: Standardisation
    ) -> tuple[np.ndarray, np.ndarray]:
        if kind == "conv":
            return (w * _kernel_scale(st, w)[None, None]).astype(np.float32), b
        return w * st.scale[:, None], (b + st.mean @ w).astype(np.float32)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self._step(x, y))

    def logits(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._logits(x).numpy()
        return out

    def features(self, x: np.ndarray) -> np.ndarray:
        """The input of the last layer (fc7 after its ReLU), flattened, in inference mode."""
        out: np.ndarray = self._features(x).numpy()
        return out.reshape(len(out), -1)

    def restart(self, params: Sequence[tuple[np.ndarray, np.ndarray, bool]]) -> None:
        """Start again from `params` (as given to the constructor, in the units of the raw
        inputs, the same standardisation): weights set, Adam's moments and step count zeroed,
        so the run that follows is the one a new trainer would make, without tracing again."""
        for i, ((w, b, _), kind, st) in enumerate(zip(params, self.kinds, self.stats, strict=True)):
            w_std, b_std = self._to_standard(w, b, kind, st)
            self.variables[2 * i].assign(w_std)
            self.variables[2 * i + 1].assign(b_std)
        for _, m, v, _, _ in self._slots:
            m.assign(np.zeros(m.shape, np.float32))
            v.assign(np.zeros(v.shape, np.float32))
        self._count.assign(0)

    def set_last(self, w: np.ndarray, b: np.ndarray) -> None:
        """Start the last layer at (W, b), given in the units of its raw input."""
        w_std, b_std = self._to_standard(w, b, "dense", self.stats[-1])
        self.variables[-2].assign(w_std)
        self.variables[-1].assign(b_std)

    def weights(self) -> list[np.ndarray]:
        """W, b, W, b, ... as NumPy arrays in the units of the raw inputs."""
        out: list[np.ndarray] = []
        for i, (kind, st) in enumerate(zip(self.kinds, self.stats, strict=True)):
            w_std = self.variables[2 * i].numpy()
            b_std = self.variables[2 * i + 1].numpy()
            if kind == "conv":
                out += [(w_std / _kernel_scale(st, w_std)[None, None]).astype(np.float32), b_std]
            else:
                w = w_std / st.scale[:, None]
                out += [w, (b_std - st.mean @ w).astype(np.float32)]
        return out
