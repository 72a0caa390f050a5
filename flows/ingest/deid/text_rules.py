"""What burned-in text says, as far as de-identification cares: identifying, a measurement, or a display mark.

The OCR reads what is burned into an image; these rules decide what a reading means. They err on the
side of "identifying": a word that is not a known display word counts as a possible name, so a
misread ("SMITHJOHN" read as "ZI0-T96TNHOH") is still treated as identifying. A false alarm costs a
masked box (or, in strict mode, a quarantined image); a miss would publish a name.
"""

from __future__ import annotations

import re
from functools import lru_cache

from schemas.vocabulary import load_vocabulary, registered_organs

DATE = re.compile(r"\d{1,4}\s?[-/.]\s?\d{1,2}\s?[-/.]\s?\d{1,4}|\b\d{8}\b")
MONTH = re.compile(r"\b(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|SEPT|OCT|NOV|DEC)[A-Z]*\b", re.IGNORECASE)
TIME = re.compile(r"\b\d{1,2}\s?:\s?\d{2}(\s?:\s?\d{2})?\b")
# An id: five or more digits in a row, or a token mixing letters and at least three digits (MRN12345)
ID_NUMBER = re.compile(r"\d{5,}|\b(?=[A-Z0-9^_-]*[A-Z])(?=(?:[A-Z^_-]*\d){3})[A-Z0-9^_-]{6,}\b", re.IGNORECASE)
PERSON_NAME_SEPARATOR = re.compile(r"[A-Z]\^[A-Z]", re.IGNORECASE)  # DICOM PN: FAMILY^GIVEN


def _words(*lines: str) -> frozenset[str]:
    return frozenset(" ".join(lines).split())


INSTITUTION_WORDS = _words(
    "HOSPITAL HOSPITALS CLINIC CLINICS CLINICAL MEDICAL CENTER CENTRE UNIVERSITY UNIV INSTITUTE HEALTH HEALTHCARE",
    "RADIOLOGY IMAGING DEPT DEPARTMENT INFIRMARY KLINIK KLINIKUM HOPITAL OSPEDALE PRACTICE SURGERY",
    "MEMORIAL GENERAL SAINT ST REGIONAL COUNTY NHS TRUST FOUNDATION PATIENT NAME DOB BIRTH MRN ID ACC ACCESSION",
    "SEX AGE PHYSICIAN DR DOCTOR OPERATOR SONOGRAPHER REFERRING",
)
MEASUREMENT = re.compile(
    r"\d+([.,]\d+)?\s?(cm|mm|ml|cc|cm2|cm²|mm2|cm/s|m/s|db|hz|khz|mhz|%)\b|\b(D|L|W|H|DIST|AREA|VOL|CIRC)\s?\d\b"
    r"|\bDIST\b|\bAREA\b|\bVOL\b|\bVOLUME\b|\bDEPTH\b",
    re.IGNORECASE,
)
# Words an ultrasound display shows that identify nobody: presets, modes, indices, probe and orientation labels
DISPLAY_WORDS = _words(
    "PRESET GAIN DEPTH FREQ FREQUENCY FOCUS DR DYN RANGE MI TI TIS TIB TIC FPS HZ KHZ MHZ DB CM MM ML CC",
    "GEN RES PEN HAR THI CHI CPA PW CW CFM PDI COLOR COLOUR DOPPLER BMODE MODE ZOOM FREEZE CINE FRAME",
    "PROBE LINEAR CONVEX SECTOR TRANS TRANSVERSE SAG SAGITTAL LONG LONGITUDINAL AX AXIAL COR CORONAL OBL OBLIQUE",
    "RT LT RIGHT LEFT MID UPPER LOWER LOBE POLE ISTHMUS UOQ UIQ LOQ LIQ O'CLOCK OCLOCK CLOCK FN NIPPLE",
    "DIST AREA VOL VOLUME CIRC LENGTH WIDTH HEIGHT RI PI PSV EDV SD VEL ANGLE",
    "BREAST THYROID LIVER KIDNEY ABDOMEN ABD NECK SMALL PARTS PARTS ORGAN SCAN LESION NODULE MASS CYST",
    "US ULTRASOUND SONO ECHO PHANTOM",
)
WORD = re.compile(r"[A-Za-z][A-Za-z']{2,}")


@lru_cache(maxsize=1)
def vocabulary_words() -> frozenset[str]:
    """Organ names and attribute values of every registered vocabulary (they may be written on a scan)."""
    words: set[str] = set()
    for organ in registered_organs():
        words.add(organ.upper())
        vocabulary = load_vocabulary(organ)
        for attribute in vocabulary.attributes.values():
            for canonical, spec in attribute.values.items():
                for value in (canonical, *spec.synonyms):
                    words.update(w.upper() for w in WORD.findall(value))
    return frozenset(words)


def identifying_kinds(text: str) -> set[str]:
    """Why `text` could identify a person or a place (date, time, id, name, institution); empty if it cannot."""
    kinds: set[str] = set()
    if DATE.search(text) or MONTH.search(text):
        kinds.add("date")
    if TIME.search(text):
        kinds.add("time")
    if ID_NUMBER.search(text):
        kinds.add("id")
    if PERSON_NAME_SEPARATOR.search(text):
        kinds.add("name")
    for word in WORD.findall(MEASUREMENT.sub(" ", text)):
        upper = word.upper()
        if upper in INSTITUTION_WORDS:
            kinds.add("institution")
        elif upper not in DISPLAY_WORDS and upper not in vocabulary_words():
            kinds.add("name")  # an unknown word: perhaps a name, perhaps a misread one
    return kinds


def is_measurement(text: str) -> bool:
    """A caliper readout or measurement label ("D1 1.23 cm", "Dist", "Vol 2.1 ml")."""
    return MEASUREMENT.search(text) is not None
