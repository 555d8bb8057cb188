"""DICOM body-part values to organ names: the table, the parser and the user's mapping.

Archives spell one body part many ways in ``BodyPartExamined`` (0018,0015): ``CHEST``,
``THORAX``, ``PORT CHEST``, ``CHEST_LAT``, ``TORAX``; ``LSPINE``, ``L SPINE``, ``LUMBAR
SPINE``; ``HAND LT``. Taken verbatim, each spelling would be its own organ, and the
inter-organ loss would push apart images of one organ. :class:`OrganMapping` turns a value
into one **canonical organ name**: the lower-cased *defined term* of the DICOM standard,
PS3.16 Annex L, "Correspondence of Anatomic Region Codes and Body Part Examined Defined
Terms" (the terms of CID 4031 "Common Anatomic Regions"), e.g. ``chest``, ``lspine``,
``cspine``, ``hand``, ``knee``. See
https://dicom.nema.org/medical/dicom/current/output/chtml/part16/chapter_L.html.

How a value is read (:func:`parse_body_part`):

1. Accents are dropped (``TÓRAX`` -> ``TORAX``), case is ignored, and every character that
   is not a letter or digit separates words (``C-SPINE``, ``CHEST_LAT``, ``L.SPINE``).
2. Words that say *how* or *which side*, not *what*, are dropped: laterality (``LT``,
   ``RT``, ``LEFT``, ``BILAT``, ``BOTH``, ``LINKS``, ``GAUCHE``...), views and
   acquisition (``PA``, ``AP``, ``LAT``, ``PORT``, ``PORTABLE``, ``ERECT``, ``2V``...),
   modality words (``XR``, ``CR``, ``DX``, ``XRAY``) and numbers.
3. The remaining words are matched, longest run of adjacent words first, against the
   defined terms and their synonyms written together: ``L SPINE`` -> ``LSPINE``,
   ``LUMBAR SPINE`` -> ``LUMBARSPINE`` -> ``lspine``. A lone ``L`` or ``R`` left over is a
   side (``R HAND`` -> ``hand``). Plurals (``KNEES``, ``HANDS``) match their singular.
4. Synonyms: English (``THORAX``, ``LUNGS``, ``CERVICAL SPINE``), abbreviations (``CXR``,
   ``C SPINE``, ``LS SPINE``) and common German, French, Spanish, Italian and Portuguese
   terms (``TORAX``, ``THORAX``, ``KNIE``, ``GENOU``, ``RODILLA``, ``HWS``, ``LWS``...).
   Radiographs of the lungs are chest radiographs: ``LUNG`` -> ``chest``.

A value that names one organ gives it; a value that names none, or several different ones
(``HAND WRIST``), is unknown. For an empty or unknown ``BodyPartExamined`` (or the vague
defined term ``EXTREMITY``), :meth:`OrganMapping.resolve` looks for one organ in
StudyDescription (0008,1030), SeriesDescription (0008,103E) and ProtocolName (0018,1030),
in that order, with the same parser. A **user mapping** (a dict, or a CSV with columns
``raw,organ``) is checked first: its keys match a raw value whatever its case, spacing and
punctuation, and may also name a canonical organ to rename or merge organs
(``{"lspine": "spine", "cspine": "spine"}``).
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFINED_TERMS", "SYNONYMS", "OrganMapping", "Resolution", "compact", "parse_body_part", "read_organ_map"]

#: Body Part Examined defined terms of PS3.16 Annex L (CID 4031 and its related groups) that a
#: projection radiograph may carry. The canonical organ name is the term in lower case.
DEFINED_TERMS = frozenset(
    """
