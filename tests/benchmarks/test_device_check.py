"""The one-command accelerator check runs end to end at CPU sizes (so it never rots)."""

import json

from eggroll.benchmarks import cli


def test_device_check_runs_every_part_at_tiny_sizes(tmp_path, capsys):
    argv = ["device-check", "--tiny", "--repeats", "1", "--results-dir", str(tmp_path)]
    assert cli.main(argv) == 0
    result = json.loads((tmp_path / "device-check.json").read_text())
    parts = [row["part"] for row in result["rows"]]
    assert parts == ["layer", "layer", "egg", "llm"]
    layer = {row["noise"]: row for row in result["rows"] if row["part"] == "layer"}
    assert set(layer) == {"table", "keys"}
    for row in result["rows"]:
        ratios = [v for k, v in row.items() if "_vs_" in k]
        assert ratios and all(r > 0 for r in ratios), row
    assert [r["population"] for r in result["rows"] if r["part"] == "egg"] == [8]
    assert "EGG 2 x 32, N=8" in capsys.readouterr().out
