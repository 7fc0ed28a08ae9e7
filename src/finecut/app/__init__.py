"""The web annotation app (``finecut app``): a local FastAPI server and a plain-JavaScript page."""

from finecut.app.service import AnnotationService, AppConfig
from finecut.app.server import create_app

__all__ = ["AnnotationService", "AppConfig", "create_app"]
