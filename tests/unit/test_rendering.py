"""The pixel pipeline on small generated images whose right answer is known by construction.

Each test writes a DICOM file with pydicom, stores it in a throwaway archive and
checks what :mod:`pacs.viewer.rendering` makes of it: windowing arithmetic,
MONOCHROME1, palettes, YBR, sizes, formats, errors and the caches.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from pacs.archive import Archive, Source
from pacs.bootstrap import build_archive
from pacs.config import load_settings
from pacs.errors import InvalidQuery, NotFound
from pacs.storage.index import InstanceRef
from pacs.viewer import rendering as R
from pacs.viewer.framecache import ByteLRU
from pacs.viewer.rendering import FrameDecodeError, RenderRequest

PNG = "png"


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    # environ={}: the developer's PACS_* variables must not choose the test's storage
    data_dir = tmp_path_factory.mktemp("render-archive")
    yield build_archive(load_settings(environ={}, data_dir=data_dir))


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    R.clear_caches()
    yield
    R.configure_caches(
        frame_bytes=R.DEFAULT_FRAME_CACHE_BYTES,
        output_bytes=R.DEFAULT_OUTPUT_CACHE_BYTES,
        source_bytes=R.DEFAULT_SOURCE_CACHE_BYTES,
    )


def image_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    frames: int | None = None,
    **attrs: Any,
) -> Dataset:
    """A Secondary Capture data set holding ``pixels`` (frames first when ``frames``)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "RENDER"
    ds.PatientName = "RENDER^TEST"
    ds.Modality = "OT"
    colour = pixels.ndim == (4 if frames else 3)
    shape = pixels.shape[1:] if frames else pixels.shape
    ds.Rows, ds.Columns = shape[0], shape[1]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    if frames:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def store(archive: Archive, ds: Dataset, tmp_path: Path) -> InstanceRef:
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = archive.store_file(path, source=Source("import"))
    return archive.instance(result.sop_instance_uid)


def decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)))


def png(archive: Archive, ref: InstanceRef, **request: Any) -> np.ndarray:
    return decode_png(R.render(archive, ref, RenderRequest(format=PNG, **request)))


# ---------------------------------------------------------------- windowing arithmetic


def test_linear_window_follows_ps3_3_c_11_2_1_2() -> None:
    # center 40, width 400: the ramp runs from -160 to 239, exclusive at the top
    values = np.array([-1000, -160.5, -160, 39.5, 239, 239.5, 3000])
    levels = R.window_levels(values, 40, 400)
    assert levels[0] == 0 and levels[1] == 0
    assert levels[-1] == 1 and levels[-2] == 1
    expected = ((values[2:5] - 39.5) / 399 + 0.5).clip(0, 1)
    np.testing.assert_allclose(levels[2:5], expected)
    assert levels[3] == pytest.approx(0.5)


def test_window_of_width_one_is_a_threshold() -> None:
    levels = R.window_levels(np.array([9.0, 9.5, 9.6, 10.0]), 10, 1)
    assert levels.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_linear_exact_and_sigmoid_windows() -> None:
    exact = R.window_levels(np.array([0.0, 50.0, 100.0, 25.0]), 50, 100, "LINEAR_EXACT")
    assert exact.tolist() == [0.0, 0.5, 1.0, 0.25]
    sigmoid = R.window_levels(np.array([-1e6, 50.0, 1e6]), 50, 100, "SIGMOID")
    assert sigmoid[0] == pytest.approx(0) and sigmoid[1] == 0.5 and sigmoid[2] == 1.0


