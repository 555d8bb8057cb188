"""One pretraining run, from the images to the exported teacher: what ``CodaPretrainer.fit`` runs.

:func:`run_pretraining` checks the output folders, resolves the device, joins torchrun's
process group and runs a :class:`PretrainingRun`, whose steps are

    prepare -> decode -> loader -> build -> epochs -> export

The run holds what the steps share as fields (the settings, the device and its policy, the
distributed info, the seed, the decoded cache, the labels, the checkpoint it resumes) instead
of threading them through the estimator's methods. It returns a :class:`PretrainingResult`,
the fitted state that the estimator copies onto itself: a run that fails leaves the estimator
as it was.

``settings`` is a read-only snapshot of the estimator's parameters (:func:`settings_of`); what
they make (views, terms, networks, schedules, trainer) is :mod:`codafeat._train.build`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .._defaults import MEAN, PRETRAIN, PRETRAIN_RUN_ONLY, STD
from .._device import DevicePolicy, denormals_flushed, resolve_device
from .._estimator.params import draw_seed
from .._fileio import check_free_space, check_writable
from ..data.cache.decoded import DecodedCache, cache_size_for
from ..data.io import report_skipped
from ..data.loader import worker_context
from ..data.organs import collect_organ_images
from ..data.pretrain_dataset import MultiCropDataset, collate_views
from ..data.summary import training_data_summary
from ..formats.weights import Weights, make_config
from ..nn.backbone import embed_dim
from ..nn.coda_model import CodaNetwork
from . import dist as D
from . import resume
from .build import build_trainer, views_of
from .checkpoint import remove_stale
from .loop import CodaTrainer
from .monitor import TrainingMonitor, monitor_split
from .pretraining import CheckpointCallback, MetricsSinkCallback, MonitorCallback, ReportCallback, fit_pretraining
from .sampling import GlobalBatchSampler

logger = logging.getLogger(__name__)

__all__ = ["RESUME_KEYS", "PretrainingResult", "PretrainingRun", "run_pretraining", "settings_of"]

#: Parameters that must agree between a checkpoint and the run that resumes it: all but
#: those that only say where and how the run executes.
RESUME_KEYS = tuple(k for k in PRETRAIN if k not in PRETRAIN_RUN_ONLY)


def settings_of(estimator: Any) -> SimpleNamespace:
    """A snapshot of an estimator's parameters with attribute access (the run reads, never writes it)."""
    return SimpleNamespace(**estimator.get_params(deep=False))


def resume_signature(settings: Any) -> dict[str, Any]:
    """The settings a checkpoint records and a resumed run must repeat."""
    return {k: resume.jsonable(getattr(settings, k)) for k in RESUME_KEYS}


def check_output_dirs(settings: Any) -> None:
    """Fail before training when checkpoints or metrics could not be written later."""
    if settings.checkpoint_dir is not None:
        check_writable(settings.checkpoint_dir, what="checkpoint_dir", is_dir=True)
        for p in remove_stale(settings.checkpoint_dir):
            logger.info("removed %s, left by an interrupted checkpoint write", p)
    if settings.log_dir is not None:
        check_writable(settings.log_dir, what="log_dir", is_dir=True)


def check_organs(organ_names: Any, *, stage: str) -> None:
    """Coda needs two organs with two images each: name the organs that fall short at ``stage``."""
    counts = Counter(str(o) for o in np.asarray(organ_names).tolist())
    if len(counts) < 2:
        raise ValueError(
            f"Coda needs images of at least 2 organs (the inter-organ loss contrasts organs); "
            f"the {stage} have {len(counts)}: {sorted(counts)}"
        )
    single = sorted(o for o, c in counts.items() if c < 2)
    if single:
        raise ValueError(f"every organ needs at least 2 images; in the {stage} these have one: {single}")


@dataclass
class PretrainingResult:
    """The fitted state of a run; each field ``f`` becomes the estimator's ``f_`` (:meth:`attributes`)."""

    seed: int
    organs: np.ndarray
    n_images: int
    n_train_images: int
    skipped: list[str]
    monitor_indices: np.ndarray
    data_summary: dict[str, Any]
    intensity: dict[str, Any]
    init_weights_source: str
    history: list[dict[str, Any]]
    student: CodaNetwork
    teacher: CodaNetwork
    #: The teacher's backbone as a codafeat weights file, with its model card's facts.
    weights: Weights

    def attributes(self) -> dict[str, Any]:
        """``{"seed_": ..., "organs_": ...}``: the fitted attributes, the weights aside (the encoder holds them)."""
        return {f"{f.name}_": getattr(self, f.name) for f in fields(self) if f.name != "weights"}


