"""Inference pipelines: per-method logic turning (image, prompts, previous prediction) into probabilities.

Each pipeline is a learned :class:`~finecut.engines.base.Engine` around a network (:mod:`.focalclick` for FocalClick,
SimpleClick and RITM; :mod:`.ntclick`), built on :class:`.skeleton.CropPipeline`: the shared per-click steps
(starting probabilities, network clicks, the empty case, zoom-in, prompt maps, paste-back, box clamp, state) with
hooks for each method's part; zoom-in, flip TTA and Progressive Merge are composable transforms
(:mod:`.transforms`). Which engine a checkpoint gets is the loader's choice (:func:`finecut.registry.build_engine`,
the ``ENGINES`` registry), not this package's.
"""
