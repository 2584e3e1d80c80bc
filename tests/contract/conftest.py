"""The vips engine's shims, for the tests parametrized by engine (see tests/contract/engines.py)."""

from tests.contract.engines import vips_all_shims, vips_shims

__all__ = ["vips_all_shims", "vips_shims"]
