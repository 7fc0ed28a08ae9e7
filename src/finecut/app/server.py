"""The FastAPI application behind ``finecut app``: a JSON API over :class:`AnnotationService` plus the static page."""

from __future__ import annotations

import cv2
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, StrictBool, StrictInt

from finecut import __version__
from finecut.errors import FinecutError
from finecut.export import FORMATS
from finecut.io import encode_png, image_header
from finecut.server.guards import BodyLimitMiddleware, FiniteNumber, install_validation_handler

from finecut.app.folder import BROWSER_SUFFIXES, ImageNotFound, NotAnImage, TooLarge
from finecut.app.importing import import_coco_bytes
from finecut.app.service import AnnotationService, AppConfig, NoAlpha, StaleVersion

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Largest JSON request body accepted (uploads have their own limit); both counted while the body streams in.
MAX_JSON_BYTES = 8 * 1024 * 1024

# Request bodies: numbers are finite JSON numbers (FiniteNumber: no NaN/Infinity/1e400, no true for 1, no "12"),
# booleans are JSON booleans; anything else is a 422 naming the field.


class ModelChoice(BaseModel):
    model: str | None = Field(default=None, max_length=500)


class ClickIn(ModelChoice):
    x: FiniteNumber
    y: FiniteNumber
    kind: Literal["positive", "negative", "tolerant"] = "positive"


class BoxIn(ModelChoice):
    box: Annotated[list[FiniteNumber], Field(min_length=4, max_length=4)]


class ScribbleIn(ModelChoice):
    points: Annotated[list[Annotated[list[FiniteNumber], Field(min_length=2, max_length=2)]], Field(min_length=1)]
    positive: StrictBool = True
    width: Annotated[FiniteNumber, Field(gt=0, le=500)] = 5.0


class PaintIn(BaseModel):
    points: Annotated[list[Annotated[list[FiniteNumber], Field(min_length=2, max_length=2)]], Field(min_length=1)]
    width: Annotated[FiniteNumber, Field(gt=0, le=500)] = 10.0
    erase: StrictBool = False


class MoveIn(BaseModel):
    index: Annotated[StrictInt, Field(ge=-100_000, le=100_000)]


class StatusIn(BaseModel):
    status: Literal["done", "skipped"] | None


class ThresholdIn(BaseModel):
    threshold: Annotated[FiniteNumber, Field(ge=0.0, le=1.0)]


class FinishIn(BaseModel):
    label: str | None = Field(default=None, max_length=200)


class LabelIn(BaseModel):
    label: str = Field(min_length=1, max_length=200)


