"""readers.py: PNG/JPEG/DICOM pixel values, LUTs, MONOCHROME1, errors, safe headers."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_fixtures import PHI, make_dicom
from PIL import Image

from raddino_lib.data.readers import (
    ImageReadError,
    is_dicom,
    preprocess_like_rad_dino,
    read_dicom_header,
    read_image,
    safe_dicom_header,
)

# ------------------------------------------------------------------------- PNG / JPEG


def test_png_8bit_and_16bit(tmp_path):
    a8 = np.array([[0, 128], [255, 64]], dtype=np.uint8)
    Image.fromarray(a8).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), a8 / 255.0, atol=1e-6)
    a16 = np.array([[0, 1000], [65535, 32768]], dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "b.png")
    out = read_image(tmp_path / "b.png")
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out, a16 / 65535.0, atol=1e-6)


def test_rgb_and_rgba_flattened_to_luminance(tmp_path):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[1, 0] = (0, 0, 255)
    rgb[1, 1] = (200, 200, 200)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    expect = np.array([[0.299, 0.587], [0.114, 200 / 255]])
    np.testing.assert_allclose(read_image(tmp_path / "c.png"), expect, atol=3e-3)
    rgba = np.concatenate([rgb, np.zeros((2, 2, 1), np.uint8)], axis=2)  # fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "d.png")
    np.testing.assert_allclose(read_image(tmp_path / "d.png"), expect, atol=3e-3)


def test_jpeg_grey(tmp_path):
    a = np.full((16, 16), 100, dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "e.jpg", quality=95)
    out = read_image(tmp_path / "e.jpg")
    assert out.shape == (16, 16)
    assert abs(float(out.mean()) - 100 / 255) < 0.02


def test_bad_raster_files_raise_naming_the_file(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"zero\.png: zero-byte"):
        read_image(tmp_path / "zero.png")
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"t\.png: truncated or undecodable"):
        read_image(tmp_path / "t.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match=r"junk\.png"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(ImageReadError, match=r"nope\.png: image file does not exist"):
        read_image(tmp_path / "nope.png")


# ------------------------------------------------------------------------------ DICOM


def test_dicom_monochrome2_8bit(tmp_path):
    a = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    p = make_dicom(tmp_path / "m2.dcm", a)
    np.testing.assert_allclose(read_image(p), a / 255.0, atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path):
    a = np.zeros((4, 4), dtype=np.uint16)
    a[1, 1] = 65535  # brightest stored value: in MONOCHROME1 that displays black
    p = make_dicom(tmp_path / "m1.dcm", a, pi="MONOCHROME1")
    out = read_image(p)
    assert out[1, 1] == pytest.approx(0.0)
    assert out[0, 0] == pytest.approx(1.0)


def test_dicom_12bit_scaled_by_bits_stored(tmp_path):
    a = np.array([[0, 2048], [4095, 1024]], dtype=np.uint16)
    p = make_dicom(tmp_path / "b12.dcm", a, bits_stored=12)
    np.testing.assert_allclose(read_image(p), a / 4095.0, atol=1e-6)


def test_dicom_12bit_voi_window(tmp_path):
    a = np.array([[1000, 2048], [3000, 1800]], dtype=np.uint16)
    p = make_dicom(tmp_path / "win.dcm", a, bits_stored=12, wc=2048, ww=1024)
    out = read_image(p)
    assert out[0, 0] == pytest.approx(0.0)  # below the window
    assert out[1, 0] == pytest.approx(1.0)  # above the window
    assert out[0, 1] == pytest.approx(0.5, abs=0.01)  # the centre
    assert out[1, 1] == pytest.approx((1800 - 2047.5) / 1023 + 0.5, abs=0.01)


def test_dicom_rescale_applied_before_window(tmp_path):
    # stored 500 -> 2*500 - 1000 = 0 HU-like units: the window centre.
    a = np.array([[400, 500], [600, 4095]], dtype=np.uint16)
    p = make_dicom(tmp_path / "rs.dcm", a, bits_stored=12, slope=2, intercept=-1000, wc=0, ww=200)
    out = read_image(p)
    assert out[0, 0] == pytest.approx(0.0)
    assert out[0, 1] == pytest.approx(0.5, abs=0.01)
    assert out[1, 0] == pytest.approx(1.0)
    # Rescale without a window: scaled by the BitsStored range through the LUT.
    p2 = make_dicom(tmp_path / "rs2.dcm", a, bits_stored=12, slope=2, intercept=-1000)
    np.testing.assert_allclose(read_image(p2), a / 4095.0, atol=1e-6)


def test_dicom_dispatch_by_magic_without_suffix(tmp_path):
    a = np.array([[0, 255]], dtype=np.uint8)
    p = make_dicom(tmp_path / "noext", a)
    assert is_dicom(p)
    np.testing.assert_allclose(read_image(p), [[0.0, 1.0]])


def test_dicom_unsupported_photometric(tmp_path):
    p = make_dicom(tmp_path / "pal.dcm", np.zeros((2, 2), np.uint8), pi="PALETTE COLOR")
    with pytest.raises(ImageReadError, match=r"pal\.dcm: unsupported PhotometricInterpretation"):
        read_image(p)
    p = make_dicom(tmp_path / "ybr.dcm", np.zeros((2, 2, 3), np.uint8), pi="YBR_FULL", samples=3)
    with pytest.raises(ImageReadError, match=r"'YBR_FULL'"):
        read_image(p)


def test_dicom_errors_name_file_and_leak_no_phi(tmp_path):
    msgs = []
    p = make_dicom(tmp_path / "nopix.dcm", np.zeros((2, 2), np.uint8), pixels=False)
    with pytest.raises(ImageReadError, match=r"nopix\.dcm: DICOM has no pixel data") as e:
        read_image(p)
    msgs.append(str(e.value))
    (tmp_path / "zero.dcm").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"zero\.dcm: zero-byte") as e:
        read_image(tmp_path / "zero.dcm")
    msgs.append(str(e.value))
    (tmp_path / "junk.dicom").write_bytes(b"\x01\x02garbage" * 10)
    with pytest.raises(ImageReadError, match=r"junk\.dicom: unreadable DICOM") as e:
        read_image(tmp_path / "junk.dicom")
    msgs.append(str(e.value))
    p = make_dicom(tmp_path / "trunc.dcm", np.arange(4096, dtype=np.uint16).reshape(64, 64))
    data = p.read_bytes()
    p.write_bytes(data[:-3000])
    with pytest.raises(ImageReadError, match=r"trunc\.dcm") as e:
        read_image(p)
    msgs.append(str(e.value))
    for m in msgs:
        for s in PHI:
            assert s not in m


def test_safe_dicom_header_whitelist(tmp_path):
    import pydicom

    p = make_dicom(tmp_path / "h.dcm", np.zeros((3, 5), np.uint16), bits_stored=12, wc=10, ww=4)
    ds = pydicom.dcmread(p)
    h = safe_dicom_header(ds)
    assert h["Modality"] == "DX" and h["ViewPosition"] == "PA"
    assert (h["Rows"], h["Columns"], h["BitsStored"]) == (3, 5, 12)
    assert "sex" not in h and "age" not in h
    hd = read_dicom_header(p, demographics=True)
    assert hd["sex"] == "F" and hd["age"] == 45
    text = repr(h) + repr(hd)
    for s in (*PHI, str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)):
        assert s not in text
    ds.PatientAge = "097Y"
    assert safe_dicom_header(ds, demographics=True)["age"] == 90


# --------------------------------------------------------------------------- geometry


def test_preprocess_like_rad_dino_shorter_side_and_centre_crop():
    img = np.tile(np.linspace(0, 1, 80, dtype=np.float32), (40, 1))  # 40 x 80, x-ramp
    out = preprocess_like_rad_dino(img, 20)
    assert out.shape == (20, 20) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # Resized to 20 x 40 then the middle 20 columns: the ramp's central half.
    assert 0.2 < out[:, 0].mean() < 0.3 and 0.7 < out[:, -1].mean() < 0.8
    tall = preprocess_like_rad_dino(img.T, 20, resample="area")
    assert tall.shape == (20, 20)
    sq = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    np.testing.assert_array_equal(preprocess_like_rad_dino(sq, 32), sq)
    with pytest.raises(ValueError):
        preprocess_like_rad_dino(np.zeros((2, 2, 3)), 4)
