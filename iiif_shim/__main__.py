"""``python -m iiif_shim``: the same as the ``iiif-shim`` command."""

from iiif_shim.cli import main

raise SystemExit(main())