def test_rescaled_ct_renders_through_the_requested_window(archive, tmp_path) -> None:
    # stored = HU + 1024; window 40/400 → grey = round(((HU - 39.5) / 399 + 0.5) * 255)
    hu = np.array([[-1000, -160, 0, 40], [100, 239, 240, 2000]], dtype=np.int16)
    ds = image_dataset(
        (hu + 1024).astype(np.uint16), bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024
    )
    ref = store(archive, ds, tmp_path)
    grey = png(archive, ref, window=(40, 400))
    expected = np.floor(np.clip((hu - 39.5) / 399 + 0.5, 0, 1) * 255 + 0.5)
    assert grey.dtype == np.uint8 and grey.shape == hu.shape
    np.testing.assert_array_equal(grey, expected)


def test_window_function_can_be_chosen_per_request(archive, tmp_path) -> None:
    stored = np.array([[0, 50, 100]], dtype=np.uint16)
    ref = store(archive, image_dataset(stored, VOILUTFunction="SIGMOID"), tmp_path)
    sigmoid = png(archive, ref, window=(50, 100))
    expected = np.floor(255 / (1 + np.exp(-4 * (stored.astype(float) - 50) / 100)) + 0.5)
    np.testing.assert_array_equal(sigmoid, expected)  # [[30, 128, 225]]
    exact = png(archive, ref, window=(50, 100), function="linear-exact")
    assert exact.tolist() == [[0, 128, 255]]
    with pytest.raises(InvalidQuery):
        RenderRequest(function="cubic")


def test_file_window_is_the_default_and_its_first_value_wins(archive, tmp_path) -> None:
    values = np.arange(0, 4000, 250, dtype=np.int16).reshape(4, 4)
    ds = image_dataset(values, WindowCenter=[1000, 3000], WindowWidth=[1000, 10])
    ref = store(archive, ds, tmp_path)
    expected = np.floor(np.clip((values - 999.5) / 999 + 0.5, 0, 1) * 255 + 0.5)
    np.testing.assert_array_equal(png(archive, ref), expected)


def test_float_rescale_and_signed_samples(archive, tmp_path) -> None:
    stored = np.array([[-2000, -1], [0, 1999]], dtype=np.int16)
    ds = image_dataset(stored, RescaleSlope="0.5", RescaleIntercept="10")
    ref = store(archive, ds, tmp_path)
    grey = png(archive, ref, window=(10, 2001))
    modality = stored * 0.5 + 10
    expected = np.floor(np.clip((modality - 9.5) / 2000 + 0.5, 0, 1) * 255 + 0.5)
    np.testing.assert_array_equal(grey, expected)


def test_without_voi_the_frame_value_range_is_stretched(archive, tmp_path) -> None:
    stored = np.array([[100, 200], [300, 500]], dtype=np.uint16)
    ref = store(archive, image_dataset(stored, bits_stored=12), tmp_path)
    np.testing.assert_array_equal(png(archive, ref), [[0, 64], [128, 255]])


def test_8_bit_without_voi_is_shown_as_stored(archive, tmp_path) -> None:
    stored = np.array([[3, 100], [180, 250]], dtype=np.uint8)
    ref = store(archive, image_dataset(stored), tmp_path)
    np.testing.assert_array_equal(png(archive, ref), stored)


def test_garbage_above_bits_stored_is_ignored(archive, tmp_path) -> None:
    clean = np.array([[0, 1024], [2048, 4095]], dtype=np.uint16)
    dirty = clean | np.uint16(0xF000)  # an overlay or junk in the 4 unused bits
    ref = store(archive, image_dataset(dirty, bits_stored=12), tmp_path)
    np.testing.assert_array_equal(png(archive, ref), [[0, 64], [128, 255]])
    raw = R.raw_frame(archive, ref, 0)
    assert np.frombuffer(raw.data, "<u2").tolist() == clean.ravel().tolist()


