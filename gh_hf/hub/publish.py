"""Publishing an encoder folder to the Hugging Face Hub: stage the files, then one commit.

`stage_encoder` writes exactly the files to upload into an empty folder: config, weights,
processor config, the remote-code files and the rendered card (plus the per-class figure the card
shows, when results come with one). Optimizer states, checkpoints and the run's records never get
there, because the folder is written from the loaded encoder, not copied. `push_encoder` stages,
then uploads with `create_repo` + `upload_folder`.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, constants, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from gh_hf.hub.card import DEFAULT_LICENSE, render_model_card
from gh_hf.hub.encoder_folder import (
    CARD_FILE,
    CONFIG_FILE,
    PROCESSOR_FILE,
    WEIGHTS_FILE,
    image_processor_for,
    save_encoder_folder,
)
from gh_hf.hub.results import FIGURE_FILE, load_results
from gh_hf.image_processing_gh import GHImageProcessor
from gh_hf.modeling_gh import GHModel


class HubPublishError(RuntimeError):
    """A push that cannot go on; the message says why and what to do (one line)."""


@dataclass
class PushArguments:
    """Arguments of `python scripts/push_to_hub.py`."""

    encoder: str = field(metadata={"help": "The encoder folder (output_dir/encoder of a pretraining run)."})
    repo_id: str = field(metadata={"help": "The Hub model repo, USER/NAME (created if missing)."})
    results: str | None = field(
        default=None, metadata={"help": "results.json of scripts/benchmark.py for this encoder."}
    )
    results_key: str | None = field(
        default=None,
        metadata={"help": "This encoder's entry in results.json (default: the entry naming its folder)."},
    )
    private: bool = field(default=False, metadata={"help": "Create the repo as private."})
    dry_run: bool = field(default=False, metadata={"help": "Stage the files and stop: upload nothing."})
    staging_dir: str | None = field(
        default=None, metadata={"help": "An empty folder to stage in (default: a new temp folder)."}
    )
    license: str = field(
        default=DEFAULT_LICENSE, metadata={"help": "Licence identifier of the card metadata."}
    )
    commit_message: str | None = field(default=None, metadata={"help": "Commit message of the upload."})


@dataclass
class StagedEncoder:
    """An encoder staged for upload (and, once pushed, where it went).

    Attributes:
        repo_id: The target repo.
        directory: The staging folder; its files are exactly what is uploaded.
        files: Their names, sorted.
        card: The rendered model card (also `directory/README.md`).
        commit_url: The upload's commit, None until pushed.
    """

    repo_id: str
    directory: Path
    files: list[str]
    card: ModelCard
    commit_url: str | None = None


def _empty_folder(staging_dir: str | Path | None) -> Path:
    if staging_dir is None:
        return Path(tempfile.mkdtemp(prefix="gh_hf_hub_"))
    folder = Path(staging_dir)
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"staging_dir={str(folder)!r} is not empty; staging needs an empty or new folder.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _check_encoder_folder(encoder_dir: Path) -> None:
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (encoder_dir / name).is_file()]
    if missing:
        raise ValueError(f"{encoder_dir} is not an encoder folder: it lacks {', '.join(missing)}.")


def stage_encoder(
    encoder_dir: str | Path,
    repo_id: str,
    results: str | Path | None = None,
    results_key: str | None = None,
    staging_dir: str | Path | None = None,
    license: str = DEFAULT_LICENSE,
) -> StagedEncoder:
    """Writes the files to upload for `encoder_dir` into an empty folder.

    Args:
        encoder_dir: The encoder folder.
        repo_id: The target repo (the card's usage snippets load it).
        results: A results.json of `scripts/benchmark.py` with an entry for this encoder.
        results_key: That entry's name, when it does not name `encoder_dir` or `repo_id`.
        staging_dir: An empty (or new) folder; default: a new temporary folder.
        license: Licence identifier of the card.

    Returns:
        The `StagedEncoder`.
    """
    encoder_dir = Path(encoder_dir)
    _check_encoder_folder(encoder_dir)
    evaluation = load_results(results, encoder_dir, results_key, repo_id) if results is not None else None
    staging = _empty_folder(staging_dir)
    encoder = GHModel.from_pretrained(encoder_dir)
    has_processor = (encoder_dir / PROCESSOR_FILE).is_file()
    processor = (
        GHImageProcessor.from_pretrained(encoder_dir)
        if has_processor
        else image_processor_for(encoder.config)
    )
    save_encoder_folder(encoder, staging, processor)
    card = render_model_card(
        encoder_dir, model_id=repo_id, results=evaluation, license=license, encoder=encoder
    )
    card.save(staging / CARD_FILE)
    if evaluation is not None and evaluation.figure is not None:
        shutil.copyfile(evaluation.figure, staging / FIGURE_FILE)
    files = sorted(path.name for path in staging.iterdir())
    return StagedEncoder(repo_id=repo_id, directory=staging, files=files, card=card)


def check_can_push(repo_id: str, token: str | None = None) -> str:
    """The token to push `repo_id` with; raises HubPublishError, without any network call, when there is none.

    Checks the repo id's form, that the Hub is not in offline mode (`HF_HUB_OFFLINE` or
    `TRANSFORMERS_OFFLINE`) and that a token is given or stored (`hf auth login`, `HF_TOKEN`).
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubPublishError(f"repo_id={repo_id!r} is invalid: {error}") from None
    if constants.is_offline_mode():
        raise HubPublishError(
            "cannot upload in offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set); unset it, or "
            "use --dry_run."
        )
    token = token or get_token()
    if not token:
        raise HubPublishError(
            "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN (or use --dry_run)."
        )
    return token


