"""Which cut a fine-tune should start from, and the commands that get there.

The seed's case 1 (large set, similar task) keeps most of the network: fine-tune fc6, fc7
and a new fc8 above the cached pool5. Case 2 (large set, different task) retrains more of
it: above conv3 (conv4 to fc8), the first layers kept, as they stay general across tasks
while the top ones grow specific to ImageNet (Yosinski et al. 2014). From there, one cut
deeper for each sign that the frozen features do not fit:

- an earlier layer (pool5, fc6) beat fc7 with a linear head: ImageNet's top layers do not
  fit this task;
- the learning curve has flattened: more rows no longer help a head on the frozen features,
  so the features, not the data, limit it.

conv5 is never recommended: a fine-tune from it trains what one from pool5 does (pool5 has no
weights) and reads 4.7 times the bytes.
"""

from __future__ import annotations

from typing import Final

from featcache.architecture import CUTS, stages_above
from featcache.store.commands import extract_command, store_command

__all__ = ["LADDER", "cut_commands", "recommend_cut"]

#: The recommended cuts, deep to shallow, and the layers a fine-tune from each trains
#: (read from featcache.architecture, their one description).
LADDER: Final = {
    cut: ", ".join(stage.name for stage in stages_above(cut) if stage.has_weights)
    for cut in ("pool5", "conv4", "conv3", "pool2")
}
_START: Final = {1: 0, 2: 2}  # case → step of the ladder before any sign


def recommend_cut(similar: bool, *, earlier_layer: bool, flattened: bool) -> str:
    """The cut to fine-tune a large set from: case 1 if the task is `similar`, else case 2."""
    names = list(LADDER)
    step = _START[1 if similar else 2] + int(earlier_layer) + int(flattened)
    return names[min(step, len(names) - 1)]


def cut_commands(
    cut: str, *, store: str, dataset: str, source: str | None, cached: bool
) -> list[str]:
    """The commands that fine-tune `dataset` from `cut`: extract the cut first unless it is
    `cached` (into the same rows: ``--append`` keeps the dataset's other rows); a cut of
    another network than AlexNet names its backbone."""
    network = CUTS[cut].network
    other = None if network == "alexnet" else network
    flags = ["--backbone", network] if other else []
    train = store_command(
        "train", store, "--dataset", dataset, *flags, "--kind finetune --from", cut,
        "--weights WEIGHTS",
    )  # fmt: skip
    if cached:
        return [train]
    return [extract_command(store, dataset, cut, source=source, network=other), train]