class ExportIn(BaseModel):
    formats: list[Literal["png", "coco_rle", "coco_polygons"]] = Field(default_factory=lambda: list(FORMATS))
    images: list[str] | None = None  # refused: an export always holds every annotated image


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, read as it streams in; :class:`TooLarge` as soon as it passes ``limit`` bytes."""
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise TooLarge(f"{what} is over the limit of {limit / 1e6:.1f} MB")
        chunks.append(chunk)
    return b"".join(chunks)


def _if_match(if_match: Annotated[str | None, Header()] = None) -> int | None:
    """The annotation version a write is based on (``If-Match: <version>``, quotes allowed); None: no check."""
    if if_match is None:
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 18:
        raise HTTPException(400, f"If-Match must be the annotation version (a number), got {if_match[:40]!r}")
    return int(text)


#: The version a write is based on; a stale one is answered 409 (see :class:`StaleVersion`).
Version = Annotated[int | None, Depends(_if_match)]


def _status(exc: FinecutError) -> int:
    if isinstance(exc, StaleVersion):
        return 409
    if isinstance(exc, (ImageNotFound, NoAlpha)):
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
        body: dict[str, Any] = {"detail": str(exc)}
        if isinstance(exc, StaleVersion):
            body["version"] = exc.current
        return JSONResponse(body, status_code=_status(exc))

    install_validation_handler(app)  # 422 naming the field, in a body that always encodes

    def body_limit(path: str) -> int:
        return config.limits.max_file_bytes if path.startswith(("/api/upload/", "/api/import")) else MAX_JSON_BYTES

    app.add_middleware(BodyLimitMiddleware, limit=body_limit)  # counted while streaming, Content-Length or not

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
            "labels": service.labels.to_json() if service.labels is not None else None,
            "default_label": service.default_label,
        }

    @app.get("/api/images")
    def list_images() -> dict[str, Any]:
        images = service.list_images()
        return {"images": images, "progress": service.progress(images)}

    @app.get("/api/images/{name}/file")
    def image_file(name: str) -> Response:
        path = service.image_path(name)
        if path.suffix.lower() in BROWSER_SUFFIXES:  # the browser decodes it: check the pixel count on the header
            image_header(path, name, config.limits.max_pixels)
            return FileResponse(path)
        image = service.folder.read(name)  # displayed orientation, as the browser would show it
        return Response(encode_png(cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), media_type="image/png")

    @app.get("/api/images/{name}/alpha.png")
    def alpha_png(name: str) -> Response:
        """The current step's alpha matte (8-bit grayscale PNG, image size); 404 when it has none."""
        png, version = service.alpha_png(name)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "no-store", "X-Finecut-Version": str(version)})

    @app.post("/api/images/{name}/open")
    def open_image(name: str, body: ModelChoice | None = None) -> dict[str, Any]:
        return service.open(name, body.model if body else None)

    @app.post("/api/images/{name}/click")
    def click(name: str, body: ClickIn, version: Version) -> dict[str, Any]:
        return service.click(name, body.x, body.y, body.kind, body.model, expected=version)

    @app.post("/api/images/{name}/box")
    def box(name: str, body: BoxIn, version: Version) -> dict[str, Any]:
        return service.box(name, body.box, body.model, expected=version)

    @app.post("/api/images/{name}/scribble")
    def scribble(name: str, body: ScribbleIn, version: Version) -> dict[str, Any]:
        return service.scribble(name, body.points, body.positive, body.width, body.model, expected=version)

    @app.post("/api/images/{name}/paint")
    def paint(name: str, body: PaintIn, version: Version) -> dict[str, Any]:
        return service.paint(name, body.points, body.width, body.erase, expected=version)

    @app.post("/api/images/{name}/status")
    def set_status(name: str, body: StatusIn, version: Version) -> dict[str, Any]:
        return service.set_status(name, body.status, expected=version)

    @app.post("/api/images/{name}/undo")
    def undo(name: str, version: Version) -> dict[str, Any]:
        return service.undo(name, expected=version)

    @app.post("/api/images/{name}/redo")
    def redo(name: str, version: Version) -> dict[str, Any]:
        return service.redo(name, expected=version)

    @app.post("/api/images/{name}/reset")
    def reset(name: str, version: Version) -> dict[str, Any]:
        return service.reset(name, expected=version)

    @app.post("/api/images/{name}/threshold")
    def threshold(name: str, body: ThresholdIn, version: Version) -> dict[str, Any]:
        return service.set_threshold(name, body.threshold, expected=version)

    @app.post("/api/images/{name}/model")
    def model(name: str, body: ModelChoice, version: Version) -> dict[str, Any]:
        if not body.model:
            raise FinecutError("give the model name to switch to")
        return service.set_model(name, body.model, expected=version)

    @app.post("/api/images/{name}/finish")
    def finish(name: str, version: Version, body: FinishIn | None = None) -> dict[str, Any]:
        return service.finish(name, body.label if body else None, expected=version)

    @app.delete("/api/images/{name}/objects/{object_id}")
    def delete_object(name: str, object_id: int, version: Version) -> dict[str, Any]:
        return service.delete_object(name, object_id, expected=version)

    @app.patch("/api/images/{name}/objects/{object_id}")
    def relabel(name: str, object_id: int, body: LabelIn, version: Version) -> dict[str, Any]:
        return service.relabel_object(name, object_id, body.label, expected=version)

    @app.post("/api/images/{name}/objects/{object_id}/reopen")
    def reopen(name: str, object_id: int, version: Version) -> dict[str, Any]:
        return service.reopen_object(name, object_id, expected=version)

    @app.post("/api/images/{name}/objects/{object_id}/move")
    def move(name: str, object_id: int, body: MoveIn, version: Version) -> dict[str, Any]:
        return service.move_object(name, object_id, body.index, expected=version)

    @app.post("/api/import")
    async def import_coco(request: Request) -> dict[str, Any]:
        """Import a COCO instances file (the request body) into the folder's images."""
        body = await read_body(request, config.limits.max_file_bytes, "import")
        source = request.headers.get("x-filename", "COCO file")[:200] or "COCO file"
        report = await run_in_threadpool(import_coco_bytes, service, body, source)
        return report.to_json()

    @app.post("/api/export")
    def export(body: ExportIn | None = None) -> dict[str, Any]:
        body = body or ExportIn()
        if body.images is not None:
            raise FinecutError("an export always holds every annotated image (the export folder is replaced as a "
                               "whole); leave out 'images'")
        result = service.export(body.formats)
        result["urls"] = [f"/api/export/{f}" for f in result["files"]]
        return result

    @app.get("/api/export/{relative:path}")
    def exported(relative: str) -> FileResponse:
        return FileResponse(service.export_file(relative))

    @app.put("/api/upload/{name}")
    async def upload(name: str, request: Request) -> dict[str, Any]:
        return service.upload(name, await read_body(request, config.limits.max_file_bytes, f"{name}: upload"))

    return app

