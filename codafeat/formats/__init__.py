"""File formats and where weights come from: one package.

* :mod:`~codafeat.formats.weights`: the codafeat weights file (a timm checkpoint with
  codafeat's config in its metadata) and in-memory :class:`~codafeat.formats.weights.Weights`;
  it imports the rest of the format, so its names are the format's one import:
* :mod:`~codafeat.formats.config`: the config it records, with its defaults and checks;
* :mod:`~codafeat.formats.registry`: the registry of installed weights (entry-point group
  ``codafeat.weights``);
* :mod:`~codafeat.formats.errors`: :class:`~codafeat.formats.errors.WeightsError`, raised by all of them;
* :mod:`~codafeat.formats.wheel`: weights wheels built on that format;
* :mod:`~codafeat.formats.timm`: the timm / hub folder export, and
  :func:`~codafeat.formats.timm.load_any`, the one reader of every estimator's ``weights``
  (codafeat files, installed names, in-memory weights, timm and hub folders, plain timm
  checkpoints);
* :mod:`~codafeat.formats.model_card`: a config's model card, as Markdown.
"""
