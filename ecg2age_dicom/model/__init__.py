"""Models: cards (:mod:`.card`) and the loaded runtime (:mod:`.runtime`)."""

from ecg2age_dicom.model.card import (
    CardInput,
    CardOutput,
    Metrics,
    ModelCard,
    check_file,
    load_card,
    sha256_of,
)
from ecg2age_dicom.model.runtime import (
    ModelRuntime,
    configure_tensorflow,
    normalize,
    years_from_output,
)

__all__ = [
    "CardInput",
    "CardOutput",
    "Metrics",
    "ModelCard",
    "ModelRuntime",
    "check_file",
    "configure_tensorflow",
    "load_card",
    "normalize",
    "sha256_of",
    "years_from_output",
]
