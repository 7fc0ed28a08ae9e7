"""Label Studio ML backend: ``/health``, ``/setup``, ``/predict`` (interactive pre-annotation from smart keypoints).

Label Studio posts ``/predict`` with ``{"tasks": [task], "label_config": "<View>...", "project": "...",
"params": {"context": {"result": [...]}}}``. The context holds the user's smart ``keypointlabels`` (``value.x``,
``value.y`` in percent of ``original_width`` / ``original_height``; ``is_positive`` false for Alt-clicks) and
``rectanglelabels`` (``x``, ``y``, ``width``, ``height`` in percent). The answer is
``{"results": [{"result": [...], "score": s, "model_version": v}], "model_version": v}`` with one ``brushlabels``
result (``{"format": "rle", "rle": [...], "brushlabels": [label]}``, Label Studio's own RLE: see
:mod:`finecut.server.brush_rle`) when the labeling config has ``<BrushLabels>``, or ``polygonlabels`` results (one per
connected part, points in percent; Label Studio polygons have no holes) when it has ``<PolygonLabels>`` only.
"""

from __future__ import annotations

import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from typing import Annotated

from fastapi import APIRouter, Body

from finecut import __version__
from finecut.errors import FinecutError
from finecut.export import mask_to_parts
from finecut.prompts import Box, Click, ClickKind

from finecut.server.brush_rle import mask_to_brush_rle
from finecut.server.images import ImageSource
from finecut.server.interactive import InteractiveSegmenter

MAX_CONFIG_CHARS = 1_000_000


@dataclass(frozen=True)
class LabelingConfig:
    """What finecut needs from a Label Studio labeling config."""

    from_name: str = "tag"
    to_name: str = "image"
    image_key: str | None = None
    kind: str = "brushlabels"  # or "polygonlabels"
    labels: tuple[str, ...] = ()


def parse_label_config(xml: str | None) -> LabelingConfig:
    """Find the ``<BrushLabels>`` (else ``<PolygonLabels>``) tag, its image and labels in a labeling config."""
    if not xml:
        return LabelingConfig()
    if len(xml) > MAX_CONFIG_CHARS:
        raise FinecutError("labeling config is too large")
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise FinecutError("labeling config must not contain DTDs or entities")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise FinecutError(f"labeling config is not valid XML: {exc}") from exc
    tags = {el.tag.lower(): el for el in reversed(list(root.iter()))}
    target = tags.get("brushlabels")
    kind = "brushlabels"
    if target is None:
        target = tags.get("polygonlabels")
        kind = "polygonlabels"
    if target is None:
        raise FinecutError("labeling config has no <BrushLabels> or <PolygonLabels> tag for finecut to fill")
    from_name = target.get("name", "tag")
    to_name = target.get("toName", "image")
    image_key = None
    for el in root.iter():
        if el.tag.lower() == "image" and el.get("name") == to_name:
            value = el.get("value", "")
            image_key = value[1:] if value.startswith("$") else None
    labels = tuple(el.get("value", "") for el in target.iter() if el.tag.lower() == "label" and el.get("value"))
    return LabelingConfig(from_name, to_name, image_key, kind, labels)


