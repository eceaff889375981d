"""Every use-case error has its own status in the admin API's error envelope."""

from __future__ import annotations

from service.application import errors
from service.entrypoints.api.errors import _USE_CASE_STATUS


def _all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found | {s for c in found for s in _all_subclasses(c)}


def test_every_use_case_error_maps_to_a_status_of_its_own() -> None:
    assert set(_USE_CASE_STATUS) == _all_subclasses(errors.UseCaseError)
    assert {e.code for e in _USE_CASE_STATUS} == {
        "not_found",
        "not_cancellable",
        "conflict",
    }
