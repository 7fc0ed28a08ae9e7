"""``finecut serve``: one HTTP server with the CVAT interactor and the Label Studio ML backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware

from finecut import __version__
from finecut.io import pixel_limit

from finecut.server.cache import EngineFactory, ModelPool, PredictorCache
from finecut.server.cvat import cvat_router
from finecut.server.guards import BodyLimitMiddleware, install_error_handlers
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
    max_pixels: int = field(default_factory=pixel_limit)  # checked on each image's header before decoding
    max_body_bytes: int = 96 * 1024 * 1024  # every request body, counted while it streams in
    label_studio_url: str | None = None
    label_studio_token: str | None = None
    local_files_root: Path | None = None
    allow_url_fetch: bool = False  # fetch task images from any http(s) URL
    allow_url_hosts: Sequence[str] = ()  # ... or only from these hosts ("host" or "host:port")
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
        allowed_hosts=tuple(config.allow_url_hosts),
        max_bytes=config.max_body_bytes,
        max_pixels=config.max_pixels,
    )
    app = FastAPI(title="finecut integration server", version=__version__, docs_url="/docs", redoc_url=None)
    app.state.pool = pool
    app.state.cache = cache
    app.state.segmenter = segmenter

    install_error_handlers(app)
    app.add_middleware(GZipMiddleware, minimum_size=4096)  # CVAT's masks compress ~100x
    app.add_middleware(BodyLimitMiddleware, limit=config.max_body_bytes)

    app.include_router(labelstudio_router(segmenter, source, config.model))
    app.include_router(cvat_router(segmenter, pool.names, config.model, config.max_pixels, config.public_port))
    return app
