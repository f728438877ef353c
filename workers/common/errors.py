"""The one exception a worker raises for a job it cannot do; it becomes the job's error chunk."""

from __future__ import annotations

from voicepod.protocol import ErrorCode, ErrorDetail

# Short names for the codes every worker uses; all codes are defined once, in voicepod.protocol.ErrorCode.
INVALID_INPUT = ErrorCode.INVALID_INPUT
INPUT_TOO_LARGE = ErrorCode.INPUT_TOO_LARGE
INTERNAL = ErrorCode.INTERNAL
OUT_OF_MEMORY = ErrorCode.OUT_OF_MEMORY
OUTPUT_TOO_LARGE = ErrorCode.OUTPUT_TOO_LARGE


class WorkerError(Exception):
    """A job-level failure with a stable ``code`` and a message meant for the caller.

    ``field`` names the input field at fault, when there is one.
    """

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def detail(self) -> ErrorDetail:
        return ErrorDetail(code=self.code, message=self.message, field=self.field)
