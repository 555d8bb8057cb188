"""What the estimators share, below them in the layers (nothing here imports an estimator).

``infer`` (the streaming inference loop), ``params`` (shared parameter constraints),
``persist`` (pickling, failed fits that change nothing, safe saves), ``base`` (the base of
the fine-tuning estimators) and ``explain`` (class activation maps).
"""