@dataclass
class LabelStudioState:
    configs: dict[str, LabelingConfig] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def context_prompts(results: list[dict[str, Any]], width: int, height: int) -> tuple[list[Click], Box | None, str | None]:
    """Clicks (in order), box and label from Label Studio's context results."""
    clicks: list[Click] = []
    box = None
    label = None
    for item in results:
        if not isinstance(item, dict):
            raise FinecutError("each context result must be an object")
        kind = str(item.get("type", "")).lower()
        value = item.get("value") or {}
        if not isinstance(value, dict):
            raise FinecutError("context result 'value' must be an object")
        ow = float(item.get("original_width") or width)
        oh = float(item.get("original_height") or height)
        sx, sy = width / ow, height / oh  # in case Label Studio's image size differs from the fetched one
        names = value.get(kind)
        if isinstance(names, list) and names:
            label = str(names[0])
        try:
            if kind == "keypointlabels":
                x = float(value["x"]) * ow / 100.0 * sx
                y = float(value["y"]) * oh / 100.0 * sy
                positive = item.get("is_positive", True)
                kind_ = ClickKind.POSITIVE if positive in (True, 1, "true", "True") else ClickKind.NEGATIVE
                clicks.append(Click(min(max(x, 0.0), width - 1e-3), min(max(y, 0.0), height - 1e-3), kind_))
            elif kind == "rectanglelabels":
                x0 = float(value["x"]) * ow / 100.0 * sx
                y0 = float(value["y"]) * oh / 100.0 * sy
                x1 = x0 + float(value["width"]) * ow / 100.0 * sx
                y1 = y0 + float(value["height"]) * oh / 100.0 * sy
                box = Box(max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
        except (KeyError, TypeError, ValueError) as exc:
            raise FinecutError(f"context {kind} result has a bad value {value!r}: {exc}") from exc
    return clicks, box, label


def labelstudio_router(segmenter: InteractiveSegmenter, source: ImageSource, model: str) -> APIRouter:
    router = APIRouter()
    state = LabelStudioState()
    model_version = f"finecut-{__version__}-{model}"

    @router.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "finecut", "model_version": model_version}

    @router.get("/")
    def root() -> dict[str, Any]:
        return health()

    @router.get("/metrics")
    def metrics() -> dict[str, Any]:
        return {}

    @router.post("/setup")
    def setup(data: Annotated[Any, Body()]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise FinecutError("setup body must be a JSON object")
        config = parse_label_config(data.get("schema") or data.get("label_config"))
        with state.lock:
            state.configs[str(data.get("project", ""))] = config
        return {"model_version": model_version}

    @router.post("/webhook", status_code=201)
    async def webhook() -> dict[str, Any]:
        return {}

    @router.post("/predict")
    def predict(data: Annotated[Any, Body()]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise FinecutError("predict body must be a JSON object")
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise FinecutError("predict body needs a non-empty 'tasks' list")
        if data.get("label_config"):
            config = parse_label_config(data["label_config"])
        else:
            with state.lock:
                config = state.configs.get(str(data.get("project", "")), LabelingConfig())
        params = data.get("params") or {}
        context = params.get("context") or data.get("context") or {}
        results = context.get("result") or [] if isinstance(context, dict) else []
        if not results:
            return {"results": [], "model_version": model_version}
        out = []
        for task in tasks:
            out.append(_predict_task(task, results, config))
        return {"results": out, "model_version": model_version}

    def _predict_task(task: Any, results: list[dict[str, Any]], config: LabelingConfig) -> dict[str, Any]:
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise FinecutError("each task must be an object with a 'data' object")
        task_data = task["data"]
        key = config.image_key if config.image_key in task_data else next(iter(task_data), None)
        if key is None:
            raise FinecutError("task data has no image")
        image = source.load(task_data[key])
        h, w = image.rgb.shape[:2]
        clicks, box, label = context_prompts(results, w, h)
        label = label or (config.labels[0] if config.labels else "Object")
        res = segmenter.segment(model, image, clicks, box)
        mask = res.prediction.mask
        score = float(res.prediction.probs[mask].mean()) if mask.any() else 0.0
        common = {"from_name": config.from_name, "to_name": config.to_name, "original_width": w,
                  "original_height": h, "image_rotation": 0, "readonly": False}
        if config.kind == "brushlabels":
            items = [{
                "id": uuid.uuid4().hex[:10], **common, "type": "brushlabels", "score": score,
                "value": {"format": "rle", "rle": mask_to_brush_rle(mask), "brushlabels": [label]},
            }]
        else:
            items = []
            for part in mask_to_parts(mask, tolerance=0.5):
                pts = [[round(float(np.clip(x, 0, w)) * 100.0 / w, 4), round(float(np.clip(y, 0, h)) * 100.0 / h, 4)]
                       for x, y in part.exterior]
                items.append({"id": uuid.uuid4().hex[:10], **common, "type": "polygonlabels", "score": score,
                              "value": {"points": pts, "closed": True, "polygonlabels": [label]}})
        return {"result": items, "score": score, "model_version": model_version}

    return router
