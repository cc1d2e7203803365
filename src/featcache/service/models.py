"""The request and answer bodies, as pydantic models for the OpenAPI document.

Handlers build their JSON directly (orjson) rather than through these models, which would
validate every answer again; the tests and the schemathesis run hold the two together.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

__all__ = [
    "KEY_PATTERN",
    "HeadRef",
    "HeadsAnswer",
    "Health",
    "ImageAnswer",
    "KeysAnswer",
    "KeysRequest",
    "PredictionOut",
    "UploadAnswer",
]

KEY_PATTERN = r"^[0-9a-fA-F]{64}$"


class KeysRequest(BaseModel):
    keys: list[Annotated[str, Field(pattern=KEY_PATTERN)]] = Field(min_length=1)


class PredictionOut(BaseModel):
    class_id: int
    label: str
    probability: float


class HeadRef(BaseModel):
    name: str
    version: int


class ImageAnswer(BaseModel):
    """One image: its predictions, or the reason it has none (``error``)."""

    path: str | None
    key: str | None
    cached: bool
    head: HeadRef | None = None
    predictions: list[PredictionOut] | None = None
    error: str | None = None
    weights_note: str | None = None  # set when the head's vectors come from random weights


class KeysAnswer(BaseModel):
    head: HeadRef
    results: list[ImageAnswer]
    weights_note: str | None = None


class UploadAnswer(BaseModel):
    results: list[ImageAnswer]
    weights_note: str | None = None


class ServedHead(BaseModel):
    name: str
    version: int
    digest: str
    live_since: str
    follows: str
    layer: str
    fingerprint: str
    weights_note: str | None = None


class HeadVersion(BaseModel):
    name: str
    version: int
    digest: str
    promoted: bool
    head: str | None = None
    dataset: str | None = None
    val_accuracy: float | None = None


class HeadsAnswer(BaseModel):
    served: ServedHead
    heads: list[HeadVersion]


class Health(BaseModel):
    status: str
    head: str
    version: int
    digest: str
    can_extract: bool
    tensorflow_loaded: bool
    weights_note: str | None = None
