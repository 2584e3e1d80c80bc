"""The legacy servers behind the shim: one module per protocol behind one typed contract
(``base.py``), their settings (``settings.py``) and the registry by ``type:`` (``registry.py``)."""
