"""Token prices per model and the Batch API discount; costs in integer micro-dollars."""

from __future__ import annotations

import msgspec

BATCH_DISCOUNT = 0.5  # the Batch API bills half the synchronous price

# USD per 1M tokens (input, output) at synchronous prices; override with MODEL_PRICES.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-5-mini": (0.25, 2.00),
}


def parse_prices(raw: str) -> dict[str, tuple[float, float]]:
    """MODEL_PRICES: a JSON object `{"model": [input_usd_per_1m, output_usd_per_1m], ...}`."""
    table = msgspec.json.decode(raw, type=dict[str, tuple[float, float]])
    if any(p < 0 for pair in table.values() for p in pair):
        raise ValueError("prices must not be negative")
    return {**DEFAULT_PRICES, **table}


def cost_micro_usd(
    prices: dict[str, tuple[float, float]], model: str, prompt_tokens: int, completion_tokens: int
) -> int:
    """The batch-discounted cost; USD per 1M tokens is exactly micro-USD per token."""
    per_in, per_out = prices.get(model, (0.0, 0.0))
    return round((prompt_tokens * per_in + completion_tokens * per_out) * BATCH_DISCOUNT)
