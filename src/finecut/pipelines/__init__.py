"""Inference pipelines: per-method logic turning (image, prompts, previous prediction) into probabilities.

Each pipeline is a learned :class:`~finecut.engines.base.Engine` around a network (:mod:`.focalclick` for FocalClick,
SimpleClick and RITM; :mod:`.ntclick`). Which engine a checkpoint gets is the loader's choice
(:func:`finecut.registry.build_engine`, the ``ENGINES`` registry), not this package's.
"""
