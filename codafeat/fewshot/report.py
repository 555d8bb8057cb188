"""FewShotReport and format_table: few-shot scores laid out as the paper's Table 1.

Rows are methods, columns data fractions or shot counts, each cell ``mean ± std`` over the
repeats. Also importable from :mod:`codafeat.fewshot.probes`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["FewShotReport", "format_table"]


@dataclass(frozen=True)
class FewShotReport:
    """Scores of one or more methods under a few-shot protocol (the layout of paper Table 1).

    Rows are methods, columns are data settings (a fraction such as ``"10%"`` or a shot
    count such as ``"5-shot"``). ``str(report)`` and :func:`format_table` render it as a
    markdown table of ``mean ± std``; :meth:`to_frame` gives a pandas DataFrame (needs
    pandas); :meth:`records` gives plain dictionaries.

    Attributes
    ----------
    scores : dict of str to dict of str to ndarray
        ``scores[method][column]``: the score of every repeat.
    n_train : dict of str to float
        Mean number of training images per column.
    scoring : str
        The scoring used (a scikit-learn scorer name, or the repr of a callable).
    """

    scores: dict[str, dict[str, np.ndarray]]
    n_train: dict[str, float]
    scoring: str
    columns: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.columns:
            object.__setattr__(self, "columns", tuple(self.n_train))

    @property
    def methods(self) -> tuple[str, ...]:
        """The row names."""
        return tuple(self.scores)

    def mean(self) -> dict[str, dict[str, float]]:
        """``mean()[method][column]``: the mean score over the repeats."""
        return {m: {c: float(np.mean(v)) for c, v in cols.items()} for m, cols in self.scores.items()}

    def std(self) -> dict[str, dict[str, float]]:
        """``std()[method][column]``: the standard deviation over repeats (``ddof=0``, as NumPy and GridSearchCV)."""
        return {m: {c: float(np.std(v)) for c, v in cols.items()} for m, cols in self.scores.items()}

    def records(self) -> list[dict[str, Any]]:
        """One dictionary per (method, column): method, setting, n_train, mean, std, scores."""
        mean, std = self.mean(), self.std()
        return [
            {
                "method": m,
                "setting": c,
                "n_train": self.n_train[c],
                "mean": mean[m][c],
                "std": std[m][c],
                "scores": self.scores[m][c].tolist(),
            }
            for m in self.methods
            for c in self.columns
        ]

    def to_frame(self):
        """A pandas DataFrame: index = methods, columns = (setting, "mean" | "std").

        Raises
        ------
        ImportError
            If pandas is not installed.
        """
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("FewShotReport.to_frame needs pandas: pip install pandas") from exc
        mean, std = self.mean(), self.std()
        cols = pd.MultiIndex.from_product([list(self.columns), ["mean", "std"]], names=["setting", "stat"])
        rows = [[v for c in self.columns for v in (mean[m][c], std[m][c])] for m in self.methods]
        return pd.DataFrame(rows, index=pd.Index(list(self.methods), name="method"), columns=cols)

    def plot(self, *, ax: Any = None, title: str | None = None, path: Any = None) -> Any:
        """Score against the number of training labels, one line per method, error bars over the repeats.

        The paper's Table 1 as a figure (:func:`codafeat.plot.learning_curve`): the x axis is
        the mean number of training images of each setting (log scale). Needs matplotlib
        (the ``plot`` extra). ``path`` also writes the figure (PNG).

        Returns
        -------
        matplotlib Axes

        Examples
        --------
        >>> import numpy as np
        >>> report = FewShotReport({"Coda": {"10%": np.array([0.8, 0.9]), "50%": np.array([0.9, 0.95])}},
        ...                        {"10%": 10.0, "50%": 50.0}, "roc_auc")
        >>> report.plot().get_ylabel()
        'roc_auc'
        """
        from ..plot import learning_curve

        return learning_curve(
            {m: {c: self.scores[m][c] for c in self.columns} for m in self.methods},
            n_train={c: max(1.0, float(self.n_train[c])) for c in self.columns},
            ylabel=self.scoring,
            ax=ax,
            title=title,
            path=path,
        )

    def __add__(self, other: FewShotReport) -> FewShotReport:
        """Stack the rows of two reports with the same columns and scoring."""
        if not isinstance(other, FewShotReport):
            return NotImplemented
        if other.columns != self.columns or other.scoring != self.scoring:
            raise ValueError(
                "cannot combine few-shot reports with different settings or scoring: "
                f"{self.columns}/{self.scoring} vs {other.columns}/{other.scoring}"
            )
        clash = set(self.scores) & set(other.scores)
        if clash:
            raise ValueError(f"both reports have the method(s) {sorted(clash)}; rename one")
        return FewShotReport({**self.scores, **other.scores}, dict(self.n_train), self.scoring, self.columns)

    def __str__(self) -> str:
        return format_table(self)

    def _repr_markdown_(self) -> str:
        return format_table(self)


def format_table(report: FewShotReport, *, percent: bool | None = None, digits: int = 2) -> str:
    """Render a :class:`FewShotReport` as a markdown table of ``mean ± std`` (paper Table 1).

    Parameters
    ----------
    report : FewShotReport
        The scores.
    percent : bool or None, default=None
        Show scores x 100. ``None``: when every score lies in ``[0, 1]``.
    digits : int, default=2
        Decimals.

    Returns
    -------
    str
        The table; the header cell names the scoring, each column header the setting and
        the (mean) number of training images.

    Examples
    --------
    >>> import numpy as np
    >>> from codafeat.fewshot.probes import knn_probe
    >>> rng = np.random.default_rng(0)
    >>> E, y = rng.normal(size=(40, 8)), np.repeat([0, 1], 20)
    >>> E[y == 1] += 2
    >>> print(format_table(knn_probe(E, y, fractions=[0.5], n_repeats=2)))
    | Method (roc_auc %) | 50% (n=20) |
    |---|:-:|
    | kNN (k=5) | 93.50 ± 1.00 |
    """
    if percent is None:
        vals = np.concatenate([v for cols in report.scores.values() for v in cols.values()] or [np.zeros(0)])
        finite = vals[np.isfinite(vals)]
        percent = bool(finite.size) and bool(np.all((finite >= 0) & (finite <= 1)))
    scale = 100.0 if percent else 1.0
    mean, std = report.mean(), report.std()

    def n_label(n: float) -> str:
        return f"n={int(round(n))}" if abs(n - round(n)) < 1e-9 else f"n≈{n:.1f}"

    head = [f"Method ({report.scoring}{' %' if percent else ''})"] + [
        f"{c} ({n_label(report.n_train[c])})" for c in report.columns
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + [":-:"] * len(report.columns)) + "|"]
    for m in report.methods:
        cells = [f"{scale * mean[m][c]:.{digits}f} ± {scale * std[m][c]:.{digits}f}" for c in report.columns]
        lines.append("| " + " | ".join([m] + cells) + " |")
    return "\n".join(lines)