def _network_errors() -> tuple[type[BaseException], ...]:
    # huggingface_hub's HTTP and offline errors are OSErrors, a card the Hub rejects a ValueError;
    # transport failures come from its HTTP client (httpx2 in huggingface_hub 2, httpx in 1).
    errors: list[type[BaseException]] = [OSError, ValueError]
    for client in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(client).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def upload_staged(
    staged: StagedEncoder, private: bool = False, token: str | None = None, commit_message: str | None = None
) -> str:
    """Validates the card with the Hub, creates the repo if needed, uploads the staged folder in one commit.

    Returns:
        The commit's URL.

    Raises:
        HubPublishError: no token, offline mode, or the Hub refused or could not be reached.
    """
    token = check_can_push(staged.repo_id, token)
    api = HfApi(token=token)
    message = commit_message or f"Upload GH encoder ({len(staged.files)} files, gh_hf)"
    try:
        staged.card.validate()
        api.create_repo(staged.repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=staged.repo_id, folder_path=staged.directory, commit_message=message, repo_type="model"
        )
    except _network_errors() as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HubPublishError(
            f"upload to {staged.repo_id} failed ({type(error).__name__}: {reason}); the staged files stay "
            f"in {staged.directory}."
        ) from error
    staged.commit_url = commit.commit_url
    return commit.commit_url


def push_encoder(
    encoder_dir: str | Path,
    repo_id: str,
    results: str | Path | None = None,
    *,
    results_key: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    token: str | None = None,
    staging_dir: str | Path | None = None,
    license: str = DEFAULT_LICENSE,
    commit_message: str | None = None,
) -> StagedEncoder:
    """Stages an encoder folder (see `stage_encoder`) and, unless `dry_run`, uploads it in one commit.

    The token and offline checks run before staging, so a push that cannot happen fails at once.

    Returns:
        The `StagedEncoder` (`commit_url` set when uploaded).

    Raises:
        HubPublishError: the upload cannot happen or failed (one line, for people).
        ValueError: `encoder_dir`, `results` or `staging_dir` is unusable.
    """
    if not dry_run:
        token = check_can_push(repo_id, token)
    staged = stage_encoder(encoder_dir, repo_id, results, results_key, staging_dir, license)
    if not dry_run:
        upload_staged(staged, private=private, token=token, commit_message=commit_message)
    return staged
