"""Few-shot evaluation: the splitter, the probes and their report (the paper's Table 1 protocol).

* :class:`~codafeat.fewshot.split.FewShotSplit`: a scikit-learn splitter that draws
  ``n_shots`` per class (or a stratified fraction) for training;
* :func:`~codafeat.fewshot.probes.knn_probe`, :func:`~codafeat.fewshot.probes.linear_probe`
  and :func:`~codafeat.fewshot.probes.few_shot_report`: probes of frozen embeddings, and any
  estimator, over repeated draws;
* :class:`~codafeat.fewshot.report.FewShotReport` and
  :func:`~codafeat.fewshot.report.format_table`: the results and their Markdown table.
"""

from .probes import few_shot_report, knn_probe, linear_probe, make_linear_probe
from .report import FewShotReport, format_table
from .split import FewShotSplit

__all__ = [
    "FewShotReport",
    "FewShotSplit",
    "few_shot_report",
    "format_table",
    "knn_probe",
    "linear_probe",
    "make_linear_probe",
]
