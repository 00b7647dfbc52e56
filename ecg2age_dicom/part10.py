"""Part 10 templates: an instance encoded once, then per instance only the elements that differ.

The report writers' fast path (the SR, :mod:`ecg2age_dicom.sr.template`, and the Encapsulated
PDF, :mod:`ecg2age_dicom.pdf.document`): pydicom writing a whole dataset costs about a
millisecond, most of it bookkeeping that is the same for every report of one kind.
:meth:`Template.of` takes a dataset whose per-instance values are distinct markers, encodes it
with every sequence and item of undefined length (so that an element inside them can change
length without any enclosing length changing) and cuts the encoding around the elements that
hold markers. :meth:`Template.encode` joins the stored pieces with those elements encoded
again by pydicom (``write_data_element``) for one instance (a text or number element is
encoded once for the last few hundred: an ECG's SR and PDF share most of them), and puts its
SOP Instance UID in the File Meta (whose group length is counted again).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element

from ecg2age_dicom.dicomfile import FILE_META_ELEMENTS_START, PART10_PREFIX

ENCODINGS = ["utf_8"]  # ISO_IR 192, the reports' Specific Character Set
_FILE_META_GROUP_LENGTH = 0x00020000
_MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003

Marker = tuple[str, str, object]
"""(name of the value, keyword of the element that holds it, its marker in the template)."""


@dataclass(frozen=True)
class _Slot:
    """A per-instance element of the template: its tag, VR and the name of its value."""

    tag: int
    vr: str
    name: str


def _key(value: object) -> object:
    """What a marker is matched on: numbers to two decimals (FD, DS, UL alike), bytes as
    they are, anything else as text."""
    if isinstance(value, int | float):
        return round(float(value), 2)
    return value if isinstance(value, bytes) else str(value)


def _encoded(element: DataElement) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_data_element(buffer, element, ENCODINGS)
    return buffer.getvalue()


@lru_cache(maxsize=512, typed=True)  # typed: DS 1 and 1.0 are written apart
def _encoded_value(tag: int, vr: str, value: str | int | float) -> bytes:
    """An element of a text or number value, encoded once for the last few reports: the
    SR and the PDF of one ECG share most of theirs (its study, patient and references)."""
    return _encoded(DataElement(tag, vr, value))


def _undefined_lengths(dataset: Dataset) -> None:
    """Encode every sequence and item of ``dataset`` with undefined length (delimiters)."""
    for element in dataset:
        if element.VR == "SQ":
            element.is_undefined_length = True
            for item in element.value:
                item.is_undefined_length_sequence_item = True
                _undefined_lengths(item)


def _slots(
    dataset: Dataset, wanted: Mapping[tuple[int, object], str]
) -> Iterator[tuple[_Slot, bytes]]:
    """Every element of ``dataset`` that holds a marker (matched on tag and value), in
    encoding order, with its encoded bytes."""
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                yield from _slots(item, wanted)
            continue
        name = wanted.get((element.tag, _key(element.value)))
        if name is not None:
            yield _Slot(element.tag, element.VR, name), _encoded(element)


@dataclass(frozen=True)
class Template:
    """An encoding cut around its slots: ``pieces[i]``, slot ``i``, ..., ``pieces[-1]``; and
    its File Meta after the group length, cut around the Media Storage SOP Instance UID."""

    pieces: tuple[bytes, ...]
    slots: tuple[_Slot, ...]
    meta_pieces: tuple[bytes, bytes]

    @classmethod
    def of(cls, marked: Dataset, markers: Iterable[Marker]) -> Template:
        """The template of ``marked`` (with its File Meta), whose every per-instance value is
        one of ``markers``: distinct for each name, and not otherwise found in its element."""
        wanted: dict[tuple[int, object], str] = {}
        for name, keyword, value in markers:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"{keyword!r} is not a DICOM keyword")
            wanted[tag, _key(value)] = name
        _undefined_lengths(marked)
        buffer = io.BytesIO()
        marked.save_as(buffer, enforce_file_format=True)
        encoded = buffer.getvalue()
        meta_length = pydicom.dcmread(io.BytesIO(encoded)).file_meta.FileMetaInformationGroupLength
        end = FILE_META_ELEMENTS_START + meta_length
        meta, body = encoded[FILE_META_ELEMENTS_START:end], encoded[end:]
        uid = _encoded(DataElement(_MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", marked.SOPInstanceUID))
        before, after = meta.split(uid)
        pieces, slots, position = [], [], 0
        for slot, element in _slots(marked, wanted):
            at = body.index(element, position)
            pieces.append(body[position:at])
            slots.append(slot)
            position = at + len(element)
        pieces.append(body[position:])
        return cls(tuple(pieces), tuple(slots), (before, after))

    def encode(self, values: Mapping[str, object]) -> bytes:
        """The Part 10 bytes of the instance with ``values`` by name; a name without a value
        (or None) leaves its element out. ``values["SOPInstanceUID"]`` also goes into the
        File Meta."""
        parts = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            value = values.get(slot.name)
            if isinstance(value, str | int | float):
                parts.append(_encoded_value(slot.tag, slot.vr, value))
            elif value is not None:  # the document itself: too large to keep
                parts.append(_encoded(DataElement(slot.tag, slot.vr, value)))
            parts.append(piece)
        before, after = self.meta_pieces
        uid = _encoded(DataElement(_MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", values["SOPInstanceUID"]))
        meta = before + uid + after
        length = _encoded(DataElement(_FILE_META_GROUP_LENGTH, "UL", len(meta)))
        return PART10_PREFIX + length + meta + b"".join(parts)
