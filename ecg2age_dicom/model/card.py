"""Model cards: a model's ``model.toml`` read, validated, and its file checked.

A model is a folder under ``model_zoo/`` with a ``model.toml`` card (name, version, intended
use, file, sha256, modules to import first, input layout and normalisation, output transform,
the age-gap correction, measured metrics).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ecg2age_dicom.age import METHODS, GapCorrection
from ecg2age_dicom.config import describe_problems, read_toml
from ecg2age_dicom.errors import ModelError
from ecg2age_dicom.waveform import ECG, LEADS, to_model_input

_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class _CardSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CardInput(_CardSection):
    """``[input]``: what the model takes."""

    sampling_rate_hz: int = 500
    samples: int = 5000
    leads: tuple[str, ...] = LEADS
    normalization: Literal["per_lead_zscore", "scale"] = "per_lead_zscore"
    scale: float = 1.0
    length_policy: str = "centre crop / centre zero-pad to the input length"

    def model_input(self, ecg: ECG) -> np.ndarray:
        """The (samples, 12) float32 input this card asks for, from a decoded ECG."""
        return to_model_input(ecg, self.sampling_rate_hz, self.samples / self.sampling_rate_hz)


class CardOutput(_CardSection):
    """``[output]``: how to read years from the model's output (years = raw x scale + offset)."""

    key: str | int | None = None
    scale: float = 1.0
    offset: float = 0.0
    units: Literal["a"] = "a"


class CardAgeGap(_CardSection):
    """``[age_gap]``: the correction of the age gap for age (:class:`~ecg2age_dicom.age.
    GapCorrection`), fitted on validation data by ``python -m ecg2age_dicom.training.age_gap``."""

    method: Literal["linear", "quadratic"]
    coefficients: list[float]  # c0, c1[, c2]: the gap expected at an age, by power of age
    fitted_on: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_coefficient_per_power(self) -> CardAgeGap:
        if len(self.coefficients) != METHODS[self.method] + 1:
            raise ValueError(
                f"a {self.method} correction has {METHODS[self.method] + 1} coefficients"
            )
        return self

    def correction(self) -> GapCorrection:
        return GapCorrection(self.method, tuple(self.coefficients), self.fitted_on)


class Metrics(_CardSection):
    """``[metrics.<test set>]``: accuracy on a named test set (omitted keys: not known)."""

    n: int | None = Field(None, ge=1)
    mae: float | None = None
    rmse: float | None = None
    r2: float | None = None
    pearson_r: float | None = None
    source: str = "measured by ecg2age-dicom model evaluate"


class ModelCard(_CardSection):
    """The ``model.toml`` card of one model."""

    name: str
    version: str
    intended_use: str
    validated_for_clinical_use: bool = False
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=1)
    source_url: str = ""
    # Python modules imported before the file is loaded, for models with custom layers (the
    # module registers them with keras.saving.register_keras_serializable); looked up on the
    # import path, then in the card's folder.
    custom_modules: list[str] = []
    input: CardInput = CardInput()
    output: CardOutput = CardOutput()
    age_gap: CardAgeGap | None = None
    metrics: dict[str, Metrics] = {}

    folder: Path = Path(".")

    @field_validator("custom_modules")
    @classmethod
    def _module_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _MODULE_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a Python module name (package.module)")
        return names

    @property
    def gap_correction(self) -> GapCorrection | None:
        """The ``[age_gap]`` correction, when the card defines one."""
        return self.age_gap.correction() if self.age_gap else None

    @property
    def path(self) -> Path:
        """Where the model file is expected."""
        return self.folder / self.file

    @property
    def clinical_use_warning(self) -> str | None:
        """The text SRs and logs carry when the model is not validated for clinical use."""
        if self.validated_for_clinical_use:
            return None
        return f"{self.name} {self.version} is not validated for clinical use."


def load_card(path: Path) -> ModelCard:
    """Read and validate a ``model.toml`` card.

    Raises
    ------
    ModelError
        The card is missing, not TOML, or has an unknown key or a bad value (named).
    """
    data = read_toml(Path(path), "model card", ModelError)
    try:
        return ModelCard(**data, folder=Path(path).parent)
    except ValidationError as exc:
        problems = "; ".join(describe_problems(exc))
        raise ModelError(f"model card {path} is invalid: {problems}") from None


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_file(card: ModelCard) -> None:
    """Refuse a missing model file or one whose sha256 differs from the card's."""
    if not card.path.is_file():
        raise ModelError(
            f"model file {card.path} for {card.name} {card.version} is missing; "
            "`ecg2age-dicom model fetch` downloads it"
        )
    actual = sha256_of(card.path)
    if actual != card.sha256:
        raise ModelError(
            f"model file {card.path} has sha256 {actual} but its card says {card.sha256}: "
            "refusing to load a file that is not the one the card describes"
        )
