"""Field types shared by the HTTP schemas of both services."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

StrictText = Annotated[str, Field(strict=True)]
Comment = Annotated[str, Field(strict=True), StringConstraints(strip_whitespace=True,
                                                               min_length=1, max_length=255)]
Amount = Annotated[int, Field(strict=True, ge=1, le=1_000_000_000)]
Token = Annotated[str, Field(strict=True), StringConstraints(strip_whitespace=True,
                                                             min_length=1, max_length=8192)]


class Body(BaseModel):
    """Base of request bodies: unknown keys are ignored, as the original did."""

    model_config = ConfigDict(extra="ignore")


class StatusOut(BaseModel):
    """``{"status": "Success"}``."""

    status: str = "Success"


class ErrorOut(BaseModel):
    """The error envelope."""

    status: str = "Error"
    error: str
    code: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 429)
}
