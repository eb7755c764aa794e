"""Decoding with repair of Vietnamese character-set mistakes, and folded search keys."""

import unicodedata
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from pacs.charset import apply_text_codec, detect_text_codec, fold


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b" "
    return (
        group.to_bytes(2, "little")
        + element.to_bytes(2, "little")
        + vr
        + len(value).to_bytes(2, "little")
        + value
    )


def _dataset(raw_name: bytes, charset: str | None) -> Dataset:
    """A data set read from bytes, so its elements are raw as they come from a file."""
    data = b""
    if charset is not None:
        data += _element(0x0008, 0x0005, b"CS", charset.encode())
    data += _element(0x0010, 0x0010, b"PN", raw_name)
    data += _element(0x0010, 0x0020, b"LO", b"ID1")
    return read_dataset(BytesIO(data), is_implicit_VR=False, is_little_endian=True)


def test_utf8_without_a_declared_set_is_decoded_as_utf8() -> None:
    ds = _dataset("Trần^Văn Bảo".encode(), None)
    assert apply_text_codec(ds) == "utf_8"
    assert str(ds.PatientName) == "Trần^Văn Bảo"


def test_utf8_declared_as_latin1_is_decoded_as_utf8() -> None:
    ds = _dataset("Lê^Minh Đức".encode(), "ISO_IR 100")
    assert apply_text_codec(ds) == "utf_8"
    assert str(ds.PatientName) == "Lê^Minh Đức"


def test_windows_1258_declared_as_latin1_is_decoded_and_composed() -> None:
    # "Phạm^Thị Thu Hà" as a Vietnamese Windows PC writes it: tone marks combining.
    raw = b"Pha\xf2m^Thi\xf2 Thu Ha\xcc"
    ds = _dataset(raw, "ISO_IR 100")
    assert apply_text_codec(ds) == "cp1258"
    # Windows-1258 writes tone marks as combining characters; NFC composes them.
    assert unicodedata.normalize("NFC", str(ds.PatientName)) == "Phạm^Thị Thu Hà"
    assert fold(str(ds.PatientName)) == "pham thi thu ha"


def test_real_latin1_is_left_alone() -> None:
    assert detect_text_codec(_dataset("Buc^Jérôme".encode("latin-1"), "ISO_IR 100")) is None
    # A tone-mark byte at the start of a word is not Vietnamese: keep Latin-1.
    assert detect_text_codec(_dataset("Ìsola^Ana".encode("latin-1"), "ISO_IR 100")) is None


def test_declared_multibyte_sets_are_trusted() -> None:
    ds = _dataset("王^小東".encode(), "ISO_IR 192")
    assert detect_text_codec(ds) is None
    assert str(ds.PatientName) == "王^小東"


def test_fold_removes_case_diacritics_and_component_separators() -> None:
    assert fold("Nguyễn^Thị Hồng Nhung") == "nguyen thi hong nhung"
    assert fold("ĐẶNG^VĂN  ĐỨC") == "dang van duc"
    assert fold("nguyen thi*") == "nguyen thi*"
    # Japanese voicing marks change the word: they stay.
    assert "やまだ" in fold("Yamada^Tarou=山田^太郎=やまだ^たろう")
