"""Image input (``io``), streaming datasets (``loader``) and multi-crop views (``views``)."""
