"""Neural network models, built from a config by name through one registry (:mod:`finecut.models.registry`)."""
