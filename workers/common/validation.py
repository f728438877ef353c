"""Turn a job's raw ``input`` into a typed request, or a WorkerError that names the field at fault."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from voicepod.protocol import StrictInput

from .errors import INVALID_INPUT, WorkerError

__all__ = ["StrictInput", "parse_input"]  # StrictInput lives in the contract module, beside the request models

M = TypeVar("M", bound=BaseModel)


def parse_input(model: type[M], raw: Any) -> M:
    if not isinstance(raw, dict):
        raise WorkerError(INVALID_INPUT, f"input must be a JSON object, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        kind = first["type"]
        if kind == "extra_forbidden":
            message = f"unknown field '{field}'"
        else:
            message = f"{field}: {first['msg']}" if field else first["msg"]
        raise WorkerError(INVALID_INPUT, message, field=field) from None