ABDOMEN ABDOMENPELVIS ACJOINT ANKLE ARM AXILLA BACK BREAST BUTTOCK CALCANEUS CALF CHEST
CHESTABDOMEN CHESTABDPELVIS CLAVICLE COCCYX CSPINE CTSPINE EAR ELBOW EXTREMITY FACE FEMUR
FINGER FOOT FOREARM HAND HEAD HEADNECK HEART HIP HUMERUS IAC JAW KNEE LEG LSPINE LSSPINE
MANDIBLE MASTOID MAXILLA NECK NECKCHEST ORBIT PATELLA PELVIS RIB SACRUM SCAPULA SELLA
SHOULDER SINUS SKULL SPINE SSPINE STERNUM TESTIS THIGH THUMB TIBIA TMJ TOE TSPINE TLSPINE
WHOLEBODY WRIST ZYGOMA
""".split()
)

#: Defined terms too vague to be an organ when a description names one (Annex L has them).
VAGUE_TERMS = frozenset({"EXTREMITY", "WHOLEBODY"})

#: Other spellings (written together, upper case, no accents) -> defined term.
SYNONYMS: dict[str, str] = {
    # chest
    "THORAX": "CHEST",
    "THORACIC": "CHEST",
    "LUNG": "CHEST",
    "LUNGS": "CHEST",
    "CXR": "CHEST",
    "TORAX": "CHEST",
    "TORACE": "CHEST",
    "BRUSTKORB": "CHEST",
    "LUNGE": "CHEST",
    "POITRINE": "CHEST",
    "POUMON": "CHEST",
    "POUMONS": "CHEST",
    "PULMON": "CHEST",
    "PETTO": "CHEST",
    "TORACICO": "CHEST",
    "TORAKS": "CHEST",
    "BORST": "CHEST",
    "THORAXAP": "CHEST",
    "THORAXPA": "CHEST",
    # spine
    "CERVICALSPINE": "CSPINE",
    "CERVICAL": "CSPINE",
    "CS": "CSPINE",
    "HWS": "CSPINE",
    "COLUMNACERVICAL": "CSPINE",
    "RACHISCERVICAL": "CSPINE",
    "COLONNACERVICALE": "CSPINE",
    "THORACICSPINE": "TSPINE",
    "DORSALSPINE": "TSPINE",
    "TS": "TSPINE",
    "BWS": "TSPINE",
    "DSPINE": "TSPINE",
    "COLUMNADORSAL": "TSPINE",
    "COLUMNATORACICA": "TSPINE",
    "RACHISDORSAL": "TSPINE",
    "LUMBARSPINE": "LSPINE",
    "LUMBAR": "LSPINE",
    "LWS": "LSPINE",
    "COLUMNALUMBAR": "LSPINE",
    "RACHISLOMBAIRE": "LSPINE",
    "COLONNALOMBARE": "LSPINE",
    "LOMBAIRE": "LSPINE",
    "LUMBOSACRAL": "LSSPINE",
    "LUMBOSACRALSPINE": "LSSPINE",
    "LSSPINE": "LSSPINE",
    "THORACOLUMBAR": "TLSPINE",
    "THORACOLUMBARSPINE": "TLSPINE",
    "CERVICOTHORACIC": "CTSPINE",
    "SACRAL": "SSPINE",
    "SACRALSPINE": "SSPINE",
    "WS": "SPINE",
    "WIRBELSAEULE": "SPINE",
    "WIRBELSAULE": "SPINE",
    "COLUMNA": "SPINE",
    "RACHIS": "SPINE",
    "COLONNA": "SPINE",
    "COLUNA": "SPINE",
    "VERTEBRAL": "SPINE",
    "WHOLESPINE": "SPINE",
    "SCOLIOSIS": "SPINE",
    # head
    "SCHAEDEL": "SKULL",
    "SCHADEL": "SKULL",
    "CRANEO": "SKULL",
    "CRANIO": "SKULL",
    "CRANE": "SKULL",
    "CRANIUM": "SKULL",
    "SINUSES": "SINUS",
    "PARANASALSINUS": "SINUS",
    "NNH": "SINUS",
    "KIEFER": "JAW",
    "UNTERKIEFER": "MANDIBLE",
    "MANDIBULA": "MANDIBLE",
    # upper limb
    "SCHULTER": "SHOULDER",
    "EPAULE": "SHOULDER",
    "HOMBRO": "SHOULDER",
    "SPALLA": "SHOULDER",
    "OMBRO": "SHOULDER",
    "OBERARM": "HUMERUS",
    "HUMERO": "HUMERUS",
    "BRAS": "ARM",
    "BRAZO": "ARM",
    "BRACCIO": "ARM",
    "BRACO": "ARM",
    "UPPERARM": "HUMERUS",
    "ELLENBOGEN": "ELBOW",
    "ELLBOGEN": "ELBOW",
    "CODO": "ELBOW",
    "COUDE": "ELBOW",
    "GOMITO": "ELBOW",
    "COTOVELO": "ELBOW",
    "UNTERARM": "FOREARM",
    "ANTEBRAZO": "FOREARM",
    "AVANTBRAS": "FOREARM",
    "AVAMBRACCIO": "FOREARM",
    "ANTEBRACO": "FOREARM",
    "HANDGELENK": "WRIST",
    "MUNECA": "WRIST",
    "POIGNET": "WRIST",
    "POLSO": "WRIST",
    "PUNHO": "WRIST",
    "MANO": "HAND",
    "MAIN": "HAND",
    "MAO": "HAND",
    "BONEAGE": "HAND",
    "FINGERS": "FINGER",
    "DEDO": "FINGER",
    "DOIGT": "FINGER",
    "DITO": "FINGER",
    "DAUMEN": "THUMB",
    "POUCE": "THUMB",
    "PULGAR": "THUMB",
    "SCHLUESSELBEIN": "CLAVICLE",
    "CLAVICULA": "CLAVICLE",
    "SCHULTERBLATT": "SCAPULA",
    # trunk
    "BECKEN": "PELVIS",
    "BASSIN": "PELVIS",
    "PELVIC": "PELVIS",
    "BACINO": "PELVIS",
    "BACIA": "PELVIS",
    "BAUCH": "ABDOMEN",
    "ABDOME": "ABDOMEN",
    "ADDOME": "ABDOMEN",
    "KUB": "ABDOMEN",
    "ABD": "ABDOMEN",
    "RIPPEN": "RIB",
    "COTES": "RIB",
    "COSTILLAS": "RIB",
    "COSTOLE": "RIB",
    "COSTELAS": "RIB",
    "BRUSTBEIN": "STERNUM",
    "STERNON": "STERNUM",
    "ESTERNON": "STERNUM",
    "KREUZBEIN": "SACRUM",
    "STEISSBEIN": "COCCYX",
    "MAMMA": "BREAST",
    "MAMMO": "BREAST",
    "MAMMOGRAPHY": "BREAST",
    "SEIN": "BREAST",
    "MAMA": "BREAST",
    # lower limb
    "HUEFTE": "HIP",
    "HUFTE": "HIP",
    "HANCHE": "HIP",
    "CADERA": "HIP",
    "ANCA": "HIP",
    "QUADRIL": "HIP",
    "OBERSCHENKEL": "FEMUR",
    "FEMORE": "FEMUR",
    "FEMORAL": "FEMUR",
    "KNIE": "KNEE",
    "GENOU": "KNEE",
    "RODILLA": "KNEE",
    "GINOCCHIO": "KNEE",
    "JOELHO": "KNEE",
    "KNIESCHEIBE": "PATELLA",
    "ROTULA": "PATELLA",
    "UNTERSCHENKEL": "LEG",
    "LOWERLEG": "LEG",
    "PIERNA": "LEG",
    "JAMBE": "LEG",
    "GAMBA": "LEG",
    "PERNA": "LEG",
    "TIBIAFIBULA": "TIBIA",
    "TIBFIB": "TIBIA",
    "SPRUNGGELENK": "ANKLE",
    "OSG": "ANKLE",
    "TOBILLO": "ANKLE",
    "CHEVILLE": "ANKLE",
    "CAVIGLIA": "ANKLE",
    "TORNOZELO": "ANKLE",
    "FUSS": "FOOT",
    "FEET": "FOOT",
    "PIE": "FOOT",
    "PIED": "FOOT",
    "PIEDE": "FOOT",
    "ZEHE": "TOE",
    "ZEHEN": "TOE",
    "ORTEIL": "TOE",
    "HEEL": "CALCANEUS",
    "FERSE": "CALCANEUS",
    "CALCANEO": "CALCANEUS",
    "LOWEREXTREMITY": "EXTREMITY",
    "UPPEREXTREMITY": "EXTREMITY",
    "EXTREMITIES": "EXTREMITY",
    "EXTREMITAET": "EXTREMITY",
    "EXTREMIDAD": "EXTREMITY",
    "LIMB": "EXTREMITY",
    "ACJ": "ACJOINT",
    "ACROMIOCLAVICULAR": "ACJOINT",
    "ACROMIOCLAVICULARJOINT": "ACJOINT",
    "WHOLE": "WHOLEBODY",
    "BODY": "WHOLEBODY",
    "BABYGRAM": "WHOLEBODY",
}

#: Words that name a side, a view, an acquisition or a modality, not a body part.
NOISE_WORDS = frozenset(
    """
