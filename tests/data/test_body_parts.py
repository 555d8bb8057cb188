"""DICOM body-part values to organs (codafeat/data/body_parts.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codafeat.data.body_parts import (
    DEFINED_TERMS,
    NOISE_WORDS,
    SYNONYMS,
    OrganMapping,
    compact,
    parse_body_part,
    read_organ_map,
)

#: Values seen in archives (the issue's list and more), written out by hand with the organ each must give.
CASES = [
    ("CHEST", "chest"),
    ("THORAX", "chest"),
    ("PORT CHEST", "chest"),
    ("CHEST_LAT", "chest"),
    ("TORAX", "chest"),
    ("chest pa & lat", "chest"),
    ("Tórax", "chest"),
    ("Poumons", "chest"),
    ("CXR", "chest"),
    ("LUNGS", "chest"),
    ("LSPINE", "lspine"),
    ("L SPINE", "lspine"),
    ("LUMBAR SPINE", "lspine"),
    ("L-SPINE", "lspine"),
    ("LWS", "lspine"),
    ("C-SPINE", "cspine"),
    ("CSPINE", "cspine"),
    ("C SPINE", "cspine"),
    ("CERVICAL SPINE", "cspine"),
    ("HWS", "cspine"),
    ("T SPINE", "tspine"),
    ("THORACIC SPINE", "tspine"),
    ("BWS", "tspine"),
    ("LS SPINE", "lsspine"),
    ("HAND LT", "hand"),
    ("HAND RT", "hand"),
    ("R HAND", "hand"),
    ("LEFT HAND", "hand"),
    ("HANDS BILAT", "hand"),
    ("Mano derecha", "hand"),
    ("Main gauche", "hand"),
    ("KNEE", "knee"),
    ("KNEES", "knee"),
    ("Knie links", "knee"),
    ("GENOU", "knee"),
    ("RODILLA IZQ", "knee"),
    ("Ginocchio dx", "knee"),
    ("JOELHO ESQ", "knee"),
    ("EXTREMITY", "extremity"),
    ("UPPER EXTREMITY", "extremity"),
    ("SKULL", "skull"),
    ("Schädel", "skull"),
    ("CRANEO", "skull"),
    ("SHOULDER_RT", "shoulder"),
    ("Schulter", "shoulder"),
    ("EPAULE", "shoulder"),
    ("PELVIS AP", "pelvis"),
    ("Becken", "pelvis"),
    ("Hüfte links", "hip"),
    ("HIP BILAT", "hip"),
    ("FOOT", "foot"),
    ("FEET", "foot"),
    ("Fuß rechts", "foot"),
    ("ANKLE", "ankle"),
    ("OSG", "ankle"),
    ("WRIST", "wrist"),
    ("Handgelenk", "wrist"),
    ("ELBOW", "elbow"),
    ("Ellenbogen", "elbow"),
    ("ABDOMEN", "abdomen"),
    ("KUB", "abdomen"),
    ("CHEST ABDOMEN", "chestabdomen"),
    ("HUMERUS", "humerus"),
    ("FEMUR", "femur"),
    ("TIB FIB", "tibia"),
]


@pytest.mark.parametrize(("raw", "organ"), CASES)
def test_archive_values_map_to_the_organ(raw, organ):
    assert OrganMapping().resolve(raw).organ == organ


def test_every_defined_term_is_its_own_organ_and_every_synonym_reaches_a_defined_term():
    mapping = OrganMapping()
    for term in DEFINED_TERMS:
        assert mapping.resolve(term).organ == term.lower(), term
    for synonym, term in SYNONYMS.items():
        assert term in DEFINED_TERMS, f"{synonym} -> {term}: not a defined term"
        assert parse_body_part(synonym) == {term.lower()}, synonym
    assert not (set(SYNONYMS) & NOISE_WORDS) and not (DEFINED_TERMS & NOISE_WORDS)


SIDE_AND_VIEW = ["LT", "RT", "LEFT", "RIGHT", "BILAT", "PA", "AP", "LAT", "PORT", "PORTABLE", "ERECT", "2V", "XR", "1"]
SEPARATORS = [" ", "_", "-", "  ", ".", "/", ", ", " (", ") "]


@given(
    st.sampled_from(CASES),
    st.lists(st.sampled_from(SIDE_AND_VIEW), max_size=3),
    st.lists(st.sampled_from(SIDE_AND_VIEW), max_size=3),
    st.sampled_from(SEPARATORS),
    st.sampled_from([str.upper, str.lower, str.title, str]),
)
def test_case_punctuation_sides_and_views_do_not_change_the_organ(case, before, after, sep, recase):
    raw, organ = case
    decorated = recase(sep.join([*before, raw, *after]))
    assert OrganMapping().resolve(decorated).organ == organ, decorated


@pytest.mark.parametrize("raw", ["", "   ", "OTHER", "BODYPART-XYZ", "HAND AND WRIST", "KNEE FOOT", "LT", "PA"])
def test_nothing_or_several_organs_is_unknown(raw):
    res = OrganMapping().resolve(raw)
    assert (res.organ, res.source, res.raw) == (None, "unknown", raw.strip())


def test_descriptions_are_read_in_order_only_when_the_tag_gives_no_organ():
    m = OrganMapping()
    desc = {"StudyDescription": "XR KNEE", "SeriesDescription": "HAND PA", "ProtocolName": "CHEST"}
    assert m.resolve("CHEST", desc).source == "tag"
    assert m.resolve("", desc).organ == "knee" and m.resolve("", desc).source == "description"
    assert m.resolve("FOO", ["", "knee and hand", "Hand 2V"]).organ == "hand", "an ambiguous text is passed over"
    assert m.resolve("EXTREMITY", ["XR EXTREMITY", "Ankle AP"]).organ == "ankle", "a vague tag is refined"
    assert m.resolve("", ["XR EXTREMITY"]).organ is None, "a vague description names no organ"


def test_the_user_mapping_comes_first_and_can_rename_organs(tmp_path):
    m = OrganMapping({"CHEST": "thorax", "lspine": "spine", "Weird Tag": "knee"})
    assert m.resolve("PORT CHEST").organ == "thorax", "a canonical organ may be renamed"
    assert m.resolve("LUMBAR SPINE").organ == "spine" and m.resolve("weird_tag").organ == "knee"
    assert {m.resolve(v).source for v in ("PORT CHEST", "weird_tag")} == {"user mapping"}
    assert m.resolve("HAND").source == "tag"
    assert m.resolve("", ["Weird Tag"]).organ is None, "the user's raw values are BodyPartExamined values"


def test_read_organ_map_rejects_bad_mappings_by_name(tmp_path):
    with pytest.raises(ValueError, match="'L Spine' is mapped to both 'spine' and 'lspine'"):
        read_organ_map({"LSPINE": "spine", "L Spine": "lspine"})
    with pytest.raises(ValueError, match="empty raw value or organ"):
        read_organ_map({"--": "chest"})
    with pytest.raises(ValueError, match="strings"):
        read_organ_map({"CHEST": 3})
    with pytest.raises(ValueError, match="a dict or the path"):
        read_organ_map([("CHEST", "chest")])
    bad = tmp_path / "m.csv"
    bad.write_text("value,label\nCHEST,chest\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"m\.csv.*needs the columns raw,organ"):
        read_organ_map(bad)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_organ_map(tmp_path / "nope.csv")
    bad.write_bytes(b"raw,organ\n\xff\xfe,chest\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_organ_map(bad)


@given(st.text(max_size=30))
def test_compact_is_idempotent_and_alphanumeric(text):
    once = compact(text)
    assert compact(once) == once and (once == "" or once.isalnum()) and once == once.upper()
