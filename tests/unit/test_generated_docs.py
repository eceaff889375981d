"""The committed diagrams and event catalogue are what `batchledger docs` generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.entrypoints.cli import main
from statemachine.catalogue import GENERATED
from statemachine.events import ALL_EVENTS, tag_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("rel", sorted(GENERATED))
def test_committed_document_equals_the_generated_one(rel: str) -> None:
    assert (ROOT / rel).read_text(encoding="utf-8") == GENERATED[rel](), (
        f"run `batchledger docs` ({rel})"
    )


def test_docs_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    assert main(["docs", "--root", str(tmp_path)]) == 0
    assert main(["docs", "--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "docs" / "events.md").write_text("stale")
    assert main(["docs", "--check", "--root", str(tmp_path)]) == 1


def test_catalogue_lists_every_event_tag_and_every_tag_is_unique() -> None:
    text = GENERATED["docs/events.md"]()
    tags = [tag_of(e) for e in ALL_EVENTS]
    assert len(set(tags)) == len(tags)
    assert all(f"`{t}`" in text for t in tags)
