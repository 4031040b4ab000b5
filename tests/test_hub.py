"""Hub publishing: training export, the model card, results in the card, staging and upload."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard, constants
from safetensors.torch import load_file

from gh_hf import GHConfig, GHForPreTraining
from gh_hf.hub import (
    HubPublishError,
    collect_run_info,
    load_results,
    push_encoder,
    render_model_card,
    stage_encoder,
)
from gh_hf.hub import publish as publish_module
from gh_hf.hub.results import METRICS, percent

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {
    "backbone_kwargs": '{"channels": [8, 16, 32, 64]}',
    "image_size": 16,
    "projection_dim": 16,
    "num_anchors": 10,
}
CODE_FILES = {"configuration_gh.py", "image_processing_gh.py", "modeling_gh.py"}
UPLOADED = {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", *CODE_FILES}
REQUIRED_TAGS = {"self-supervised", "geometric-harmonization", "long-tailed", "timm", "simclr"}


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """An encoder folder as training exports it: tiny model, digits-LT split, a run_info.json."""
    from gh_hf.data import load_image_dataset, make_long_tailed
    from gh_hf.training.arguments import DataArguments, ModelArguments, PretrainingArguments
    from gh_hf.training.export import export_encoder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("run") / "encoder"
    data_args = DataArguments(dataset="digits", imbalance_ratio=10)
    model_args = ModelArguments(**TINY_MODEL)
    training_args = PretrainingArguments(output_dir=str(folder.parent), num_epochs=3, gh_warmup_epochs=1)
    config = GHConfig(**{**model_args.config_kwargs(), "in_chans": 1})
    split = make_long_tailed(load_image_dataset("digits", "train"), 10, max_per_class=100)
    all_args = {"data": asdict(data_args), "model": asdict(model_args), "training": asdict(training_args)}
    accelerator = SimpleNamespace(device=torch.device("cpu"), num_processes=1, mixed_precision="no")
    run_info = collect_run_info(accelerator, wall_time_s=12.34, global_steps=6)
    return export_encoder(GHForPreTraining(config), folder, all_args, split, run_info=run_info)


def _results_json(tmp_path: Path, key: str, with_figure: bool = True) -> Path:
    """A results.json (and plot) as scripts/benchmark.py writes them, for an encoder named `key`."""
    from gh_hf.evaluation import write_outputs
    from gh_hf.evaluation.long_tailed_accuracy.long_tailed_accuracy import class_groups

    counts = [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]
    per_class = [0.9, 0.85, 0.8, 0.7, 0.66, 0.6, 0.5, 0.45, 0.4, 0.31234]
    linear = {"accuracy": 0.61234, "many": 0.85, "medium": 0.6575, "few": 0.3904, "per_class_std": 0.1876}
    knn = {
        "accuracy": 0.55,
        "many": 0.7,
        "medium": 0.5,
        "few": float("nan"),
        "per_class_std": 0.2,
    }  # empty group
    settings = {"protocol": "linear", "linear_epochs": 500, "linear_lr": 0.01, "linear_final_lr": 1e-6}
    report = {
        "dataset": {
            "name": "digits", "class_counts": counts, "grouping": "thirds",
            "groups": class_groups(counts, "thirds"),
            "num_train": 1437, "num_test": 360, "class_names": [str(c) for c in range(10)],
        },
        "protocols": ["linear", "knn"],
        "main_protocol": "linear",
        "results": {
            key: {
                "linear": {"metrics": {**linear, "per_class_accuracy": per_class}, "settings": settings},
                "knn": {"metrics": {**knn, "per_class_accuracy": per_class},
                        "settings": {"protocol": "knn", "k": 200}},
            },
            "other/encoder": {"linear": {"metrics": {**linear, "accuracy": 0.1,
                                                     "per_class_accuracy": [0.1] * 10},
                                         "settings": settings}},
        },
    }  # fmt: skip
    output = tmp_path / "bench"
    write_outputs(report, output)
    if not with_figure:
        (output / "per_class_accuracy.png").unlink()
    return output / "results.json"


def _table_rows(text: str) -> dict[str, list[str]]:
    start = text.index("| Protocol | Overall | Many | Medium | Few | Std |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


# ---- training export ---------------------------------------------------------------------


def test_export_writes_the_encoder_folder(encoder_dir):
    names = {path.name for path in encoder_dir.iterdir()}
    assert names == UPLOADED | {"training_args.json", "long_tailed_split.json", "run_info.json"}
    assert not any(
        key.startswith(("projector", "anchors", "class_prior"))
        for key in load_file(encoder_dir / "model.safetensors")
    )
    split = json.loads((encoder_dir / "long_tailed_split.json").read_text())
    assert split["class_counts"] == [100, 77, 59, 46, 35, 27, 21, 16, 12, 10] and split["num_images"] == 403
    assert split["imbalance_ratio"] == 10 and split["profile"] == "exp" and split["dataset"] == "digits"
    run_info = json.loads((encoder_dir / "run_info.json").read_text())
    assert (
        run_info["wall_time_s"] == 12.3
        and run_info["num_processes"] == 1
        and run_info["hardware"].startswith("CPU")
    )


def test_source_revision_names_the_checkout(tmp_path):
    from gh_hf.hub.run_info import source_revision

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=tmp_path / "repo", check=True, capture_output=True, text=True
        )

    (tmp_path / "repo" / "gh_hf").mkdir(parents=True)
    (tmp_path / "repo" / "gh_hf" / "x.py").write_text("a = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    sha = git("rev-parse", "HEAD").stdout.strip()
    assert source_revision(str(tmp_path / "repo")) == sha
    (tmp_path / "repo" / "results.md").write_text("untracked files elsewhere do not count\n")
    assert source_revision(str(tmp_path / "repo")) == sha
    (tmp_path / "repo" / "gh_hf" / "x.py").write_text("a = 2\n")
    assert source_revision(str(tmp_path / "repo")) == sha + "-dirty"
    # an installed package inside some other repository is not that repository's code
    assert source_revision(str(tmp_path / "repo" / "gh_hf")) is None
    assert source_revision(str(tmp_path)) is None  # not a checkout at all
    repo = Path(__file__).resolve().parents[1]
    if (repo / ".git").exists():  # this checkout (CI clones it): the default root is the repo, not gh_hf/
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout
        assert source_revision().removesuffix("-dirty") == head.strip()


def test_card_without_results_has_metadata_and_no_accuracy(encoder_dir):
    card = ModelCard.load(encoder_dir / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-feature-extraction"
    assert REQUIRED_TAGS <= set(data.tags) and data.license == "apache-2.0"
    assert data.eval_results is None and "model-index" not in card.content
    assert data.datasets is None  # scikit-learn digits has no Hub dataset id
    text = card.text
    assert "has not been benchmarked" in text
    assert not re.search(r"\d\s*%", text) and "| Overall" not in text and "per_class_accuracy.png" not in text
    # Sections a reader expects, filled from the run's records.
    for heading in (
        "Intended use and limitations",
        "How to use",
        "Training data",
        "Training procedure",
        "Compute",
        "Citation",
    ):
        assert f"## {heading}" in text
    assert "| 9 | 9 | 10 |" in text and "| Images | 403 |" in text  # per-class counts of the split
    assert "two-stage cosine: 0.5 to 0.3 until epoch 1" in text and "| Length | 3 epochs |" in text
    assert "| Training wall time | 12.3 s |" in text and "| Optimizer steps | 6 |" in text
    assert (
        "arXiv:2310.17622" in text
        and "Combating Representation Learning Disparity with Geometric Harmonization" in text
    )
    assert f'model="{encoder_dir}"' in text


def test_card_names_the_encoder_a_run_started_from(encoder_dir, tmp_path):
    assert "Started from" not in ModelCard.load(encoder_dir / "README.md").text
    folder = tmp_path / "continued"
    shutil.copytree(encoder_dir, folder)
    args = json.loads((folder / "training_args.json").read_text())
    args["training"]["init_from"] = "outputs/simclr/encoder"
    (folder / "training_args.json").write_text(json.dumps(args))
    text = render_model_card(folder).text
    assert "| Started from | the backbone of `outputs/simclr/encoder` (projector and GH head new) |" in text


def test_card_without_run_records_claims_nothing(encoder_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in UPLOADED - {"README.md"}:
        shutil.copy(encoder_dir / name, bare / name)
    text = render_model_card(bare).text
    assert "were not recorded with this encoder" in text and "was not recorded with this encoder" in text
    assert "not been benchmarked" in text and not re.search(r"\d\s*%", text)


# ---- results --------------------------------------------------------------------------------


def test_metric_columns_follow_the_benchmark_report():
    from gh_hf.evaluation.report import TABLE_COLUMNS

    assert [(column, key) for key, column, _, _ in METRICS] == list(TABLE_COLUMNS)


def test_results_entry_is_found_by_path_or_key(encoder_dir, tmp_path):
    results = _results_json(tmp_path, str(encoder_dir))
    assert load_results(results, encoder_dir).key == str(encoder_dir)
    relative = _results_json(tmp_path / "rel", os.path.relpath(encoder_dir, tmp_path / "rel"))
    assert load_results(relative, encoder_dir).figure.name == "per_class_accuracy.png"
    assert load_results(results, "elsewhere", results_key="other/encoder").key == "other/encoder"
    assert load_results(results, "elsewhere", repo_id="other/encoder").key == "other/encoder"
    with pytest.raises(ValueError, match="no entry for the encoder elsewhere.*other/encoder.*--results_key"):
        load_results(results, "elsewhere")
    with pytest.raises(ValueError, match="results_key='missing' is not an entry"):
        load_results(results, encoder_dir, results_key="missing")


def test_card_with_results_reports_exactly_the_measured_numbers(encoder_dir, tmp_path):
    results_path = _results_json(tmp_path, str(encoder_dir))
    report = json.loads(results_path.read_text())
    entry = report["results"][str(encoder_dir)]
    staged = stage_encoder(
        encoder_dir, "user/gh-digits", results=results_path, staging_dir=tmp_path / "stage"
    )
    assert set(staged.files) == UPLOADED | {"per_class_accuracy.png"}
    card = ModelCard.load(staged.directory / "README.md")
    # The Markdown table equals results.json, in percent with two decimals (null -> n/a).
    rows = _table_rows(card.text)
    titles = {"linear": "Linear probe", "knn": "k-NN"}
    assert set(rows) == set(titles.values())
    for protocol, title in titles.items():
        metrics = entry[protocol]["metrics"]
        assert rows[title] == [percent(metrics[key]) for key, _, _, _ in METRICS]
    assert rows["k-NN"][3] == "n/a" and rows["Linear probe"][0] == "61.23"
    assert card.text.count("| Linear probe |") == 1  # the main protocol first, once
    # The model-index carries the same numbers; null metrics are left out.
    reported = {(r.metric_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    expected = {
        (protocol, metric_type): round(100 * entry[protocol]["metrics"][key], 2)
        for protocol in titles
        for key, _, metric_type, _ in METRICS
        if entry[protocol]["metrics"][key] is not None
    }
    assert reported == expected and ("knn", "accuracy_few") not in reported
    assert card.data.model_name == "gh-digits"
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert "![Per-class accuracy" in card.text and "(per_class_accuracy.png)" in card.text
    assert 'model="user/gh-digits"' in card.text and "10.00" not in card.text  # the other encoder's number


def test_card_with_results_without_figure_shows_none(encoder_dir, tmp_path):
    results_path = _results_json(tmp_path, str(encoder_dir), with_figure=False)
    staged = stage_encoder(encoder_dir, "user/x", results=results_path, staging_dir=tmp_path / "stage")
    assert "per_class_accuracy.png" not in staged.files and "per_class_accuracy.png" not in staged.card.text


# ---- staging, upload and the script ---------------------------------------------------------


def test_dry_run_stages_exactly_the_upload_files(encoder_dir, tmp_path):
    source = tmp_path / "encoder"
    shutil.copytree(encoder_dir, source)
    (source / "optimizer.bin").write_bytes(b"state")  # what must never be uploaded
    (source / "checkpoints" / "step_00000002").mkdir(parents=True)
    (source / "checkpoints" / "step_00000002" / "model.safetensors").write_bytes(b"x")
    staged = push_encoder(source, "user/gh-digits", dry_run=True, staging_dir=tmp_path / "stage")
    assert staged.commit_url is None and set(staged.files) == UPLOADED
    assert {path.name for path in staged.directory.iterdir()} == UPLOADED
    original, uploaded = (
        load_file(source / "model.safetensors"),
        load_file(staged.directory / "model.safetensors"),
    )
    assert original.keys() == uploaded.keys() and all(torch.equal(original[k], uploaded[k]) for k in original)
    for name in ("preprocessor_config.json", *CODE_FILES):
        assert (staged.directory / name).read_bytes() == (source / name).read_bytes(), name
    with pytest.raises(ValueError, match="is not empty"):
        stage_encoder(source, "user/gh-digits", staging_dir=staged.directory)
    with pytest.raises(ValueError, match="lacks config.json, model.safetensors"):
        stage_encoder(tmp_path, "user/gh-digits")


class FakeHfApi:
    calls: list[tuple[str, dict]] = []

    def __init__(self, token=None):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(
            (
                "upload_folder",
                {**kwargs, "files": sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())},
            )
        )
        return SimpleNamespace(commit_url="https://huggingface.co/user/gh-digits/commit/abc")


def test_push_creates_the_repo_and_uploads_one_commit(encoder_dir, tmp_path, monkeypatch):
    FakeHfApi.calls = []
    validated = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(publish_module, "HfApi", FakeHfApi)
    monkeypatch.setattr(ModelCard, "validate", lambda card, repo_type=None: validated.append(card))
    staged = push_encoder(
        encoder_dir, "user/gh-digits", private=True, token="hf_test", staging_dir=tmp_path / "s"
    )
    assert staged.commit_url.endswith("/commit/abc") and len(validated) == 1
    kinds = [kind for kind, _ in FakeHfApi.calls]
    assert kinds == ["init", "create_repo", "upload_folder"]
    create, upload = FakeHfApi.calls[1][1], FakeHfApi.calls[2][1]
    assert create == {"repo_id": "user/gh-digits", "private": True, "exist_ok": True, "repo_type": "model"}
    assert upload["repo_id"] == "user/gh-digits" and Path(upload["folder_path"]) == staged.directory
    assert set(upload["files"]) == UPLOADED


def _run_script(argv: list[str], capsys) -> tuple[int, str, str]:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import push_to_hub
    finally:
        sys.path.pop(0)
    code = push_to_hub.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_script_dry_run_prints_the_staging_folder(encoder_dir, tmp_path, capsys):
    stage = tmp_path / "stage"
    code, out, _ = _run_script(
        ["--encoder", str(encoder_dir), "--repo_id", "user/x", "--dry_run", "--staging_dir", str(stage)],
        capsys,
    )
    assert code == 0 and f"in {stage}:" in out and "Dry run: nothing uploaded." in out
    assert {line.strip() for line in out.splitlines() if line.startswith("  ")} == UPLOADED


@pytest.mark.parametrize("failure", ["no_token", "unreachable", "bad_repo_id", "bad_results_key"])
def test_script_fails_with_one_line(failure, encoder_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    monkeypatch.setattr(publish_module, "get_token", lambda: None if failure == "no_token" else "hf_test")
    argv = ["--encoder", str(encoder_dir), "--repo_id", "user/x", "--staging_dir", str(tmp_path / "stage")]
    if failure == "bad_repo_id":
        argv[3] = "user/bad name!"
    if failure == "bad_results_key":
        argv += ["--results", str(_results_json(tmp_path, "other")), "--results_key", "missing"]
    code, _, err = _run_script(argv, capsys)
    message = {
        "no_token": "no Hugging Face token",
        "unreachable": "upload to user/x failed (ConnectError",
        "bad_repo_id": "repo_id='user/bad name!' is invalid",
        "bad_results_key": "results_key='missing' is not an entry",
    }[failure]
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_script_offline_fails_with_one_line_and_no_traceback(encoder_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        str(REPO / "scripts" / "push_to_hub.py"),
        "--encoder",
        str(encoder_dir),
        "--repo_id",
        "user/x",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: cannot upload in offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set); unset it, "
        "or use --dry_run."
    ]


def test_check_happens_before_staging(encoder_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubPublishError, match="offline mode"):
        push_encoder(encoder_dir, "user/x", staging_dir=tmp_path / "stage")
    assert not (tmp_path / "stage").exists()


def test_cpu_hardware_names_the_cpu_model(tmp_path, monkeypatch):
    from gh_hf.hub import run_info

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654\n")
    assert run_info.cpu_model(str(cpuinfo)) == "AMD EPYC 9654"
    monkeypatch.setattr(run_info.platform, "processor", lambda: "")
    assert run_info.cpu_model(str(tmp_path / "missing")) is None
    monkeypatch.setattr(run_info, "cpu_model", lambda: "Intel(R) Xeon(R) Platinum 8488C")
    monkeypatch.setattr(run_info.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(run_info.os, "cpu_count", lambda: 2)
    assert run_info.describe_hardware("cpu") == "CPU: Intel(R) Xeon(R) Platinum 8488C (x86_64), 2 cores"
    assert (
        run_info.describe_hardware("cpu", 2)
        == "CPU: Intel(R) Xeon(R) Platinum 8488C (x86_64), 2 cores, 2 processes"
    )
    monkeypatch.setattr(run_info, "cpu_model", lambda: None)
    assert run_info.describe_hardware("cpu") == "CPU: x86_64, 2 cores"


def test_run_info_records_the_revision_the_run_started_from(monkeypatch, tmp_path):
    from gh_hf.hub import run_info as run_info_module
    from gh_hf.training import trainer as trainer_module
    from gh_hf.training.arguments import parse_pretrain_args

    accelerator = SimpleNamespace(device=torch.device("cpu"), num_processes=1, mixed_precision="no")
    monkeypatch.setattr(run_info_module, "source_revision", lambda: "at-the-end")
    assert collect_run_info(accelerator, wall_time_s=1.0)["source_revision"] == "at-the-end"
    given = collect_run_info(accelerator, wall_time_s=1.0, source_revision="given")
    assert given["source_revision"] == "given"
    assert "source_revision" not in collect_run_info(accelerator, wall_time_s=1.0, source_revision=None)
    # a commit that lands while a run trains (HEAD moves) is not credited with the run's result
    monkeypatch.setattr(trainer_module, "source_revision", lambda: "at-the-start")
    trainer = trainer_module.Pretrainer(*parse_pretrain_args(["--output_dir", str(tmp_path)]))
    monkeypatch.setattr(trainer_module, "source_revision", lambda: "at-the-end")
    assert trainer.run_info()["source_revision"] == "at-the-start"
