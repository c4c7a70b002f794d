"""DXR Node: everything that crosses a wire or a disk (DIMSE, DICOMweb, spool, queue, export)."""
