"""The HTTP service (FastAPI under uvicorn): `create_app` builds it, `ServiceConfig` sets it
up, `HeadSpec` says which head version it follows, `run` serves it with one or more workers."""

from featcache.service.answers import (
    Answer,
    AnswerCache,
    PathCache,
    lookup,
)
from featcache.service.app import (
    create_app,
)
from featcache.service.batcher import (
    Batcher,
)
from featcache.service.config import (
    LOOPBACK_HOSTS,
    HeadSpec,
    ServiceConfig,
)
from featcache.service.docs import (
    STATIC_URL,
    build_fastapi,
    declare_bearer,
)
from featcache.service.errors import (
    EXTRACTOR_UNAVAILABLE,
    INTERNAL,
    STORE_UNAVAILABLE,
    ApiError,
    ErrorBody,
    FieldError,
    error_response,
    json_response,
    response_docs,
    status_of,
)
from featcache.service.guard import (
    OPEN_PATHS,
    BodyTooLarge,
    Guard,
)
from featcache.service.heads import (
    HeadFollower,
    LiveHead,
)
from featcache.service.metrics import (
    CONTENT_TYPE,
    UNMATCHED,
    Metrics,
)
from featcache.service.models import (
    KEY_PATTERN,
    HeadRef,
    HeadsAnswer,
    Health,
    ImageAnswer,
    KeysAnswer,
    KeysRequest,
    PredictionOut,
    UploadAnswer,
)
from featcache.service.runner import (
    app_from_env,
    config_from_json,
    config_to_json,
    run,
)
from featcache.service.uploads import (
    Upload,
    answer_body,
    check_decodes,
    check_pixels,
    triage,
)

__all__ = [
    "CONTENT_TYPE",
    "EXTRACTOR_UNAVAILABLE",
    "INTERNAL",
    "KEY_PATTERN",
    "LOOPBACK_HOSTS",
    "OPEN_PATHS",
    "STATIC_URL",
    "STORE_UNAVAILABLE",
    "UNMATCHED",
    "Answer",
    "AnswerCache",
    "ApiError",
    "Batcher",
    "BodyTooLarge",
    "ErrorBody",
    "FieldError",
    "Guard",
    "HeadFollower",
    "HeadRef",
    "HeadSpec",
    "HeadsAnswer",
    "Health",
    "ImageAnswer",
    "KeysAnswer",
    "KeysRequest",
    "LiveHead",
    "Metrics",
    "PathCache",
    "PredictionOut",
    "ServiceConfig",
    "Upload",
    "UploadAnswer",
    "answer_body",
    "app_from_env",
    "build_fastapi",
    "check_decodes",
    "check_pixels",
    "config_from_json",
    "config_to_json",
    "create_app",
    "declare_bearer",
    "error_response",
    "json_response",
    "lookup",
    "response_docs",
    "run",
    "status_of",
    "triage",
]
