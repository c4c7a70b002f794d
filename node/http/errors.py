"""JSON error responses: one body shape for every HTTP error the node answers."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

__all__ = ["error_response"]


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    """``{"error": message, "status": status, ...}`` with that status (401 adds the Bearer challenge)."""
    headers = {"WWW-Authenticate": 'Bearer realm="dxr-node"'} if status == 401 else None
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status, headers=headers)
