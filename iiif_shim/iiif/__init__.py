"""The IIIF Image API alone: request syntax (``request.py``), an identifier as one URL segment
(``identifier.py``), resolution to pixels and canonical forms (``resolve.py``), info.json and
the spec's vocabulary (``info.py``, ``profile.py``), and the Content State encoding
(``contentstate.py``). Pure: no I/O library, no image library (the import contract says so)."""
