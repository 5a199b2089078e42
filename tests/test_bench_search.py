"""The search benchmark on a small scratch database: its SQL seeding writes the index rows the
write path would, its requests get the right answers, and its plans are index range scans."""

from __future__ import annotations

from pathlib import Path

from loadtests import bench_search


def test_bench_search_small(postgres: str, tmp_path: Path) -> None:
    result = bench_search.measure(tmp_path, f"{postgres}/postgres", False, rows=3000, requests=40)
    assert result["errors"] == 0, result
    assert result["requests"] == 40
    assert result["lookup_p50_ms"] > 0 and result["exact_p50_ms"] > 0
    exact, ranged = result["plans"]["exact"], result["plans"]["range"]
    assert any("Index Scan (attr_index_text)" in line for line in exact), exact
    assert any("Index Scan (attr_index_num)" in line for line in ranged), ranged
    assert not any("Seq Scan" in line for line in exact + ranged)
