"""ecg2age-dicom: score resting 12-lead DICOM ECGs with ECG2Age, file the result as an SR."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ecg2age-dicom")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
