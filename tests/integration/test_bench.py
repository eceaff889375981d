"""`batchledger bench --quick`: every in-process suite runs and reports what it measured."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from service.entrypoints.cli import build_parser, main
from service.tools.bench.core import Result
from service.tools.bench.runner import SUITES  # importing the runner registers every suite

IN_PROCESS = [
    "append_batched",
    "append_single",
    "read_all",
    "fanout",
    "decide",
    "rebuild",
    "read_latency",
]


def test_quick_bench_writes_every_figure_with_its_same_run_baseline(
    db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", *IN_PROCESS, "--quick", "--json", str(out), "--database-url", db_dsn]
    assert main(args) == 0
    results = msgspec.json.decode(out.read_bytes(), type=dict[str, list[Result]])["results"]
    names = {r.name for r in results}
    assert {"append_batched", "append_batched_keyed", "append_single", "read_all"} <= names
    assert {"rebuild", "decide_rate", "summary_latency_p99", "requests_page_latency_p99"} <= names
    assert "fanout" in names
    for r in results:
        assert r.value > 0, r.name
        if r.baseline is not None:
            assert r.baseline_value
            assert r.ratio == pytest.approx(r.value / r.baseline_value)
    assert "append_batched_keyed" in capsys.readouterr().out


def test_quick_creator_bench_reports_the_peak_rss_of_one_pass_in_a_child_process(
    db_dsn: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "creator", "--quick", "--json", str(out), "--database-url", db_dsn]
    assert main(args) == 0
    results = msgspec.json.decode(out.read_bytes(), type=dict[str, list[Result]])["results"]
    figures = {r.name: r for r in results}
    rss = figures["creator_peak_rss"]
    # The child's own peak, not this test process's: above what it held before the pass.
    assert rss.unit == "MB"
    assert rss.baseline == "before_pass"
    assert rss.baseline_value
    assert rss.baseline_value <= rss.value < 1024
    assert figures["creator_requests"].value == 2_000  # every queued request, planned once
    assert figures["creator_batches"].value == 1
    assert figures["creator_seconds"].value > 0


def test_bench_help_names_every_suite(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert len(SUITES) == 12
    assert [name for name in SUITES if name not in text] == []