def test_voi_lut_sequence_when_the_file_has_no_window(archive, tmp_path) -> None:
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 10, 8])  # 4 entries, first input 10, 8-bit output
    item.add_new(0x00283006, "US", [0, 51, 102, 255])
    stored = np.array([[0, 10, 11], [12, 13, 99]], dtype=np.uint16)
    ds = image_dataset(stored, VOILUTSequence=[item])
    ref = store(archive, ds, tmp_path)
    np.testing.assert_array_equal(png(archive, ref), [[0, 0, 51], [102, 255, 255]])
    raw = R.raw_frame(archive, ref, 0)
    assert raw.voi_lut == {
        "first_mapped": 10,
        "bits": 8,
        "data": [0, 51, 102, 255],
        "explanation": "",
    }
    # An explicit window still wins over the file's LUT.
    assert png(archive, ref, window=(50, 100))[0, 0] == 0


def test_modality_lut_sequence_replaces_rescale(archive, tmp_path) -> None:
    item = Dataset()
    item.add_new(0x00283002, "US", [3, 0, 16])
    item.ModalityLUTType = "HU"
    item.add_new(0x00283006, "US", [0, 1000, 4000])
    stored = np.array([[0, 1], [2, 7]], dtype=np.uint16)
    ds = image_dataset(stored, ModalityLUTSequence=[item], WindowCenter=2000, WindowWidth=4001)
    ref = store(archive, ds, tmp_path)
    modality = np.array([[0, 1000], [4000, 4000]])
    expected = np.floor(np.clip((modality - 1999.5) / 4000 + 0.5, 0, 1) * 255 + 0.5)
    np.testing.assert_array_equal(png(archive, ref), expected)
    raw = R.raw_frame(archive, ref, 0)
    assert (raw.dtype, raw.rescale_slope, raw.rescale_intercept) == ("uint16", 1.0, 0.0)
    assert np.frombuffer(raw.data, "<u2").tolist() == modality.ravel().tolist()


def test_monochrome1_is_inverted_and_invert_flips_back(archive, tmp_path) -> None:
    stored = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    ref = store(archive, image_dataset(stored, photometric="MONOCHROME1"), tmp_path)
    np.testing.assert_array_equal(png(archive, ref), 255 - stored)
    np.testing.assert_array_equal(png(archive, ref, invert=True), stored)
    assert R.raw_frame(archive, ref, 0).photometric == "MONOCHROME1"


# ---------------------------------------------------------------- colour


def test_palette_colour_is_looked_up(archive, tmp_path) -> None:
    red = np.array([0, 65535, 0, 32896], dtype="<u2")
    green = np.array([0, 0, 65535, 32896], dtype="<u2")
    blue = np.array([0, 0, 0, 65535], dtype="<u2")
    stored = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    ds = image_dataset(stored, photometric="PALETTE COLOR")
    for colour, table in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", table.tobytes())
    ref = store(archive, ds, tmp_path)
    rgb = png(archive, ref)
    assert rgb.shape == (2, 2, 3)
    assert rgb.tolist() == [[[0, 0, 0], [255, 0, 0]], [[0, 255, 0], [128, 128, 255]]]
    raw = R.raw_frame(archive, ref, 0)
    assert (raw.dtype, raw.samples_per_pixel, raw.photometric) == ("uint8", 3, "RGB")


def test_ybr_full_is_converted_to_rgb(archive, tmp_path) -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [200, 150, 100]]], dtype=np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    ref = store(archive, image_dataset(ybr, photometric="YBR_FULL"), tmp_path)
    out = png(archive, ref).astype(int)
    assert np.abs(out - rgb.astype(int)).max() <= 2


def test_planar_configuration_1_is_interleaved(archive, tmp_path) -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    ds = image_dataset(rgb, photometric="RGB")
    ds.PlanarConfiguration = 1
    ds.PixelData = rgb.transpose(2, 0, 1).tobytes()  # all R, then all G, then all B
    ref = store(archive, ds, tmp_path)
    np.testing.assert_array_equal(png(archive, ref), rgb)
    raw = R.raw_frame(archive, ref, 0)
    assert raw.data == rgb.tobytes()


