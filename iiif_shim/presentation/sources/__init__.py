"""Object sources: the institution's own metadata, one module per kind behind one contract
(``base.py``), their settings (``settings.py``) and the registry by ``type:`` (``registry.py``)."""
