"""What a resume checks (codafeat/_train/resume.py): the data key and the recorded settings."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codafeat._train import resume


def test_the_data_key_changes_with_files_pixels_labels_and_order(tmp_path):
    files = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        p.write_bytes(b"x" * (i + 1))
        files.append(str(p))
    labels = np.array([0, 1, 0])
    key = resume.data_key(files, [0, 1, 2], labels)
    assert key == resume.data_key(files, [0, 1, 2], labels)
    assert key != resume.data_key(files, [0, 2, 1], labels[[0, 2, 1]]), "the order is part of the run"
    assert key != resume.data_key(files, [0, 1, 2], np.array([0, 1, 1]))
    assert key != resume.data_key(files, [0, 1], labels[:2])
    st_ = os.stat(files[1])
    os.utime(files[1], ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))  # same name, edited pixels
    assert key != resume.data_key(files, [0, 1, 2], labels)
    legacy = resume.data_key(files, [0, 1, 2], labels, with_identity=False)
    assert not legacy.startswith("v2:") and legacy == resume.data_key(files, [0, 1, 2], labels, with_identity=False)


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(
            st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.tuples(st.integers(), st.integers())
        ),
        max_size=5,
    )
)
def test_settings_read_back_from_the_metadata_as_recorded(params):
    assert resume._json(resume.jsonable(params)) == resume._json(params)


def test_no_checkpoint_to_resume_from_is_none(tmp_path):
    assert resume.read_for_resume(tmp_path, epochs=3, params={}) is None
    (tmp_path / "checkpoint.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable codafeat checkpoint"):
        resume.read_for_resume(tmp_path, epochs=3, params={})
