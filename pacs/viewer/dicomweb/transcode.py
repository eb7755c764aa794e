"""Re-encoding a stored instance in another transfer syntax, for WADO-RS and WADO-URI
clients that cannot read the stored one.

What we can produce: the two native little-endian syntaxes from anything pydicom
can decode, and the lossless encodings we have encoders for (RLE, JPEG-LS,
JPEG 2000) from native pixels. A lossy target is offered only when the instance
is already stored in it (re-encoding lossy would lose more). Non-pixel objects
(SR, RT plans…) only change their data set encoding.

Text values are never decoded here, so their bytes (and Specific Character Set)
go through unchanged.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite, write_file_meta_info
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from pacs.errors import PacsError

NATIVE_TARGETS = frozenset({str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)})
ENCODED_TARGETS = frozenset({str(RLELossless), str(JPEGLSLossless), str(JPEG2000Lossless)})


class TranscodeError(PacsError):
    """This instance cannot be produced in the requested transfer syntax."""

    http_status = 406
    dicom_status = 0xC000


def can_produce(stored_ts: str, target_ts: str, *, has_pixels: bool) -> bool:
    """Whether ``target_ts`` is worth trying for an instance stored in ``stored_ts``."""
    if target_ts == stored_ts:
        return True
    if target_ts in NATIVE_TARGETS:
        return True
    return target_ts in ENCODED_TARGETS and has_pixels


def transcode(path: Path, target_ts: str, out: BinaryIO) -> None:
    """Write the instance at ``path`` as a Part 10 file in ``target_ts`` to ``out``.

    Raises :class:`TranscodeError` when the pixel data cannot be decoded or
    encoded (the reason says which).
    """
    target = UID(target_ts)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            source = UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
            has_pixels = "PixelData" in ds
            force = False
            if has_pixels and source.is_compressed:
                ds.decompress(as_rgb=True)
            elif has_pixels and not source.is_little_endian:
                # pydicom will not swap bytes when writing: decode, then store little endian.
                ds.pixel_array_options(as_rgb=False)
                array = ds.pixel_array
                ds.PixelData = array.astype(array.dtype.newbyteorder("<")).tobytes()
                force = True
            elif not source.is_little_endian:
                force = True
            if target.is_compressed:
                if not has_pixels:
                    raise TranscodeError(f"{target.name} needs pixel data; this object has none")
                ds.compress(target)
            else:
                ds.file_meta.TransferSyntaxUID = target
            if force:
                # From big endian: pydicom re-encodes the values it decodes, but only
                # outside the File Meta writer, so frame the file ourselves.
                ds.file_meta.TransferSyntaxUID = target
                out.write(b"\x00" * 128 + b"DICM")
                write_file_meta_info(out, ds.file_meta, enforce_standard=True)  # type: ignore[arg-type]
                body = Dataset(ds)
                dcmwrite(
                    out,
                    body,
                    implicit_vr=target.is_implicit_VR,
                    little_endian=True,
                    force_encoding=True,
                )
            else:
                dcmwrite(
                    out,
                    ds,
                    implicit_vr=target.is_implicit_VR,
                    little_endian=True,
                    enforce_file_format=True,
                )
    except TranscodeError:
        raise
    except (
        ValueError,
        NotImplementedError,
        RuntimeError,
        TypeError,
        KeyError,
        AttributeError,
    ) as exc:
        raise TranscodeError(
            f"cannot convert to {target.name or target}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"
        ) from exc
    except np.exceptions.DTypePromotionError as exc:  # pragma: no cover - odd pixel formats
        raise TranscodeError(f"cannot convert to {target.name}: {exc}") from exc
