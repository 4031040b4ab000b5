"""`scripts/experiment.py` end to end on digits: runs kept, paired summary, diagnostics, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--dataset digits --imbalance_ratio 10 --image_size 12 --projection_dim 16 --num_anchors 10 "
        "--per_device_batch_size 64 --num_epochs 2 --gh_warmup_epochs 1 --gh_ramp_epochs 1 "
        "--prior_every_epochs 1 --lr_warmup_epochs 0 --sinkhorn_iterations 50 --knn_at_end false "
        "--checkpoint_every_epochs 0")  # fmt: skip
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": str(ROOT)}  # fmt: skip


def run_experiment(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "experiment.py"), "--preset", "demo", "--seeds", "0",
               "--arms", "simclr,simclr_gh_known", "--linear_epochs", "3", "--protocols", "knn,linear",
               "--work_dir", str(tmp_path / "work"), "--results_dir", str(tmp_path / "results"),
               "--extra", TINY, *extra]  # fmt: skip
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900, cwd=ROOT)


def test_a_single_seed_shows_its_value_and_several_their_sample_std():
    from gh_hf.experiment import _mean_std

    assert _mean_std([87.42]) == "87.42"  # not "87.42 ± 0.00": one seed says nothing of the spread
    assert _mean_std([0.32], signed=True) == "+0.32"
    assert _mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00"
    assert _mean_std([-1.0, -2.0], signed=True) == "-1.50 ± 0.71"


def test_each_base_forks_its_arms_from_its_first_gh_arm(tmp_path):
    from gh_hf.experiment import Experiment

    work = os.path.relpath(tmp_path / "work", ROOT)
    arms = ["simclr", "simclr_gh_known", "simclr_gh", "focal", "bcl_gh", "bcl", "sdclr"]
    # the first GH arm in ARMS order (simclr_gh), not in the call's order; focal and sdclr have no
    # GH sibling here; bcl_gh is its base's source and no fork itself
    assert Experiment(arms=arms, work_dir=work).warmup_sources(0) == {
        "simclr": "simclr_gh",
        "simclr_gh_known": "simclr_gh",
        "bcl": "bcl_gh",
    }
    assert Experiment(arms=arms, work_dir=work, share_warmup=False).warmup_sources(0) == {}
    # The aligned-anchor arms differ only after the warm-up (--anchor_alignment acts at the GH start).
    aligned = Experiment(arms=["simclr", "simclr_gh_known_aligned", "simclr_gh_known"], work_dir=work)
    assert aligned.warmup_sources(0) == {
        "simclr": "simclr_gh_known",
        "simclr_gh_known_aligned": "simclr_gh_known",
    }
    no_warmup = Experiment(arms=arms, work_dir=work, extra=["--gh_warmup_epochs", "0"])
    assert no_warmup.warmup_sources(0) == {}
    # Arms run side by side in separate processes: a warm-up another process keeps is a source too.
    alone = Experiment(arms=["simclr_gh_known"], work_dir=work)
    assert alone.warmup_sources(0) == {}
    (tmp_path / "work" / "simclr_gh_seed1" / "checkpoints" / "warmup").mkdir(parents=True)
    assert alone.warmup_sources(0) == {} and alone.warmup_sources(1) == {"simclr_gh_known": "simclr_gh"}
    # A kept warm-up is never trained again, whichever GH arm of the base kept it (here the known-prior
    # arm's): the estimated-prior arm forks from it too, and the sibling's own kept warm-up wins.
    (tmp_path / "work" / "simclr_gh_known_seed2" / "checkpoints" / "warmup").mkdir(parents=True)
    assert Experiment(arms=["simclr", "simclr_gh"], work_dir=work).warmup_sources(2) == {
        "simclr": "simclr_gh_known",
        "simclr_gh": "simclr_gh_known",
    }
    assert Experiment(arms=arms, work_dir=work).warmup_sources(1) == {
        "simclr": "simclr_gh",
        "simclr_gh_known": "simclr_gh",
        "bcl": "bcl_gh",
    }


def test_summary_names_pairs_trained_on_different_hardware(tmp_path):
    from gh_hf.experiment import Experiment, hardware_notes

    experiment = Experiment(arms=["simclr", "simclr_gh"], results_dir=str(tmp_path))
    for name, hardware in [("simclr_seed0", "CPU: Intel Xeon (x86_64), 2 cores"),
                           ("simclr_gh_seed0", "CPU: Intel Xeon (x86_64), 2 cores"),
                           ("simclr_seed1", "CPU: Intel Xeon (x86_64), 2 cores"),
                           ("simclr_gh_seed1", "CPU: AMD EPYC (x86_64), 2 cores")]:  # fmt: skip
        experiment.run_dir(name).mkdir(parents=True)
        (experiment.run_dir(name) / "run_info.json").write_text(json.dumps({"hardware": hardware}))
    notes = hardware_notes(experiment, [0, 1, 2])  # seed 2 has no runs: nothing to compare
    assert notes[2:] == [
        "- SimCLR + GH (estimated prior), seed 1: simclr on CPU: Intel Xeon (x86_64), 2 cores, "
        "simclr_gh on CPU: AMD EPYC (x86_64), 2 cores.",
        "",
    ]
    assert hardware_notes(experiment, [0]) == []


def _report(accuracy: float, few_cosine: float | None) -> dict:
    metrics = {
        "accuracy": accuracy,
        "many": accuracy,
        "medium": accuracy,
        "few": accuracy,
        "per_class_std": 0.1,
    }
    report = {"results": {"encoder": {"knn": {"metrics": metrics}}}}
    if few_cosine is not None:
        groups = {"overall": 0.9, "many": 0.5, "medium": 0.6, "few": few_cosine}
        entry = {group: {"centroid_accuracy": accuracy, "neighbour_cosine": value, "concentration": 0.7}
                 for group, value in groups.items()}  # fmt: skip
        report["geometry"] = {"encoder": entry}
    return report


def test_summary_pairs_the_class_geometry_of_the_runs_that_have_it(tmp_path):
    from gh_hf.experiment import Experiment, summarise

    experiment = Experiment(arms=["simclr", "simclr_gh"], results_dir=str(tmp_path), protocols="knn")
    reports = {"simclr_seed0": _report(0.80, 0.90), "simclr_gh_seed0": _report(0.81, 0.85),
               "simclr_seed1": _report(0.82, 0.88), "simclr_gh_seed1": _report(0.83, 0.80),
               "simclr_seed2": _report(0.80, None), "simclr_gh_seed2": _report(0.84, None)}  # fmt: skip
    for name, report in reports.items():
        experiment.run_dir(name).mkdir(parents=True)
        (experiment.run_dir(name) / "benchmark.json").write_text(json.dumps(report))
    lines = summarise(experiment).splitlines()
    # Accuracy pairs over all three seeds; geometry pairs over the two benchmarked with it.
    (knn_pair,) = [line for line in lines if line.startswith("| SimCLR + GH (estimated prior) | 3 |")]
    assert knn_pair.startswith("| SimCLR + GH (estimated prior) | 3 | +2.00 ± 1.73 |")  # 1, 1 and 4 points
    (geometry_pair,) = [line for line in lines if line.startswith("| SimCLR + GH (estimated prior) | 2 |")]
    cells = [cell.strip() for cell in geometry_pair.strip("|").split("|")]
    # NCM overall / Many / Medium / Few in points, nearest cos and concentration Many / Medium / Few
    assert cells[2:6] == ["+1.00 ± 0.00"] * 4
    assert cells[6:9] == ["+0.000 ± 0.000", "+0.000 ± 0.000", "-0.065 ± 0.021"]
    assert cells[9:] == ["+0.000 ± 0.000"] * 3
    simclr_row = "| simclr | 2 | " + " | ".join(["81.00 ± 1.41"] * 4) + " | 0.500 ± 0.000 | 0.600 ± 0.000 |"
    assert any(line.startswith(simclr_row + " 0.890 ± 0.014 |") for line in lines)


@pytest.mark.slow
def test_experiment_keeps_runs_summarises_pairs_and_resumes(tmp_path):
    # --runs_only (arms side by side in separate processes): the arms' runs, nothing shared
    result = run_experiment(tmp_path, "--runs_only")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = tmp_path / "results" / "runs"
    assert sorted(path.name for path in runs.iterdir()) == ["simclr_gh_known_seed0", "simclr_seed0"]
    assert not (tmp_path / "results" / "summary.md").exists()
    assert not (tmp_path / "results" / "seed0").exists()
    result = run_experiment(tmp_path, "--reuse")  # the runs kept; the pixel floor and reports added
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "scripts/pretrain.py" not in result.stdout
    assert sorted(path.name for path in runs.iterdir()) == [
        "pixels_seed0",
        "simclr_gh_known_seed0",
        "simclr_seed0",
    ]
    known = runs / "simclr_gh_known_seed0"
    assert {"log.jsonl", "training_args.json", "run_info.json", "benchmark.json", "prior.png"} <= {
        path.name for path in known.iterdir()
    }
    args = json.loads((known / "training_args.json").read_text())
    assert args["data"]["class_order"] == "permuted" and args["training"]["class_prior"].endswith(".json")
    counts = json.loads((runs / "pixels_seed0" / "benchmark.json").read_text())["dataset"]["class_counts"]
    assert (
        counts
        == json.loads((runs / "simclr_seed0" / "benchmark.json").read_text())["dataset"]["class_counts"]
    )
    summary = (tmp_path / "results" / "summary.md").read_text()
    for row in ("| simclr | 1 |", "| simclr_gh_known | 1 |", "| pixels | 1 |",
                "| SimCLR + GH (known prior) | 1 |", "| simclr_gh_known_seed0 |"):  # fmt: skip
        assert row in summary, summary
    # Every run is benchmarked with its class geometry too: one more arm table and pair table.
    assert (
        "| Arm (class geometry) | Seeds | NCM acc. |" in summary
        and "| Pair (class geometry) | Seeds |" in summary
    )
    assert summary.count("| SimCLR + GH (known prior) | 1 |") == 3  # knn, linear, geometry
    seed_report = json.loads((tmp_path / "results" / "seed0" / "results.json").read_text())
    assert (
        len(seed_report["geometry"]) == 3
        and "nearest cos Few" in (tmp_path / "results" / "seed0" / "results.md").read_text()
    )
    assert (tmp_path / "results" / "seed0" / "per_class_accuracy.png").exists()
    commands = (tmp_path / "results" / "commands.md").read_text()
    assert commands.count("scripts/pretrain.py") == 2 and commands.count("scripts/benchmark.py") == 3
    # The GH arm trains the seed's warm-up first and keeps it; SimCLR starts its second stage from it.
    gh_line, simclr_line = [line for line in commands.splitlines() if "scripts/pretrain.py" in line]
    assert "simclr_gh_known_seed0" in gh_line and "--save_warmup_checkpoint true" in gh_line
    warmup = os.path.relpath(tmp_path / "work" / "simclr_gh_known_seed0" / "checkpoints" / "warmup", ROOT)
    assert f"--resume_from_checkpoint {warmup}" in simclr_line
    simclr_log = [json.loads(line) for line in (runs / "simclr_seed0" / "log.jsonl").read_text().splitlines()]
    (fork,) = [row for row in simclr_log if "forked_from" in row]
    assert fork["forked_from"] == warmup and fork["step"] > 0
    assert "# gh_hf revision" in commands and str(ROOT) not in commands  # paths relative to the checkout

    again = run_experiment(tmp_path, "--reuse")  # everything kept: nothing is trained or benchmarked again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "scripts/pretrain.py" not in again.stdout and "scripts/benchmark.py" not in again.stdout
    assert (tmp_path / "results" / "summary.md").read_text() == summary
    assert (tmp_path / "results" / "commands.md").read_text() == commands

    (tmp_path / "results" / "summary.md").unlink()
    (tmp_path / "results" / "seed0" / "results.md").unlink()
    rewritten = run_experiment(tmp_path, "--summary_only")  # the reports again, from the kept runs
    assert rewritten.returncode == 0, rewritten.stderr[-3000:]
    assert "scripts/pretrain.py" not in rewritten.stdout
    assert (tmp_path / "results" / "summary.md").read_text() == summary
    assert (tmp_path / "results" / "seed0" / "results.md").exists()

    changed = run_experiment(tmp_path, "--reuse", "--extra", TINY + " --num_epochs 3")  # another schedule
    assert changed.returncode == 2, changed.stderr[-3000:]
    assert "the kept run simclr_gh_known_seed0" in changed.stderr  # the warm-up's source is checked first
    assert "num_epochs: kept 2, now 3" in changed.stderr
    assert "scripts/pretrain.py" not in changed.stdout
