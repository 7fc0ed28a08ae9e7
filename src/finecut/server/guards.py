"""HTTP guards shared by ``finecut app`` and ``finecut serve``.

* :class:`BodyLimitMiddleware` — request bodies are limited while they stream in, for every route, with or without a
  ``Content-Length`` (chunked bodies are counted as they arrive); the answer is a JSON *413* naming the limit.
  (FastAPI's own ``max_body_size`` answers plain text when ``Content-Length`` is over the limit, and names no limit.)
* :data:`FiniteNumber` — a JSON number that is finite: no ``NaN`` / ``Infinity`` / ``1e400``, no ``true`` for 1, no
  ``"12"`` for 12 (pydantic strict float, infinities and NaN refused).
* :func:`install_error_handlers` — validation errors answer *422* with a message naming each field, built so that the
  error body itself always encodes (the offending value is never echoed as a float); :class:`FinecutError` answers with
  its message and the status the app chooses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AllowInfNan, Strict
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from finecut.errors import FinecutError, TooLarge

#: A finite JSON number (int or float; not a bool, not a string, not NaN/Infinity).
FiniteNumber = Annotated[float, Strict(), AllowInfNan(False)]


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the bytes received pass the limit (an HTTPException, so FastAPI's body parsing
    lets it through and the app's exception middleware answers it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body is over the limit of {_megabytes(limit)}")


class BodyLimitMiddleware:
    """Pure ASGI middleware: refuse request bodies over ``limit`` bytes (an int, or a function of the request path).

    A ``Content-Length`` over the limit is refused before anything is read; otherwise the bytes are counted as the app
    receives them, and the request fails with *413* as soon as the count passes the limit, so memory stays bounded
    whatever the client sends."""

    def __init__(self, app: ASGIApp, limit: int | Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit if callable(limit) else (lambda path: int(limit))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                await JSONResponse({"detail": "invalid Content-Length header"}, status_code=400)(scope, receive, send)
                return
            if int(length) > limit:
                await JSONResponse({"detail": f"request body of {_megabytes(int(length))} is over the limit of "
                                              f"{_megabytes(limit)}"}, status_code=413)(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:  # raised where no exception handler saw it
            if started:
                raise
            await JSONResponse({"detail": exc.detail}, status_code=413)(scope, receive, send)


def _field(loc: Sequence[Any]) -> str:
    """``("body", "points", 0, 1)`` -> ``"points[0][1]"``."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _shown(value: Any) -> str | None:
    """A short, always-encodable rendering of an offending scalar input (None for containers)."""
    if isinstance(value, bool) or value is None:
        return "null" if value is None else str(value).lower()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("NaN" if math.isnan(value) else "Infinity" if value > 0
                                                           else "-Infinity")
    if isinstance(value, int):
        text = str(value) if value.bit_length() < 64 else "a very large integer"
        return text
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return None


def describe_validation_error(errors: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """A one-line message naming every field, and JSON-safe error entries (no raw input values)."""
    entries, parts = [], []
    for err in errors[:20]:
        field = _field(err.get("loc", ()))
        msg = str(err.get("msg", "invalid value"))
        if err.get("type") == "json_invalid" and isinstance(err.get("ctx"), dict):
            msg = f"invalid JSON ({err['ctx'].get('error')})"
        shown = _shown(err.get("input")) if err.get("type") not in ("missing", "json_invalid") else None
        parts.append(f"{field}: {msg}" + (f" (got {shown})" if shown is not None else ""))
        entries.append({"loc": [p if isinstance(p, (int, str)) else str(p) for p in err.get("loc", ())],
                        "msg": msg, "type": str(err.get("type", ""))})
    if len(errors) > 20:
        parts.append(f"... and {len(errors) - 20} more")
    return "; ".join(parts), entries


def install_validation_handler(app: FastAPI) -> None:
    """Invalid requests answer 422 with a message naming each field, in a body that always encodes."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = describe_validation_error(exc.errors())
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


def install_error_handlers(app: FastAPI, status_of: Callable[[FinecutError], int] | None = None) -> None:
    """:func:`install_validation_handler`, and :class:`FinecutError` -> its message with ``status_of(exc)`` (default:
    413 for :class:`TooLarge`, else 422)."""

    def default_status(exc: FinecutError) -> int:
        return 413 if isinstance(exc, TooLarge) else 422

    status = status_of or default_status
    install_validation_handler(app)

    @app.exception_handler(FinecutError)
    async def _finecut_error(request: Request, exc: FinecutError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status(exc))
