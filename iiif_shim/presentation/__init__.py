"""The IIIF Presentation API: object records from the institution's own metadata (``sources/``,
``records.py``), manifests and collections built from them (``documents.py``), and the service
that caches records and sizes canvases from the Image API's cached source facts
(``service.py``)."""
