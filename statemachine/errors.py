"""Typed domain errors."""

from __future__ import annotations


class DomainError(Exception):
    """A command the domain refuses."""


class InvalidTransition(DomainError):
    """A trigger that the entity's current state does not allow."""

    def __init__(self, entity: str, entity_id: str, state: str, trigger: str) -> None:
        self.entity = entity
        self.entity_id = entity_id
        self.state = state
        self.trigger = trigger
        super().__init__(f"{entity} {entity_id} in state {state} does not accept {trigger!r}")


class AlreadyExists(DomainError):
    """A command that creates an entity which already exists."""

    def __init__(self, entity: str, entity_id: str) -> None:
        self.entity = entity
        self.entity_id = entity_id
        super().__init__(f"{entity} {entity_id} already exists")


class NotFound(DomainError):
    """A command for an entity that does not exist."""

    def __init__(self, entity: str, entity_id: str) -> None:
        self.entity = entity
        self.entity_id = entity_id
        super().__init__(f"{entity} {entity_id} does not exist")
