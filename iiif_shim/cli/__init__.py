"""The ``iiif-shim`` command: serve, check-config, probe and purge."""
