"""The IIIF Presentation API: object records from the institution's own metadata (``sources/``,
``records.py``), manifests and collections built from them (``documents.py``), the service that
caches records and sizes canvases from the Image API's cached source facts (``service.py``), the
object page (``pages.py``), the viewer pages (``viewers.py``) and the PDF writer (``pdf.py``)."""
