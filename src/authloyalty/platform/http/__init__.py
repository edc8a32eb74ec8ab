"""HTTP plumbing shared by both services, one module per concern: :mod:`.responses` (JSON
answers, envelopes, no-store), :mod:`.errors` (every failure mapped to the envelope),
:mod:`.middleware` (body limit, metrics), :mod:`.auth` (bearer token), :mod:`.health`,
:mod:`.audit` (the audit log's query and answer), :mod:`.fast` (routes served without
FastAPI's dependency resolution) and :mod:`.app`, the application factory every service starts
from."""

from authloyalty.platform.http.app import create_app

__all__ = ["create_app"]
