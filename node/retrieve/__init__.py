"""Studies fetched from a PACS on request (``dxr-node request``, the web page's form) and the patient's
earlier DXR results read from a PACS for the trend (priors)."""
