"""Sub-commands of the ``codafeat`` command (see :mod:`codafeat.cli`)."""