def test_colour_window_and_invert(archive, tmp_path) -> None:
    rgb = np.array([[[0, 100, 255]]], dtype=np.uint8)
    ref = store(archive, image_dataset(rgb, photometric="RGB"), tmp_path)
    assert png(archive, ref, invert=True).tolist() == [[[255, 155, 0]]]
    assert png(archive, ref, window=(100, 2)).tolist() == [[[0, 255, 255]]]


# ---------------------------------------------------------------- frames, sizes, formats


def test_multi_frame_picks_its_frame_and_refuses_others(archive, tmp_path) -> None:
    frames = np.stack([np.full((4, 6), v, dtype=np.uint8) for v in (10, 20, 30)])
    ref = store(archive, image_dataset(frames, frames=3), tmp_path)
    assert R.frame_count(archive, ref) == 3
    assert png(archive, ref, frame=2)[0, 0] == 30
    assert R.native_frame_bytes(archive, ref, 1) == bytes([20]) * 24
    with pytest.raises(NotFound):
        R.render(archive, ref, RenderRequest(frame=3))
    with pytest.raises(NotFound):
        R.raw_frame(archive, ref, 3)
    with pytest.raises(InvalidQuery):
        RenderRequest(frame=-1)
    # the thumbnail shows the middle frame, in a square or a (width, height) box
    thumb = Image.open(io.BytesIO(R.thumbnail(archive, ref, size=64, format="png")))
    assert np.asarray(thumb)[0, 0] == 20
    boxed = Image.open(io.BytesIO(R.thumbnail(archive, ref, size=(3, 64), format="png")))
    assert boxed.size == (3, 2)


@pytest.mark.parametrize(
    ("native", "box", "fitted"),
    [
        ((512, 512), None, (512, 512)),
        ((512, 512), (256, 256), (256, 256)),
        ((800, 600), (200, 200), (200, 150)),
        ((600, 800), (200, 200), (150, 200)),
        ((100, 50), (400, 400), (100, 50)),  # never enlarged
        ((3, 3), (1, 1), (1, 1)),
        ((1000, 10), (100, 100), (100, 1)),
    ],
)
def test_fit_size_keeps_the_aspect(native, box, fitted) -> None:
    assert R.fit_size(*native, box) == fitted


def test_rendered_size_and_odd_dimensions(archive, tmp_path) -> None:
    ref = store(archive, image_dataset(np.zeros((33, 101), dtype=np.uint16)), tmp_path)
    full = Image.open(io.BytesIO(R.render(archive, ref, RenderRequest())))
    assert full.size == (101, 33) and full.mode == "L"
    small = Image.open(io.BytesIO(R.render(archive, ref, RenderRequest(size=(50, 50)))))
    assert small.size == (50, 16)


def test_formats_and_quality(archive, tmp_path) -> None:
    noise = np.random.default_rng(1).integers(0, 4096, (128, 128), dtype=np.uint16)
    ref = store(archive, image_dataset(noise, bits_stored=12), tmp_path)
    jpeg = R.render(archive, ref, RenderRequest(format="jpeg", quality=95))
    rough = R.render(archive, ref, RenderRequest(format="jpeg", quality=20))
    webp = R.render(archive, ref, RenderRequest(format="webp"))
    lossless = R.render(archive, ref, RenderRequest(format=PNG))
    assert jpeg[:3] == b"\xff\xd8\xff" and rough[:3] == b"\xff\xd8\xff"
    assert len(rough) < len(jpeg)
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    assert decode_png(lossless).shape == (128, 128)
    with pytest.raises(InvalidQuery):
        RenderRequest(format="gif")  # type: ignore[arg-type]
    with pytest.raises(InvalidQuery):
        RenderRequest(quality=0)
    with pytest.raises(InvalidQuery):
        RenderRequest(window=(40, 0))
    with pytest.raises(InvalidQuery):
        RenderRequest(size=(0, 10))


