"""``python -m ecg2age_dicom`` is the ``ecg2age-dicom`` command."""

from ecg2age_dicom.cli import main

raise SystemExit(main())
