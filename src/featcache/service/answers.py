"""Answers for stored images: an in-memory LRU keyed by (image key, head digest) in front of
the store and the head.

A cached answer is fixed by the image's content and the head's bytes, so it can be kept
until the head changes (`clear` on every swap). Only the event loop's thread touches the
LRU; store reads and the head's matrix product run in a worker thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from featcache.predictor import Predictor
from featcache.service.heads import LiveHead

__all__ = ["Answer", "AnswerCache", "PathCache", "lookup"]


@dataclass(frozen=True)
class Answer:
    """The predictions for one stored image under one head, and its GET body, encoded once
    (as JSON bytes: a few hundred bytes each, against kilobytes as Python objects)."""

    key: str
    head: dict[str, Any]
    predictions: orjson.Fragment
    body: bytes

    @classmethod
    def build(cls, key: str, head: dict[str, Any], predictions: list[dict[str, Any]]) -> Answer:
        encoded = orjson.Fragment(_compact(orjson.dumps(predictions)))
        body = {"path": None, "key": key, "cached": True, "head": head, "predictions": encoded}
        return cls(key, head, encoded, _compact(orjson.dumps(body)))

    def as_dict(self, path: str | None, *, cached: bool = True) -> dict[str, Any]:
        return {
            "path": path,
            "key": self.key,
            "cached": cached,
            "head": self.head,
            "predictions": self.predictions,
        }


def _compact(data: bytes) -> bytes:
    # orjson's bytes keep its ~4 KB write buffer; a copy is sized to the JSON (for the LRU)
    return bytes(memoryview(data))


class AnswerCache:
    """Least-recently-used answers by (key, head digest); ``maxsize=0`` keeps nothing."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[str, str], Answer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, digest: str) -> Answer | None:
        answer = self._items.get((key, digest))
        if answer is not None:
            self._items.move_to_end((key, digest))
        return answer

    def put(self, answer: Answer, digest: str) -> None:
        if self.maxsize == 0:
            return
        self._items[(answer.key, digest)] = answer
        if len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


class PathCache:
    """Least-recently-used stored paths by key (None: no dataset holds the key), for one
    generation of the store's datasets: `clear` when `FeatureStore.datasets_generation`
    changes, so an answer never carries a path the store no longer holds for longer than a
    head refresh takes."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, str | None] = OrderedDict()
        self.generation: int | None = None

    def __len__(self) -> int:
        return len(self._items)

    def known(self, keys: Sequence[str]) -> tuple[dict[str, str | None], list[str]]:
        """The cached paths of `keys`, and the keys not cached."""
        found: dict[str, str | None] = {}
        missing: list[str] = []
        for key in keys:
            if key in self._items:
                self._items.move_to_end(key)
                found[key] = self._items[key]
            else:
                missing.append(key)
        return found, missing

    def put(self, paths: dict[str, str | None]) -> None:
        if self.maxsize == 0:
            return
        self._items.update(paths)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def renew(self, generation: int) -> None:
        """Forget every path if the datasets changed since the paths were read."""
        if generation != self.generation:
            self._items.clear()
            self.generation = generation


def lookup(predictor: Predictor, keys: Sequence[str], live: LiveHead) -> dict[str, Answer]:
    """Answers for the `keys` that have a stored vector for the live head (others left out)."""
    head = live.head
    about = {"name": head.name, "version": head.version}
    answers: dict[str, Answer] = {}
    for result in predictor.predict_keys(keys, head=head):
        if result.error is None and result.key is not None:
            predictions = [p.as_dict() for p in result.predictions]
            answers[result.key] = Answer.build(result.key, about, predictions)
    return answers