LT RT LEFT RIGHT BILAT BILATERAL BOTH BIL LINKS RECHTS BDS BEIDSEITS GAUCHE DROIT DROITE
IZQ IZQUIERDO IZQUIERDA DER DERECHO DERECHA SIN SINISTRO SINISTRA DX DESTRO DESTRA ESQ
ESQUERDO ESQUERDA DIREITO DIREITA
PA AP LAT LATERAL LATERALE OBL OBLIQUE FRONTAL VIEW VIEWS PORT PORTABLE ERECT SUPINE UPRIGHT
STANDING WB DECUB DECUBITUS INSP EXP AXIAL SUNRISE SKYLINE MORTISE SERIES ROUTINE STD
XR CR DR DX RX XRAY RAY RAYS RADIOGRAPH RADIOGRAPHY PLAIN FILM ROENTGEN RONTGEN RO SCREENING
OF AND WITH W WO THE DE DU DES LA LE DEL DI DA DO ET Y E UND
""".split()
)

_SIDES = frozenset({"L", "R", "B"})
_MAX_RUN = 4  # at most this many adjacent words form one term (e.g. LUMBO SACRAL SPINE)


def compact(text: Any) -> str:
    """``text`` upper-cased, without accents or anything but letters and digits: a table key.

    Examples
    --------
    >>> compact("Tórax  p.a."), compact("C-Spine")
    ('TORAXPA', 'CSPINE')
    """
    return "".join(_words(text))


def _words(text: Any) -> list[str]:
    # upper case first: "ß".upper() is "SS"; then accents are dropped (NFKD splits "Ä" into "A" and a mark)
    plain = unicodedata.normalize("NFKD", str(text or "").upper()).encode("ascii", "ignore").decode("ascii")
    return re.findall(r"[A-Z0-9]+", plain)


def _term(key: str) -> str | None:
    """The defined term of one table key (a term, a synonym, or a plural of one)."""
    for k in (key, key[:-1] if key.endswith("S") else None, key[:-2] if key.endswith("ES") else None):
        if k:
            if k in DEFINED_TERMS:
                return k
            if k in SYNONYMS:
                return SYNONYMS[k]
    return None


def parse_body_part(text: Any) -> set[str]:
    """The organs (canonical names) that ``text`` names: empty when none, several when ambiguous.

    Examples
    --------
    >>> parse_body_part("PORT CHEST"), parse_body_part("L SPINE"), parse_body_part("HAND LT")
    ({'chest'}, {'lspine'}, {'hand'})
    >>> sorted(parse_body_part("XR HAND AND WRIST 3V")), parse_body_part("Rodilla Izq"), parse_body_part("")
    (['hand', 'wrist'], {'knee'}, set())
    """
    words = [w for w in _words(text) if w not in NOISE_WORDS and not w.isdigit() and not re.fullmatch(r"\d+V", w)]
    found: set[str] = set()
    i = 0
    while i < len(words):
        for n in range(min(_MAX_RUN, len(words) - i), 0, -1):
            term = _term("".join(words[i : i + n]))
            if term is not None:
                found.add(term.lower())
                i += n
                break
        else:
            i += 1  # an unknown word, or a lone side letter (R HAND)
    return found


@dataclass(frozen=True)
class Resolution:
    """Where one file's organ came from: ``organ`` (``None`` when unknown), ``source``, ``raw``.

    ``source`` is ``"user mapping"``, ``"tag"`` (``BodyPartExamined`` through the table),
    ``"description"`` (a keyword of StudyDescription, SeriesDescription or ProtocolName) or
    ``"unknown"``. ``raw`` is the ``BodyPartExamined`` value as written (``""`` when empty).
    """

    organ: str | None
    source: str
    raw: str


class OrganMapping:
    """Resolve DICOM header values to canonical organ names (see the module docs).

    Parameters
    ----------
    user : dict or str or path, optional
        The user's mapping, checked first: ``{raw value or canonical organ: organ}``, or a
        CSV file with columns ``raw,organ``. Keys match whatever their case, spacing and
        punctuation (``"L-Spine"`` matches ``L SPINE``).

    Examples
    --------
    >>> m = OrganMapping({"lspine": "spine", "Mystery Part": "chest"})
    >>> m.resolve("LUMBAR SPINE")
    Resolution(organ='spine', source='user mapping', raw='LUMBAR SPINE')
    >>> m.resolve("mystery-part")
    Resolution(organ='chest', source='user mapping', raw='mystery-part')
    >>> m.resolve("", {"SeriesDescription": "XR KNEE 2V"})
    Resolution(organ='knee', source='description', raw='')
    >>> m.resolve("FOO").organ is None
    True
    """

    def __init__(self, user: Mapping[str, str] | str | os.PathLike | None = None) -> None:
        self.user = read_organ_map(user) if user is not None else {}

    def _rename(self, organ: str, source: str, raw: str) -> Resolution:
        mapped = self.user.get(compact(organ))
        return Resolution(mapped, "user mapping", raw) if mapped else Resolution(organ, source, raw)

    def resolve(self, body_part: Any, descriptions: Mapping[str, Any] | Sequence[Any] = ()) -> Resolution:
        """The organ of a file from its ``BodyPartExamined`` and, as fallback, its descriptions.

        ``descriptions`` are StudyDescription, SeriesDescription and ProtocolName (a mapping
        by keyword, in that order, or a sequence), read only when the tag gives no organ.
        """
        raw = str(body_part or "").strip()
        if compact(raw) in self.user:
            return Resolution(self.user[compact(raw)], "user mapping", raw)
        found = parse_body_part(raw)
        if len(found) == 1 and found.isdisjoint(v.lower() for v in VAGUE_TERMS):
            return self._rename(found.pop(), "tag", raw)
        texts = descriptions.values() if isinstance(descriptions, Mapping) else descriptions
        for text in texts:
            hits = {o for o in parse_body_part(text) if o.upper() not in VAGUE_TERMS}
            if len(hits) == 1:
                return self._rename(hits.pop(), "description", raw)
        if len(found) == 1:  # a vague term (EXTREMITY) that no description refines
            return self._rename(found.pop(), "tag", raw)
        return Resolution(None, "unknown", raw)


def read_organ_map(source: Mapping[str, str] | str | os.PathLike) -> dict[str, str]:
    """The user's mapping as ``{compact(raw): organ}``, from a dict or a CSV with ``raw,organ``.

    Raises
    ------
    ValueError
        For an empty key or organ, two keys that are the same value spelled differently
        but mapped to different organs, a CSV without the two columns, or another type.
    FileNotFoundError
        If the CSV file does not exist.

    Examples
    --------
    >>> read_organ_map({"L Spine": "spine", "c-spine": "spine"})
    {'LSPINE': 'spine', 'CSPINE': 'spine'}
    """
    where = "organ_map"
    if isinstance(source, (str, os.PathLike)):
        where = f"organ_map file {str(source)!r}"
        if not Path(source).is_file():
            raise FileNotFoundError(f"{where} does not exist (expected a CSV with columns raw,organ)")
        try:
            with open(source, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                header = [h.strip() for h in reader.fieldnames or []]
                if "raw" not in header or "organ" not in header:
                    raise ValueError(f"{where} needs the columns raw,organ; its header is {header}")
                reader.fieldnames = header
                pairs = [(row.get("raw") or "", row.get("organ") or "") for row in reader]
        except UnicodeDecodeError as exc:
            raise ValueError(f"{where} is not UTF-8 text ({exc})") from None
    elif isinstance(source, Mapping):
        pairs = list(source.items())
    else:
        raise ValueError(f"organ_map must be a dict or the path of a CSV file (raw,organ), got {type(source).__name__}")
    out: dict[str, str] = {}
    for raw, organ in pairs:
        if not isinstance(raw, str) or not isinstance(organ, str):
            raise ValueError(f"{where}: keys and organs are strings, got {raw!r}: {organ!r}")
        key, organ = compact(raw), organ.strip()
        if not key or not organ:
            raise ValueError(f"{where}: empty raw value or organ in {raw!r}: {organ!r}")
        if out.get(key, organ) != organ:
            raise ValueError(f"{where}: {raw!r} is mapped to both {out[key]!r} and {organ!r}")
        out[key] = organ
    return out
