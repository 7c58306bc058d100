"""`rayrlhf plot`: PNG curves from synthetic plain and pipeline run directories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rayrlhf.plots import main, plot_run, series

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dumps writes NaN as the bare token NaN, as RunLogger does for a non-finite metric.
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _ppo_rows(n: int = 30) -> list[dict]:
    rows = []
    for step in range(1, n + 1):
        rows.append(
            {
                "step": step,
                "time": 1000.0 + step,
                "reward/mean": 0.1 + 0.02 * step,
                "reward/std": 0.3,
                "kl/mean": 0.001 * step,
                "kl/coef": 0.05 + 0.001 * step,
                "loss/policy": -0.01 * math.sin(step),
                "loss/value": 2.0 / step,
                "policy/entropy": 3.0 - 0.02 * step,
                "policy/clip_fraction": 0.1,
                "value/clip_fraction": 0.05,
                "policy/approx_kl": 0.002,
                "response/length": 20 + step % 5,
                "throughput/tokens_per_s": 500.0 + step,
                "throughput/samples_per_s": 8.0,
                "time/generate": 1.0 + 0.05 * (step % 4),
                "time/score": 0.2,
                "time/reference": 0.3,
                "time/values": 0.3,
                "time/train": 1.5,
                "time/weight_sync": 0.1,
                "time/step": 3.5 + 0.05 * (step % 4),
                "samples": 32.0,
                "policy_version": float(step),
            }
        )
    rows[3]["reward/mean"] = float("nan")  # a non-finite value: that point is skipped
    del rows[5]["kl/mean"]  # a missing key: that point is skipped
    return rows


def _sft_rows() -> list[dict]:
    rows = [
        {"step": s, "time": 1.0 * s, "loss/train": 3.0 / s, "lr": 1e-4, "time/step": 0.5}
        for s in range(1, 41)
    ]
    rows += [{"step": s, "time": 1.0 * s, "eval/loss": 2.5 / s**0.5} for s in (10, 20, 30, 40)]
    rows[7]["loss/train"] = float("inf")
    rows.append({"step": 40, "time": 41.0, "eval/perplexity": float("nan")})
    return rows


def _rm_rows() -> list[dict]:
    rows = [
        {"step": s, "time": 1.0 * s, "loss/train": 0.7 - 0.01 * s, "train/accuracy": 0.5 + s / 80}
        for s in range(1, 31)
    ]
    rows += [
        {"step": s, "time": 1.0 * s, "eval/loss": 0.6, "eval/accuracy": 0.55 + s / 100}
        for s in (10, 20, 30)
    ]
    del rows[2]["train/accuracy"]
    return rows


def _assert_png(path: Path) -> tuple[int, int]:
    """Valid PNG: magic bytes, nonzero size; returns (height, width) in pixels."""
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    height, width = matplotlib.image.imread(path).shape[:2]
    assert height > 100 and width > 100
    return height, width


def test_plain_run_writes_ppo_png(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "metrics.jsonl", _ppo_rows())
    paths = plot_run(tmp_path)
    assert paths == [tmp_path / "plots" / "ppo.png"]
    _assert_png(paths[0])


def test_pipeline_run_writes_every_stage_and_overview(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write_jsonl(run / "sft" / "metrics.jsonl", _sft_rows())
    _write_jsonl(run / "reward_model" / "metrics.jsonl", _rm_rows())
    _write_jsonl(run / "ppo" / "metrics.jsonl", _ppo_rows())
    # A partial last line, as in a run still writing: skipped, not fatal.
    with (run / "ppo" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 31, "reward/me')
    evals = {"before": {"reward/mean": 0.1, "reward/std": 0.2, "kl/mean": 0.0}, "after": {}}
    evals["after"] = {"reward/mean": 0.6, "reward/std": 0.25, "kl/mean": 0.04}
    (run / "ppo" / "eval.json").write_text(json.dumps({**evals, "examples": []}))
    out = tmp_path / "figs"
    paths = plot_run(run, out)
    names = ["sft.png", "reward_model.png", "ppo.png", "overview.png"]
    assert paths == [out / n for n in names]
    sizes = {p.name: _assert_png(p) for p in paths}
    # The overview is one row of three panels: wider than tall.
    assert sizes["overview.png"][1] > 2 * sizes["overview.png"][0]


def test_scalar_reward_model_and_only_eval_rows(tmp_path: Path) -> None:
    """A scalar-score RM (rmse/mae, no accuracy) and a stage whose rows are all eval rows."""
    rows = [{"step": s, "eval/rmse": 1.0 / s, "eval/mae": 0.8 / s} for s in (1, 2, 3)]
    _write_jsonl(tmp_path / "reward_model" / "metrics.jsonl", rows)
    _write_jsonl(tmp_path / "ppo" / "metrics.jsonl", [{"step": 1, "time": 0.0}])
    paths = plot_run(tmp_path)
    # ppo has no plottable key: no ppo.png, and one stage to show means no overview either.
    assert paths == [tmp_path / "plots" / "reward_model.png"]
    _assert_png(paths[0])


@pytest.mark.parametrize(
    "eval_json", ['{"before": {"reward/mean": NaN}, "after": {"reward/mean": 0.4}}', "[1, 2]", "{"]
)
def test_plain_run_tolerates_partial_or_malformed_eval_json(tmp_path: Path, eval_json) -> None:
    _write_jsonl(tmp_path / "metrics.jsonl", _ppo_rows(8))
    (tmp_path / "eval.json").write_text(eval_json)
    _assert_png(plot_run(tmp_path)[0])


def test_series_skips_missing_and_non_finite_and_keeps_latest_step() -> None:
    rows = [
        {"step": 1, "x": 1.0},
        {"step": 2},
        {"step": 3, "x": float("nan")},
        {"step": 4, "x": "text"},
        {"x": 5.0},
        {"step": 1, "x": 9.0},
    ]
    assert series(rows, "x") == ([1.0], [9.0])


def test_main_prints_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_jsonl(tmp_path / "metrics.jsonl", _ppo_rows(8))
    out = tmp_path / "o"
    assert main([str(tmp_path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / "ppo.png")]


def test_main_missing_directory_exits_2(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope"
    assert main([str(missing)]) == 2
    assert f"no such run directory: {missing}" in capsys.readouterr().err


def test_main_directory_without_metrics_exits_2(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path)]) == 2
    assert f"no metrics.jsonl in {tmp_path}" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        plot_run(tmp_path)


def test_main_out_onto_a_file_exits_2_in_one_line(tmp_path: Path, capsys) -> None:
    _write_jsonl(tmp_path / "run" / "metrics.jsonl", _ppo_rows(8))
    taken = tmp_path / "curves.png"
    taken.write_bytes(b"not ours")
    for out in (taken, taken / "sub"):  # the file itself, and a folder that would be under it
        assert main([str(tmp_path / "run"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("rayrlhf plot: ") and str(out) in err
    assert taken.read_bytes() == b"not ours"
