"""The FastAPI application behind ``finecut app``: a JSON API over :class:`AnnotationService` plus the static page."""

from __future__ import annotations

import math

import cv2
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, field_validator

from finecut import __version__
from finecut.errors import FinecutError
from finecut.export import FORMATS
from finecut.io import encode_png, read_image

from finecut.app.folder import BROWSER_SUFFIXES, ImageNotFound, NotAnImage, TooLarge
from finecut.app.service import AnnotationService, AppConfig

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Largest JSON request body accepted (uploads have their own limit).
MAX_JSON_BYTES = 8 * 1024 * 1024


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


class ModelChoice(BaseModel):
    model: str | None = Field(default=None, max_length=500)


class ClickIn(ModelChoice):
    x: float
    y: float
    kind: Literal["positive", "negative", "tolerant"] = "positive"

    _check = field_validator("x", "y")(_finite)


class BoxIn(ModelChoice):
    box: Annotated[list[float], Field(min_length=4, max_length=4)]

    @field_validator("box")
    @classmethod
    def _box(cls, v: list[float]) -> list[float]:
        return [_finite(x) for x in v]


class ScribbleIn(ModelChoice):
    points: Annotated[list[Annotated[list[float], Field(min_length=2, max_length=2)]], Field(min_length=1)]
    positive: bool = True
    width: float = Field(default=5.0, gt=0, le=500)

    @field_validator("points")
    @classmethod
    def _points(cls, v: list[list[float]]) -> list[list[float]]:
        return [[_finite(p[0]), _finite(p[1])] for p in v]


class ThresholdIn(BaseModel):
    threshold: float = Field(ge=0.0, le=1.0)


class FinishIn(BaseModel):
    label: str | None = Field(default=None, max_length=200)


class LabelIn(BaseModel):
    label: str = Field(min_length=1, max_length=200)


class ExportIn(BaseModel):
    formats: list[Literal["png", "coco_rle", "coco_polygons"]] = Field(default_factory=lambda: list(FORMATS))
    images: list[str] | None = None


def _status(exc: FinecutError) -> int:
    if isinstance(exc, ImageNotFound):
        return 404
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, NotAnImage):
        return 415
    return 422


def create_app(config: AppConfig) -> FastAPI:
    """Build the app for one image folder (see :class:`AppConfig`)."""
    service = AnnotationService(config)
    app = FastAPI(title="finecut annotation app", version=__version__, docs_url="/api/docs", redoc_url=None)
    app.state.service = service

    @app.exception_handler(FinecutError)
    async def _finecut_error(request: Request, exc: FinecutError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=_status(exc))

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        limit = config.limits.max_file_bytes if request.url.path.startswith("/api/upload/") else MAX_JSON_BYTES
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                return JSONResponse({"detail": "invalid Content-Length header"}, status_code=400)
            if too_big:
                return JSONResponse(
                    {"detail": f"request body of {int(length) / 1e6:.1f} MB is over the limit of {limit / 1e6:.1f} MB"},
                    status_code=413,
                )
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/config")
    def get_config() -> dict[str, Any]:
        return {
            "version": __version__,
            "image_dir": str(service.folder.root),
            "out_dir": str(service.store.out_dir),
            "default_model": service.pool.default,
            "models": service.pool.describe(),
            "threshold": config.threshold,
            "formats": list(FORMATS),
            "limits": {"max_file_bytes": config.limits.max_file_bytes, "max_pixels": config.limits.max_pixels},
        }

    @app.get("/api/images")
    def list_images() -> dict[str, Any]:
        return {"images": service.list_images()}

    @app.get("/api/images/{name}/file")
    def image_file(name: str) -> Response:
        path = service.image_path(name)
        if path.suffix.lower() in BROWSER_SUFFIXES:
            return FileResponse(path)
        image = read_image(path)
        service.folder.check_pixels(name, image.shape[0], image.shape[1])
        return Response(encode_png(cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), media_type="image/png")

    @app.post("/api/images/{name}/open")
    def open_image(name: str, body: ModelChoice | None = None) -> dict[str, Any]:
        return service.open(name, body.model if body else None)

    @app.post("/api/images/{name}/click")
    def click(name: str, body: ClickIn) -> dict[str, Any]:
        return service.click(name, body.x, body.y, body.kind, body.model)

    @app.post("/api/images/{name}/box")
    def box(name: str, body: BoxIn) -> dict[str, Any]:
        return service.box(name, body.box, body.model)

    @app.post("/api/images/{name}/scribble")
    def scribble(name: str, body: ScribbleIn) -> dict[str, Any]:
        return service.scribble(name, body.points, body.positive, body.width, body.model)

    @app.post("/api/images/{name}/undo")
    def undo(name: str) -> dict[str, Any]:
        return service.undo(name)

    @app.post("/api/images/{name}/redo")
    def redo(name: str) -> dict[str, Any]:
        return service.redo(name)

    @app.post("/api/images/{name}/reset")
    def reset(name: str) -> dict[str, Any]:
        return service.reset(name)

    @app.post("/api/images/{name}/threshold")
    def threshold(name: str, body: ThresholdIn) -> dict[str, Any]:
        return service.set_threshold(name, body.threshold)

    @app.post("/api/images/{name}/model")
    def model(name: str, body: ModelChoice) -> dict[str, Any]:
        if not body.model:
            raise FinecutError("give the model name to switch to")
        return service.set_model(name, body.model)

    @app.post("/api/images/{name}/finish")
    def finish(name: str, body: FinishIn | None = None) -> dict[str, Any]:
        return service.finish(name, body.label if body else None)

    @app.delete("/api/images/{name}/objects/{object_id}")
    def delete_object(name: str, object_id: int) -> dict[str, Any]:
        return service.delete_object(name, object_id)

    @app.patch("/api/images/{name}/objects/{object_id}")
    def relabel(name: str, object_id: int, body: LabelIn) -> dict[str, Any]:
        return service.relabel_object(name, object_id, body.label)

    @app.post("/api/export")
    def export(body: ExportIn | None = None) -> dict[str, Any]:
        body = body or ExportIn()
        result = service.export(body.formats, body.images)
        result["urls"] = [f"/api/export/{f}" for f in result["files"]]
        return result

    @app.get("/api/export/{relative:path}")
    def exported(relative: str) -> FileResponse:
        return FileResponse(service.export_file(relative))

    @app.put("/api/upload/{name}")
    async def upload(name: str, request: Request) -> dict[str, Any]:
        limit = config.limits.max_file_bytes
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise TooLarge(f"{name}: upload is over the limit of {limit / 1e6:.1f} MB")
            chunks.append(chunk)
        return service.upload(name, b"".join(chunks))

    return app

