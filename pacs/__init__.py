"""pacs: a lightweight PACS — DICOM archive, web viewer and sharing."""

__version__ = "0.1.0"
