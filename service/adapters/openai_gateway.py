"""The only door to OpenAI: the official SDK, with errors sorted into transient and permanent."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import openai
from openai.types import Batch

METADATA_KEY = "batchledger_batch_id"
ENDPOINT = "/v1/chat/completions"


class TransientError(Exception):
    """OpenAI could not answer now (429, 5xx, network): try again on the next tick."""


class PermanentError(Exception):
    """OpenAI refused the call for good (4xx): record it and move on."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def _classify(exc: openai.APIError) -> Exception:
    if isinstance(
        exc, openai.APIConnectionError | openai.RateLimitError | openai.InternalServerError
    ):
        return TransientError(str(exc))
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in (408, 409, 429):
            return TransientError(str(exc))
        return PermanentError(str(exc.code or exc.status_code), exc.message, exc.status_code)
    return TransientError(str(exc))


def error_type(exc: BaseException) -> str:
    """A short label of an OpenAI error, for metrics."""
    if isinstance(exc, openai.APIStatusError):
        return f"http_{exc.status_code}"
    return type(exc).__name__


class OpenAIGateway:
    """Files and batches through `AsyncOpenAI`; every SDK error becomes Transient or Permanent."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client
        self.errors: dict[str, int] = {}

    def _fail(self, exc: openai.APIError) -> Exception:
        label = error_type(exc)
        self.errors[label] = self.errors.get(label, 0) + 1
        return _classify(exc)

    async def upload(self, filename: str, content: bytes) -> str:
        """Upload a batch input file; its id."""
        try:
            # A stream, not bytes: asyncio would copy what the socket does not take at once,
            # a second copy of a file up to 200 MB (httpx rewinds it for a retry).
            f = await self.client.files.create(
                file=(filename, io.BytesIO(content)), purpose="batch"
            )
        except openai.APIError as exc:
            raise self._fail(exc) from exc
        return f.id

    async def create_batch(self, input_file_id: str, batch_id: str) -> Batch:
        """Create the OpenAI batch for our batch, tagged with our id in its metadata."""
        try:
            # Never retried by the SDK: it sends no idempotency key, so a create that timed
            # out (yet was carried out) would be created again on each retry. The next
            # submit finds it by our metadata instead (`find_batch`).
            return await self.client.with_options(max_retries=0).batches.create(
                input_file_id=input_file_id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={METADATA_KEY: batch_id},
            )
        except openai.APIError as exc:
            raise self._fail(exc) from exc

    async def find_batch(self, batch_id: str, *, max_pages: int = 20) -> Batch | None:
        """An OpenAI batch already created for our batch (newest first, a bounded search)."""
        try:
            page = await self.client.batches.list(limit=100)
            for _ in range(max_pages):
                for b in page.data:
                    if (b.metadata or {}).get(METADATA_KEY) == batch_id:
                        return b
                if not page.has_next_page():
                    return None
                page = await page.get_next_page()
        except openai.APIError as exc:
            raise self._fail(exc) from exc
        return None

    async def check(self, seconds: float) -> None:
        """One cheap call that shows OpenAI answers and takes the key; raises as the others."""
        try:
            await self.client.with_options(timeout=seconds, max_retries=0).batches.list(limit=1)
        except openai.APIError as exc:
            raise self._fail(exc) from exc

    async def retrieve(self, openai_batch_id: str) -> Batch:
        """The batch as OpenAI sees it now."""
        try:
            return await self.client.batches.retrieve(openai_batch_id)
        except openai.APIError as exc:
            raise self._fail(exc) from exc

    async def cancel(self, openai_batch_id: str) -> Batch:
        """Ask OpenAI to cancel a batch."""
        try:
            return await self.client.batches.cancel(openai_batch_id)
        except openai.APIError as exc:
            raise self._fail(exc) from exc

    async def lines(self, file_id: str) -> AsyncIterator[bytes]:
        """The lines of a file, streamed: a 200 MB output never sits in memory whole."""
        try:
            async with self.client.files.with_streaming_response.content(file_id) as response:
                buffer = b""
                async for chunk in response.iter_bytes(1 << 20):
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    for line in complete:
                        if line.strip():
                            yield line
                if buffer.strip():
                    yield buffer
        except openai.APIError as exc:
            raise self._fail(exc) from exc


def make_client(
    api_key: str, base_url: str | None, timeout: float, max_retries: int
) -> openai.AsyncOpenAI:
    """An AsyncOpenAI client with explicit timeout and retries."""
    return openai.AsyncOpenAI(
        api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
    )
