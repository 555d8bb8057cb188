"""Training internals of :class:`codafeat.CodaPretrainer` (private: no stable API).

``schedules`` (per-step / per-epoch schedules), ``loop`` (the Coda step and epoch),
``dist`` (torchrun / DDP helpers), ``checkpoint`` (atomic checkpoints and resume).
"""
