"""Every coded concept the ECG-age Structured Report uses, in one place.

No standard code means "age predicted from an ECG" or "ECG age gap", so those come from
this project's private coding scheme ``99ECG2AGE`` (the "99" prefix marks a private scheme in
DICOM PS3.16; the SR declares it in Coding Scheme Identification Sequence). Chronological age
uses LOINC 30525-0 "Age", its usual meaning. Units are UCUM "a" (year).

| concept                    | value       | scheme    | meaning                                  |
|----------------------------|-------------|-----------|------------------------------------------|
| predicted age              | ECGAGE      | 99ECG2AGE | ECG-predicted age                        |
| chronological age          | 30525-0     | LN        | Age                                      |
| age gap                    | ECGAGEGAP   | 99ECG2AGE | ECG age gap (predicted - chronological)  |
| corrected gap              | ECGAGEGAPC  | 99ECG2AGE | ECG age gap corrected for age            |
| its correction (text)      | GAPCORR     | 99ECG2AGE | Age gap correction method                |
| intended use (name)        | INTENDEDUSE | 99ECG2AGE | Intended use of the algorithm            |
| research only (value)      | RESEARCH    | 99ECG2AGE | Not validated for clinical use           |
| clinically validated       | CLINICAL    | 99ECG2AGE | Validated for clinical use               |
| signal quality (text)      | SIGQUALITY  | 99ECG2AGE | ECG signal quality flags                 |
| procedure reported         | 268400002   | SCT       | 12-Lead ECG                              |
| algorithm family           | 123110      | DCM       | Artificial Intelligence                  |
"""

from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99ECG2AGE"

PREDICTED_AGE = Code("ECGAGE", PRIVATE_SCHEME, "ECG-predicted age")
CHRONOLOGICAL_AGE = Code("30525-0", "LN", "Age")
AGE_GAP = Code("ECGAGEGAP", PRIVATE_SCHEME, "ECG age gap (predicted - chronological)")
CORRECTED_AGE_GAP = Code("ECGAGEGAPC", PRIVATE_SCHEME, "ECG age gap corrected for age")
AGE_GAP_CORRECTION = Code("GAPCORR", PRIVATE_SCHEME, "Age gap correction method")
INTENDED_USE = Code("INTENDEDUSE", PRIVATE_SCHEME, "Intended use of the algorithm")
RESEARCH_ONLY = Code("RESEARCH", PRIVATE_SCHEME, "Not validated for clinical use")
CLINICALLY_VALIDATED = Code("CLINICAL", PRIVATE_SCHEME, "Validated for clinical use")
SIGNAL_QUALITY = Code("SIGQUALITY", PRIVATE_SCHEME, "ECG signal quality flags")
TWELVE_LEAD_ECG = codes.SCT._12LeadECG
ARTIFICIAL_INTELLIGENCE = codes.DCM.ArtificialIntelligence
YEARS = codes.UCUM.Year
DEVICE = codes.DCM.Device

PRIVATE_SCHEME_IDENTIFICATION = CodingSchemeIdentificationItem(
    designator=PRIVATE_SCHEME,
    name="ecg2age-dicom ECG age concepts",
    responsible_organization="ecg2age-dicom project",
)
"""The Coding Scheme Identification Sequence item that declares ``99ECG2AGE``."""