def test_one_bit_float_and_32_bit_images(archive, tmp_path) -> None:
    bits = np.array([[0, 1, 1, 0, 1, 0, 0, 1]] * 2, dtype=np.uint8)
    ds = image_dataset(bits)
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelData = np.packbits(bits, bitorder="little").tobytes()
    ref = store(archive, ds, tmp_path)
    np.testing.assert_array_equal(png(archive, ref), bits * 255)

    dose = np.array([[0, 1 << 20], [1 << 24, 1 << 30]], dtype=np.uint32)
    ref = store(archive, image_dataset(dose, Modality="RTDOSE", DoseGridScaling="1e-6"), tmp_path)
    assert png(archive, ref)[1, 1] == 255
    raw = R.raw_frame(archive, ref, 0)
    assert raw.dtype == "float32" and raw.rescale_slope == pytest.approx(1e-6)

    values = np.array([[-1.5, 0.0], [2.5, np.nan]], dtype=np.float32)
    ds = image_dataset(np.zeros((2, 2), dtype=np.uint32))
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.tobytes()
    ref = store(archive, ds, tmp_path)
    assert png(archive, ref, window=(0.5, 4)).tolist() == [[0, 128], [255, 128]]
    raw = R.raw_frame(archive, ref, 0)
    assert raw.dtype == "float32" and (raw.min_value, raw.max_value) == (-1.5, 2.5)


def test_one_bit_frames_that_do_not_start_on_a_byte(archive, tmp_path) -> None:
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 2, (3, 5, 5), dtype=np.uint8)  # 25 bits per frame
    frames[2] = 1  # a frame all set is still white
    ds = image_dataset(frames, frames=3)
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelData = np.packbits(frames.ravel(), bitorder="little").tobytes()
    ref = store(archive, ds, tmp_path)
    for index in range(3):
        np.testing.assert_array_equal(png(archive, ref, frame=index), frames[index] * 255)
        packed = np.packbits(frames[index].ravel(), bitorder="little").tobytes()
        assert R.native_frame_bytes(archive, ref, index) == packed
        assert R.stored_frame_bytes(archive, ref, index) == (packed, ExplicitVRLittleEndian)


def test_big_endian_native_data(archive, tmp_path) -> None:
    stored = np.array([[1, 258], [-3, 1000]], dtype=np.int16)
    ds = image_dataset(stored, WindowCenter=0, WindowWidth=2000)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.PixelData = stored.astype(">i2").tobytes()
    path = tmp_path / "be.dcm"
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=False)
    ref = archive.instance(archive.store_file(path, source=Source("import")).sop_instance_uid)
    assert np.frombuffer(R.native_frame_bytes(archive, ref, 0), "<i2").tolist() == [
        1,
        258,
        -3,
        1000,
    ]
    data, syntax = R.stored_frame_bytes(archive, ref, 0)
    assert syntax == ExplicitVRLittleEndian and data == stored.astype("<i2").tobytes()


# ---------------------------------------------------------------- encapsulated data and errors


def test_rle_frames_stored_and_native(archive, tmp_path) -> None:
    frames = np.stack([np.full((8, 8), v, dtype=np.uint16) for v in (100, 4000)])
    ds = image_dataset(frames, frames=2, bits_stored=12)
    ds.compress(RLELossless, encoding_plugin="pydicom")
    ref = store(archive, ds, tmp_path)
    data, syntax = R.stored_frame_bytes(archive, ref, 1)
    assert syntax == RLELossless and data[:4] == b"\x02\x00\x00\x00"  # RLE header: 2 segments
    assert R.native_frame_bytes(archive, ref, 1) == frames[1].astype("<u2").tobytes()
    native = R.native_frame(archive, ref, 1)
    assert (native.bits_allocated, native.photometric, native.planar_configuration) == (
        16,
        "MONOCHROME2",
        0,
    )


