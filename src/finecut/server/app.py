"""``finecut serve``: one HTTP server with the CVAT interactor and the Label Studio ML backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from finecut import __version__
from finecut.errors import FinecutError

from finecut.server.cache import EngineFactory, ModelPool, PredictorCache
from finecut.server.cvat import cvat_router
from finecut.server.images import ImageSource
from finecut.server.interactive import InteractiveSegmenter
from finecut.server.labelstudio import labelstudio_router


@dataclass
class ServeConfig:
    """Settings of ``finecut serve``."""

    model: str = "default"
    models: Sequence[str] | None = None  # exposed to CVAT; default: every available model
    model_factory: EngineFactory | None = None
    threshold: float = 0.5
    cache_size: int = 4
    max_pixels: int = 40_000_000
    max_body_bytes: int = 96 * 1024 * 1024
    label_studio_url: str | None = None
    label_studio_token: str | None = None
    local_files_root: Path | None = None
    allow_url_fetch: bool = False
    public_port: int | None = None  # reported to CVAT as the functions' httpPort (its "direct" invoke method)
    extra: dict[str, Any] = field(default_factory=dict)


def create_server(config: ServeConfig) -> FastAPI:
    pool = ModelPool(config.model_factory, config.models, config.model)
    cache = PredictorCache(pool, config.cache_size)
    segmenter = InteractiveSegmenter(cache, config.threshold)
    source = ImageSource(
        label_studio_url=config.label_studio_url,
        token=config.label_studio_token,
        local_files_root=config.local_files_root,
        allow_urls=config.allow_url_fetch,
        max_bytes=config.max_body_bytes,
        max_pixels=config.max_pixels,
    )
    app = FastAPI(title="finecut integration server", version=__version__, docs_url="/docs", redoc_url=None)
    app.state.pool = pool
    app.state.cache = cache
    app.state.segmenter = segmenter

    @app.exception_handler(FinecutError)
    async def _finecut_error(request: Request, exc: FinecutError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            return JSONResponse({"detail": f"request body over the limit of {config.max_body_bytes / 1e6:.0f} MB"},
                                status_code=413)
        return await call_next(request)

    app.include_router(labelstudio_router(segmenter, source, config.model))
    app.include_router(cvat_router(segmenter, pool.names, config.model, config.max_pixels, config.public_port))
    return app