def run_pretraining(settings: Any, X: Any, y: Any = None) -> tuple[PretrainingResult, torch.device]:
    """Run one pretraining on ``X`` (and ``y``): the result and the device the run trained on.

    Under ``torchrun`` every rank runs this; the device is the rank's GPU (``cuda:LOCAL_RANK``).
    """
    check_output_dirs(settings)
    device = resolve_device(settings.device)
    info = D.setup(device.type)
    try:
        with denormals_flushed(device):
            return PretrainingRun(settings, device=device, info=info).run(X, y), device
    finally:
        D.teardown(info)


class PretrainingRun:
    """The steps of one pretraining run and what they share.

    Parameters
    ----------
    settings : object
        ``CodaPretrainer``'s parameters as attributes (:func:`settings_of`).
    device : torch.device
        This process's device.
    info : DistInfo
        The process group (one process: world size 1).

    Attributes
    ----------
    policy : DevicePolicy
        Placement and precision on ``device``.
    seed : int
        The run's seed (rank 0's draw on every rank; a resumed run's stored seed).
    ckpt : tuple or None
        The checkpoint being resumed, ``(path, tensors, meta)``.
    cache : DecodedCache
        The decoded images.
    labels, organs : ndarray
        Each kept image's organ index, and the organ names in label order.
    skipped : list of str
        Inputs that were not used (unreadable, or without an organ).
    """

    def __init__(self, settings: Any, *, device: torch.device, info: D.DistInfo) -> None:
        self.settings = settings
        self.device = device
        self.info = info
        self.policy = DevicePolicy(device)
        self.seed = 0
        self.ckpt: resume.Checkpoint | None = None
        self.cache: DecodedCache | None = None
        self.labels = np.zeros(0, dtype=np.int64)
        self.organs = np.zeros(0, dtype=str)
        self.skipped: list[str] = []
        self.data_key: str | None = None
        self.data_summary: dict[str, Any] = {}

    def run(self, X: Any, y: Any) -> PretrainingResult:
        """prepare -> decode -> loader -> build -> epochs -> export."""
        s = self.settings
        self.prepare(X, y)
        train_idx, monitor_idx, why_off = monitor_split(self.labels, s.monitor_fraction, self.seed)
        monitor = self.monitor(monitor_idx, why_off)
        dataset, sampler, loader = self.loader(train_idx)
        self.data_summary["n_train_images"] = int(len(dataset))  # the rest were held out for the monitor
        trainer, source = self.build(steps=len(sampler))
        history = self.epochs(trainer, dataset, sampler, loader, monitor)
        # the background fill, if any: every shard on disk and the intensity kinds complete. Training never
        # depended on it (missing images are decoded on access), so a dead helper costs a warning, not the model.
        self.cache.finish(on_failure="warn")
        return self.export(
            trainer, history, n_train_images=len(dataset), monitor_indices=monitor_idx, init_weights_source=source
        )

    # ------------------------------------------------------------------ data
    def prepare(self, X: Any, y: Any) -> None:
        """Find the images and their organs, read the checkpoint to resume, fix the seed, decode."""
        s = self.settings
        items, organ_names, unlabelled, organ_mapping = collect_organ_images(
            X, y, organ_from=s.organ_from, organ_map=s.organ_map, on_error=s.on_error, cache_dir=s.cache_dir
        )
        check_organs(organ_names, stage="input")
        if s.resume:
            self.ckpt = resume.read_for_resume(s.checkpoint_dir, epochs=s.epochs, params=resume_signature(s))
        self.seed = self._draw_seed()
        self.decode(items, organ_names, skipped_before=unlabelled)
        # the identity of the image set, checked on resume (hashing in-memory images costs: only with checkpoints)
        if s.checkpoint_dir is not None:
            legacy = self.ckpt is not None and not str(self.ckpt[2].get("data_key") or "v2:").startswith("v2:")
            self.data_key = resume.data_key(items, self.cache.kept, self.labels, with_identity=not legacy)
        kept = [items[int(i)] for i in self.cache.kept]
        self.data_summary = training_data_summary(
            kept if not isinstance(items, np.ndarray) else [], self.organs[self.labels], cache_dir=s.cache_dir
        )
        self.data_summary["n_images"] = int(len(self.labels))
        if organ_mapping:
            self.data_summary["dicom_organ_map"] = organ_mapping

    def _draw_seed(self) -> int:
        if self.ckpt is not None and self.settings.random_state is None and "seed" in self.ckpt[2]:
            return int(self.ckpt[2]["seed"])
        return int(D.broadcast_object(draw_seed(self.settings.random_state), self.info))

    def decode(self, items: Any, organ_names: Any, *, skipped_before: list[str]) -> None:
        """The decoded-image cache (rank 0 builds a shared one first), the organs and the labels."""
        s, info = self.settings, self.info
        t0 = time.perf_counter()
        shared = info.is_distributed and s.cache_dir is not None
        if shared and not info.is_main:
            D.barrier(info)  # rank 0 builds the shared cache file first
        self.cache = DecodedCache.build(
            items,
            cache_size_for(s.image_size),
            cache_dir=s.cache_dir,
            on_error=s.on_error,
            num_workers=s.num_workers,
            verbose=s.verbose if info.is_main else 0,
            bit_depth=s.bit_depth,
            wait=info.is_distributed,  # one process: start training while the shards fill in the background
        )
        if shared and info.is_main:
            D.barrier(info)
        organ_names = np.asarray(organ_names)[np.asarray(self.cache.kept, dtype=int)]
        self.skipped = list(skipped_before) + list(self.cache.skipped)
        if self.skipped:
            report_skipped(self.skipped, context="CodaPretrainer.fit")
        check_organs(organ_names, stage="readable images")
        self.organs, self.labels = np.unique(organ_names, return_inverse=True)
        logger.info(
            "%d images of %d organs (%s) ready in %.1fs",
            len(self.labels),
            len(self.organs),
            ", ".join(f"{o}: {c}" for o, c in sorted(Counter(organ_names.tolist()).items())),
            time.perf_counter() - t0,
        )

    def monitor(self, monitor_idx: np.ndarray, why_off: str | None) -> TrainingMonitor | None:
        """The training monitor on the held-out images, or ``None`` when it is off."""
        s = self.settings
        if s.monitor_every and len(monitor_idx):
            monitor = TrainingMonitor.from_cache(self.cache, monitor_idx, self.labels, s.image_size, self.device)
            logger.info("training monitor: %d held-out images, every %d epoch(s)", len(monitor), s.monitor_every)
            return monitor
        if s.monitor_every and self.info.is_main:
            logger.info("training monitor off: %s", why_off)
        return None

    def loader(self, train_idx: np.ndarray) -> tuple[MultiCropDataset, GlobalBatchSampler, DataLoader]:
        """The multi-crop dataset of the training images, the global-batch sampler and the DataLoader."""
        s, info = self.settings, self.info
        dataset = MultiCropDataset(
            self.cache, self.labels.astype(np.int64), views_of(s), seed=self.seed, indices=train_idx
        )
        if s.batch_size % info.world_size:
            raise ValueError(f"batch_size={s.batch_size} is not divisible by the {info.world_size} processes")
        per_rank = s.batch_size // info.world_size
        if per_rank < s.accumulate_steps:
            raise ValueError(
                f"accumulate_steps={s.accumulate_steps} exceeds the {per_rank} image(s) per process and step "
                f"(batch_size={s.batch_size} over {info.world_size} process(es))"
            )
        sampler = GlobalBatchSampler(len(dataset), per_rank, world_size=info.world_size, rank=info.rank, seed=self.seed)
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_views,
            num_workers=s.num_workers,
            pin_memory=self.policy.pin_memory,
            persistent_workers=s.num_workers > 0,
            multiprocessing_context=worker_context() if s.num_workers > 0 else None,
        )
        return dataset, sampler, loader

    # ------------------------------------------------------------------ training
    def build(self, *, steps: int) -> tuple[CodaTrainer, str]:
        """The trainer, and where its backbone started; checks the room for checkpoints."""
        trainer, source = build_trainer(self.settings, seed=self.seed, steps=steps, policy=self.policy, info=self.info)
        if self.settings.checkpoint_dir is not None and self.info.is_main:
            # newest + previous + the one being written, each ~4 copies of the student
            # (student, teacher, AdamW's two moments)
            n_bytes = sum(p.numel() * p.element_size() for p in trainer.student_module.parameters())
            check_free_space(self.settings.checkpoint_dir, 3 * 4 * n_bytes, what="checkpoint_dir")
        return trainer, source

    def _facts(self, dataset: MultiCropDataset, sampler: GlobalBatchSampler) -> dict[str, Any]:
        """What a checkpoint records of the run and a resumed run must repeat."""
        return {
            "seed": self.seed,
            "n_images": len(self.labels),
            "n_train_images": len(dataset),
            "steps_per_epoch": len(sampler),
            "data_key": self.data_key,
        }

    def epochs(
        self,
        trainer: CodaTrainer,
        dataset: MultiCropDataset,
        sampler: GlobalBatchSampler,
        loader: DataLoader,
        monitor: TrainingMonitor | None,
    ) -> list[dict[str, Any]]:
        """The epochs (from the checkpoint's, when resuming) with their callbacks: the history."""
        s, info = self.settings, self.info
        facts = self._facts(dataset, sampler)
        organs = [str(o) for o in self.organs]
        start_epoch, history = (
            resume.restore(self.ckpt, trainer, organs=organs, run=facts) if self.ckpt is not None else (0, [])
        )

        def set_epoch(epoch: int) -> None:
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)

        callbacks: list[Any] = []
        if monitor is not None:
            callbacks.append(MonitorCallback(monitor, every=s.monitor_every, epochs=s.epochs, info=info))
        callbacks.append(ReportCallback(epochs=s.epochs, info=info))
        log_dir = s.log_dir if s.log_dir is not None else s.checkpoint_dir
        callbacks.append(MetricsSinkCallback(log_dir, keep_through_epoch=start_epoch, info=info))
        if s.checkpoint_dir is not None:
            record = {"params": resume_signature(s), "organs": organs, "run": facts}
            callbacks.append(
                CheckpointCallback(
                    s.checkpoint_dir, every=s.checkpoint_every, epochs=s.epochs, info=info, record=lambda: record
                )
            )
        n_skipped = len(self.skipped)
        return fit_pretraining(
            trainer,
            loader,
            epochs=s.epochs,
            start_epoch=start_epoch,
            history=history,
            seed=self.seed,
            set_epoch=set_epoch,
            callbacks=callbacks,
            extra=lambda: {"skipped_files": n_skipped},
            verbose=s.verbose,
        )

    # ------------------------------------------------------------------ results
    def export(
        self,
        trainer: CodaTrainer,
        history: list[dict[str, Any]],
        *,
        n_train_images: int,
        monitor_indices: np.ndarray,
        init_weights_source: str,
    ) -> PretrainingResult:
        """The networks on the CPU, the teacher's backbone as weights with its model card's facts."""
        s = self.settings
        intensity = {"bit_depth": s.bit_depth, "kinds": dict(sorted(self.cache.kinds.items()))}
        teacher = trainer.teacher.to("cpu").eval()
        last = history[-1] if history else {}
        training = {
            "method": "coda",
            "init_weights": init_weights_source,
            "epochs": int(s.epochs),
            "n_images": int(len(self.labels)),
            "organs": [str(o) for o in self.organs],
            "batch_size": int(s.batch_size),
            "lambda_inter": float(s.lambda_inter),
            "lambda_intra": float(s.lambda_intra),
            "koleo_weight": float(s.koleo_weight),
            "final_loss": last.get("loss"),
            "final_loss_inter": last.get("loss_inter"),
            "final_loss_intra": last.get("loss_intra"),
            "local_size": int(s.local_size),
            "n_local_crops": int(s.n_local_crops),
        }
        config = make_config(
            backbone=s.backbone,
            embed_dim=embed_dim(teacher.backbone),
            image_size=s.image_size,
            mean=MEAN,
            std=STD,
            training=training,
            data=self.data_summary,
            extra={"intensity": intensity},
        )
        return PretrainingResult(
            seed=self.seed,
            organs=self.organs,
            n_images=len(self.labels),
            n_train_images=n_train_images,
            skipped=self.skipped,
            monitor_indices=monitor_indices,
            data_summary=self.data_summary,
            intensity=intensity,
            init_weights_source=init_weights_source,
            history=history,
            student=trainer.student_module.to("cpu").eval(),
            teacher=teacher,
            weights=Weights.from_state(teacher.backbone.state_dict(), config, source="CodaPretrainer teacher"),
        )