def test_undecodable_pixels_raise_frame_decode_error(archive, tmp_path) -> None:
    ds = image_dataset(np.zeros((16, 16), dtype=np.uint16))
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 this is not a codestream"])
    ds["PixelData"].VR = "OB"
    ref = store(archive, ds, tmp_path)
    with pytest.raises(FrameDecodeError) as caught:
        R.render(archive, ref, RenderRequest())
    assert caught.value.http_status == 422
    assert caught.value.reason.startswith("JPEG 2000 data could not be decoded")
    # the frame as stored is still available, undecoded
    assert R.stored_frame_bytes(archive, ref, 0)[1] == JPEG2000Lossless


def test_a_frame_too_large_to_decode_is_refused(archive, tmp_path) -> None:
    ds = image_dataset(np.zeros((2, 2), dtype=np.uint16))
    ds.Rows = ds.Columns = 40000  # 3 GB once decoded; the file holds 8 bytes
    ref = store(archive, ds, tmp_path)
    with pytest.raises(FrameDecodeError, match="larger than this server decodes"):
        R.render(archive, ref, RenderRequest())


def test_instance_without_pixels_is_not_found(archive, tmp_path) -> None:
    ds = image_dataset(np.zeros((2, 2), dtype=np.uint8))
    del ds.PixelData
    ref = store(archive, ds, tmp_path)
    assert R.frame_count(archive, ref) == 0
    with pytest.raises(NotFound):
        R.render(archive, ref, RenderRequest())
    with pytest.raises(NotFound):
        R.thumbnail(archive, ref)


def test_new_content_under_the_same_sop_uid_is_never_served_stale(archive, tmp_path) -> None:
    ds = image_dataset(np.full((2, 2), 10, dtype=np.uint8))
    first = store(archive, ds, tmp_path)
    assert png(archive, first)[0, 0] == 10
    ds.PixelData = np.full((2, 2), 200, dtype=np.uint8).tobytes()
    (tmp_path / f"{ds.SOPInstanceUID}.dcm").unlink()
    second = store(archive, ds, tmp_path)
    assert second.sha256 != first.sha256
    assert png(archive, second)[0, 0] == 200


# ---------------------------------------------------------------- overlays


def test_overlay_planes_masks_and_burn_in(archive, tmp_path) -> None:
    mask = np.zeros((4, 8), dtype=np.uint8)
    mask[1, 2:6] = 1
    ds = image_dataset(np.zeros((6, 10), dtype=np.uint8))
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000050, "SS", [2, 3])  # 1-based: row 2, column 3
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", np.packbits(mask, bitorder="little").tobytes())
    ref = store(archive, ds, tmp_path)
    (plane,) = R.overlay_planes(archive, ref, 0)
    assert (plane.group, plane.rows, plane.columns, plane.origin, plane.type) == (
        0x6000,
        4,
        8,
        (1, 2),
        "G",
    )
    np.testing.assert_array_equal(plane.mask, mask.astype(bool))
    assert plane.packed() == np.packbits(mask).tobytes()
    burnt = png(archive, ref, overlays=True)
    assert burnt[2, 4:8].tolist() == [255] * 4 and burnt.sum() == 255 * 4
    overlay = decode_png(R.overlay_png(archive, ref, 0) or b"")
    assert overlay.shape == (6, 10, 4) and overlay[2, 4, 3] == 255 and overlay[0, 0, 3] == 0


def test_enhanced_multi_frame_uses_per_frame_window(archive, tmp_path) -> None:
    frames = np.stack([np.full((2, 2), 1000, dtype=np.uint16)] * 2)

    def group(center: float, intercept: float) -> Dataset:
        voi, transform, item = Dataset(), Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = center, 2
        transform.RescaleSlope, transform.RescaleIntercept = 1, intercept
        item.FrameVOILUTSequence = [voi]
        item.PixelValueTransformationSequence = [transform]
        return item

    ds = image_dataset(frames, frames=2)
    ds.PerFrameFunctionalGroupsSequence = [group(500, -500), group(0, -2000)]
    ref = store(archive, ds, tmp_path)
    assert png(archive, ref, frame=0)[0, 0] == 255  # 500 at center 500 → upper half
    assert png(archive, ref, frame=1)[0, 0] == 0  # -1000 far below center 0
    assert R.raw_frame(archive, ref, 1).rescale_intercept == -2000


