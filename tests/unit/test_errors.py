"""The exception tree: what each category says of the server behind it, for the circuit, the
retries and the health checks (one table, read from the classes themselves)."""

from __future__ import annotations

import pytest

from iiif_shim.base import errors
from iiif_shim.base.errors import ShimError, UpstreamServerError, unreachable

# class: (status, server failed?, retried?, unreachable?)
TABLE: dict[type[ShimError], tuple[int, bool | None, bool, bool]] = {
    errors.Unreachable: (502, True, True, True),
    errors.ConnectionDropped: (502, True, True, True),
    errors.ConnectTimeout: (504, True, True, True),
    errors.BackendTimeout: (504, True, False, True),
    errors.TruncatedBody: (502, True, False, False),
    errors.UpstreamClientError: (502, False, False, False),
    errors.MalformedAnswer: (502, False, False, False),
    errors.NotAnImage: (502, False, False, False),
    errors.OversizeAnswer: (502, False, False, False),
    errors.RedirectRefused: (502, False, False, False),
    errors.DecompressionBomb: (502, False, False, False),
    errors.NotFound: (404, False, False, False),
    errors.CircuitOpen: (503, None, False, True),
    errors.BackendBusy: (503, None, False, False),
}


@pytest.mark.parametrize("cls", list(TABLE), ids=lambda c: c.__name__)
def test_each_category_says_what_it_means_for_the_server(cls: type[ShimError]) -> None:
    status, failed, retried, down = TABLE[cls]
    error = cls("x")
    assert (error.status, error.server_failed, error.retryable, unreachable(error)) == (
        status,
        failed,
        retried,
        down,
    )


@pytest.mark.parametrize(
    ("code", "retried"), [(500, False), (501, False), (502, True), (503, True), (504, True)]
)
def test_a_5xx_counts_against_the_server_and_only_gateway_ones_are_retried(
    code: int, retried: bool
) -> None:
    error = UpstreamServerError("x", code)
    assert error.server_failed is True and error.retryable is retried and not unreachable(error)


def test_every_category_has_its_own_metrics_name() -> None:
    seen: dict[str, type[ShimError]] = {}
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, ShimError)]
    for cls in classes:
        if "kind" in vars(cls):
            assert cls.kind not in seen, (cls, seen.get(cls.kind))
            seen[cls.kind] = cls
    assert len(seen) > 30
