"""``python -m iiif_shim``: the same as the ``iiif-shim`` command."""

from iiif_shim.cli.main import main

raise SystemExit(main())
