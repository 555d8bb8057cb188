"""Model cards: what a weights file says about itself, as Markdown.

:func:`model_card` renders a weights config (licence, intended use, the training data
summary, how it was trained) as the card that ``codafeat info`` prints and that
``codafeat package-weights`` puts in a wheel (its ``README.md`` and long description).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["model_card"]

#: Rows of the DICOM raw-value-to-organ table shown in a card (the config keeps them all).
_MAX_MAP_ROWS = 30


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _data_lines(data: Mapping[str, Any]) -> list[str]:
    """The data summary as Markdown lines; a summary of unexpected shape is shown as its JSON."""
    try:
        return _summary_lines(data)
    except (TypeError, ValueError, AttributeError):
        return [
            "- (a data summary this codafeat cannot read) `"
            + _one_line(json.dumps(data, sort_keys=True, default=str))
            + "`"
        ]


def _summary_lines(data: Mapping[str, Any]) -> list[str]:
    if not data:
        return ["No training data recorded (random initialisation, or weights from elsewhere)."]
    lines = []
    organs = data.get("organs") or {}
    if organs:
        lines.append(
            f"- {data.get('n_images', sum(organs.values()))} images of {len(organs)} organ(s): "
            + ", ".join(f"{o} {n}" for o, n in sorted(organs.items()))
        )
    if data.get("files_sha256"):
        lines.append(f"- SHA-256 of the list of training files: `{data['files_sha256']}`")
    for key, label in (("dicom_manufacturers", "DICOM manufacturers"), ("dicom_body_parts", "DICOM body parts")):
        if data.get(key):
            lines.append(f"- {label}: " + ", ".join(f"{k} {v}" for k, v in sorted(data[key].items())))
    if data.get("dicom_sampled"):
        lines.append(f"- (DICOM tags read from {data['dicom_sampled']} of the files)")
    rows = data.get("dicom_organ_map") or []
    if rows:
        lines.append("- Organ of each DICOM BodyPartExamined value (organ_from='dicom'; source, files):")
        for row in rows[:_MAX_MAP_ROWS]:
            organ = row.get("organ") or "(unknown: left out)"
            lines.append(
                f"  - {_one_line(repr(row.get('raw', '')))} -> {_one_line(str(organ))} "
                f"({row.get('source')}, {row.get('count')})"
            )
        if len(rows) > _MAX_MAP_ROWS:
            lines.append(f"  - ... and {len(rows) - _MAX_MAP_ROWS} more value(s) (all in the weights' config)")
    return lines or ["- " + _one_line(json.dumps(dict(data), sort_keys=True))]


def _summary_rows(config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The card's table: backbone, embedding size, input, pooling, licence, writer, intensity."""
    rows = [
        ("backbone", f"`{_one_line(config['backbone'])}` (timm)"),
        ("embedding size", config["embed_dim"]),
        (
            "input",
            f"{config['image_size']} px, {config['in_chans']} channel(s), mean {list(config['mean'])}, "
            f"std {list(config['std'])}",
        ),
        ("pooling", f"`{_one_line(config.get('pooling', 'avg'))}`"),
        ("licence", _one_line(config.get("license", "unknown"))),
        ("written by", f"codafeat {_one_line(config.get('codafeat_version', 'unknown'))}"),
    ]
    if "intensity" in config:
        rows.append(("intensity", f"`{_one_line(json.dumps(config['intensity'], sort_keys=True))}`"))
    return rows


def model_card(config: Mapping[str, Any], *, name: str | None = None) -> str:
    """The Markdown model card of a weights config.

    Examples
    --------
    >>> from codafeat.formats.weights import make_config
    >>> cfg = make_config(backbone="test_convnext", embed_dim=64, image_size=32, mean=[0.5] * 3, std=[0.5] * 3,
    ...                   license="cc-by-4.0", data={"organs": {"chest": 10, "hand": 5}, "n_images": 15})
    >>> card = model_card(cfg, name="demo")
    >>> print(card.splitlines()[0])
    # demo: test_convnext, 64-d embeddings at 32 px
    >>> "| licence | cc-by-4.0 |" in card and "15 images of 2 organ(s): chest 10, hand 5" in card
    True
    """
    training = config.get("training") or {}
    training = training if isinstance(training, Mapping) else {"training": training}
    title = name or f"codafeat {config['backbone']}"
    rows = _summary_rows(config)
    trained = {
        k: training[k]
        for k in (
            "method",
            "init",
            "init_weights",
            "epochs",
            "batch_size",
            "final_loss",
            "final_loss_inter",
            "final_loss_intra",
        )
        if k in training
    }
    lines = [
        f"# {title}: {config['backbone']}, {config['embed_dim']}-d embeddings at {config['image_size']} px",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "## Intended use",
        "",
        _one_line(config.get("intended_use", "")),
        "",
        "## Training data",
        "",
        *_data_lines(config.get("data") or {}),
        "",
        "## Training",
        "",
        ("```json\n" + json.dumps(trained, indent=2, sort_keys=True, default=str) + "\n```")
        if trained
        else "Not recorded.",
        "",
        "## Use",
        "",
        "```python",
        "from codafeat import CodaEncoder",
        f'encoder = CodaEncoder(weights="{name or "PATH"}").fit()',
        "features = encoder.transform(images)",
        "```",
        "",
        "The file is a timm checkpoint too: "
        f"`timm.create_model({config['backbone']!r}, pretrained=True, num_classes=0, "
        "pretrained_cfg_overlay=dict(file=PATH))`.",
    ]
    return "\n".join(lines) + "\n"