# ---------------------------------------------------------------- caches and prefetch


def test_byte_lru_evicts_least_recently_used() -> None:
    cache: ByteLRU[str, bytes] = ByteLRU(100, len)
    cache.put("a", b"x" * 40)
    cache.put("b", b"x" * 40)
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("c", b"x" * 40)
    assert "b" not in cache and "a" in cache and "c" in cache
    cache.put("huge", b"x" * 101)  # larger than the budget: never kept
    assert "huge" not in cache
    stats = cache.stats()
    assert stats.bytes == 80 and stats.evictions == 1
    cache.set_budget(40)
    assert len(cache) == 1


def test_byte_lru_loads_once_for_concurrent_callers_and_never_caches_errors() -> None:
    cache: ByteLRU[str, bytes] = ByteLRU(1000, len)
    calls = []
    gate = threading.Event()

    def load() -> bytes:
        calls.append(1)
        gate.wait(5)
        return b"value"

    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_load("k", load)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    time.sleep(0.05)  # let every thread reach the cache before the load finishes
    gate.set()
    for t in threads:
        t.join()
    assert results == [b"value"] * 4 and len(calls) == 1

    def fail() -> bytes:
        raise FrameDecodeError("broken")

    for _ in range(2):
        with pytest.raises(FrameDecodeError):
            cache.get_or_load("bad", fail)
    assert "bad" not in cache


def test_decoded_frames_respect_the_byte_budget(archive, tmp_path) -> None:
    frames = np.zeros((5, 64, 64), dtype=np.uint16)  # 8 KiB per frame
    ref = store(archive, image_dataset(frames, frames=5), tmp_path)
    R.configure_caches(frame_bytes=20_000, output_bytes=0)
    for index in range(5):
        R.render(archive, ref, RenderRequest(frame=index))
    stats = {s.name: s for s in R.cache_stats()}["decoded frames"]
    assert stats.entries == 2 and stats.bytes <= 20_000 and stats.evictions == 3


def test_prefetch_decodes_every_frame_in_the_background(archive, tmp_path) -> None:
    refs = [
        store(archive, image_dataset(np.full((3, 8, 8), i, np.uint8), frames=3), tmp_path)
        for i in range(4)
    ]
    job = R.prefetch(archive, refs)
    assert job.wait(30)
    assert job.frames == 12
    stats = {s.name: s for s in R.cache_stats()}["decoded frames"]
    assert stats.entries == 12
    again = R.prefetch(archive, refs)
    assert again.wait(30) and again.frames == 0  # already cached: nothing to do


def test_rendered_images_are_shared_through_the_disk(archive, tmp_path, monkeypatch) -> None:
    """What one worker rendered, another serves from disk without decoding anything."""
    from pacs.viewer.rendered_files import RenderedFiles

    ref = store(archive, image_dataset(np.arange(64, dtype=np.uint16).reshape(8, 8)), tmp_path)
    R.configure_rendered_files(RenderedFiles(tmp_path / "rendered", 1 << 20, archive.has_study))
    try:
        first = R.render(archive, ref, RenderRequest(format=PNG))
        R.clear_caches()  # as in another worker process

        def no_decoding(*args: Any) -> Any:
            raise AssertionError("rendered again instead of read from disk")

        monkeypatch.setattr(R, "_load_source", no_decoding)
        assert R.render(archive, ref, RenderRequest(format=PNG)) == first
        with pytest.raises(AssertionError):  # another request is another image
            R.render(archive, ref, RenderRequest(format=PNG, window=(10, 20)))
        assert (tmp_path / "rendered" / ref.study_uid).is_dir()
    finally:
        R.configure_rendered_files(None)
