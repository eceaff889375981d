"""Errors a use case answers with; the admin API maps each to one status and code."""

from __future__ import annotations


class UseCaseError(Exception):
    """A use case that cannot do what was asked; `code` is stable, the message is for people."""

    code = "use_case_error"


class Missing(UseCaseError):
    """The entity a use case was asked about does not exist."""

    code = "not_found"

    def __init__(self, entity: str, entity_id: str) -> None:
        super().__init__(f"no {entity} {entity_id!r}")


class NotCancellable(UseCaseError):
    """The batch is not (or no longer) running at OpenAI."""

    code = "not_cancellable"


class StillChanging(UseCaseError):
    """The streams a use case read kept moving under it, attempt after attempt."""

    code = "conflict"

    def __init__(self, attempts: int) -> None:
        super().__init__(f"the entities kept changing over {attempts} attempts; try again")
