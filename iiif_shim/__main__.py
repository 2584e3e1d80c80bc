"""``python -m iiif_shim``: the same as the ``iiif-shim`` command."""

from .cli import main

raise SystemExit(main())
