"""Reading radiographs: DICOM, PNG/JPEG/TIFF, and batch sources."""
