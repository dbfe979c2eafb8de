"""DICOM files for the tests, made with pydicom, with patient identifiers planted in them."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PHI = ("Doe^Jane", "PHI-12345", "19700101", "20200102")


def make_dicom(
    path,
    arr,
    *,
    pi="MONOCHROME2",
    bits_stored=None,
    slope=None,
    intercept=None,
    wc=None,
    ww=None,
    samples=1,
    pixels=True,
    pid="PHI-12345",
    view="PA",
):
    """A minimal DX DICOM (Explicit VR Little Endian) with planted patient identifiers
    (:data:`PHI`) at ``path`` holding ``arr`` (uint8 or uint16, ``(H, W)`` or ``(H, W, S)``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = pid
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20200102"
    ds.PatientSex = "F"
    ds.PatientAge = "045Y"
    ds.Modality = "DX"
    ds.ViewPosition = view
    arr = np.asarray(arr)
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = samples
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = pi
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if wc is not None:
        ds.WindowCenter = wc
        ds.WindowWidth = ww
    if pixels:
        ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
