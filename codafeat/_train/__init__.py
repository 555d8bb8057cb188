"""Training internals of codafeat's estimators (private: no stable API).

Pretraining: ``run`` (one run, prepare -> decode -> loader -> build -> epochs -> export),
``build`` (what the settings make), ``objective`` (the named loss terms), ``loop`` (the Coda
step and epoch), ``pretraining`` (the epoch loop and its callbacks), ``monitor``,
``metrics_sink``, ``schedules``, ``sampling``, ``checkpoint`` and ``resume``. Fine-tuning:
``finetune`` and ``tasks``. Both: ``dist`` (torchrun / DDP helpers).
"""
