"""Lossless compression on the way to a partner, never in the archive.

A slow link carries an uncompressed CT slice in about 2.5 times the time of the
same slice in JPEG-LS lossless. When a partner accepts it (for DICOM: it accepted
the compressed syntax in a presentation context we proposed; for DICOMweb: the
partner is configured for it), an instance archived *uncompressed* is read from
the archive, compressed into a temporary file and sent from there. The archive's
own copy is never touched, the SOP Instance UID stays the same (it is the same
instance, only encoded differently, PS3.5 8.2 / 10), and anything that cannot be
compressed is sent as archived.

JPEG-LS lossless (``pyjpegls``) is the default: about 5× faster to encode than
JPEG 2000 lossless (``pylibjpeg-openjpeg``) for about the same ratio on CT.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
)

from pacs.storage.index import InstanceRef

log = logging.getLogger(__name__)

SYNTAXES: dict[str, UID] = {"jpegls": JPEGLSLossless, "j2k": JPEG2000Lossless}
_PLUGINS = {JPEGLSLossless: "pyjpegls", JPEG2000Lossless: "pylibjpeg"}
_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian}
_ENCODE_LOCK = threading.Lock()
# Image storage SOP classes that carry no (integer) Pixel Data: never compress.
_NO_PIXELS_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.104.")


def syntax_for(compression: str) -> UID | None:
    """The transfer syntax of a compression setting ("none" → None)."""
    return SYNTAXES.get(compression)


def eligible(ref: InstanceRef) -> bool:
    """Whether compressing ``ref`` can pay off: an uncompressed image of 8 or 16 bits."""
    return (
        ref.transfer_syntax_uid in _NATIVE
        and bool(ref.rows and ref.columns)
        and ref.bits_allocated in (8, 16)
        and not ref.sop_class_uid.startswith(_NO_PIXELS_PREFIXES)
    )


def dataset_offset(path: Path) -> int:
    """Where the data set starts in a Part 10 file pydicom wrote (preamble, ``DICM``,
    then the File Meta, whose group length (0002,0000) UL comes first: PS3.10 7.1)."""
    with path.open("rb") as fh:
        head = fh.read(144)
    if head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ValueError(f"{path} does not start with a File Meta group length")
    (group_length,) = struct.unpack_from("<I", head, 140)
    return 144 + group_length


def compress_file(
    source: Path, ref: InstanceRef, syntax: UID, spool: Path
) -> tuple[Path, InstanceRef] | None:
    """Write ``source`` compressed to ``syntax`` into a new file in ``spool`` (the caller
    deletes it); returns it with the ref that describes it, or None (send as archived)
    when the codec cannot do this image.

    Raises nothing for a codec failure (it is logged): compression is an optimisation.
    """
    spool.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=spool, prefix="push-", suffix=".dcm")
    os.close(fd)
    target = Path(name)
    try:
        ds = dcmread(source)
        if "PixelData" not in ds:
            target.unlink(missing_ok=True)
            return None
        # Same instance, other encoding: the SOP Instance UID must not change. One encode
        # at a time per process: concurrent JPEG 2000 encodes crash (SIGSEGV in pydicom's
        # pylibjpeg/openjpeg path, seen with two threads).
        with _ENCODE_LOCK:
            ds.compress(syntax, encoding_plugin=_PLUGINS[syntax], generate_instance_uid=False)
        ds.save_as(target, enforce_file_format=True)
        return target, dataclasses.replace(
            ref,
            transfer_syntax_uid=str(syntax),
            dataset_offset=dataset_offset(target),
            size_bytes=target.stat().st_size,
        )
    except Exception as exc:  # every codec fails in its own way
        log.info("sending %s as archived: cannot compress to %s: %s", ref.sop_uid, syntax, exc)
        target.unlink(missing_ok=True)
        return None


@contextmanager
def compressed_copy(
    source: Path, ref: InstanceRef, syntax: UID, spool: Path
) -> Iterator[tuple[Path, InstanceRef] | None]:
    """:func:`compress_file` as a context manager: the copy is removed afterwards."""
    made = compress_file(source, ref, syntax, spool)
    try:
        yield made
    finally:
        if made is not None:
            made[0].unlink(missing_ok=True)
