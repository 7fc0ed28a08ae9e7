"""Integrations served by ``finecut serve``: a CVAT interactor and a Label Studio ML backend."""

from finecut.server.app import ServeConfig, create_server

__all__ = ["ServeConfig", "create_server"]
