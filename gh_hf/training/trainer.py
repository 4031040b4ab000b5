"""The pretraining loop: Accelerate, GH schedules, the score bank and prior, checkpoints."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast, set_seed
from tqdm.auto import tqdm

from gh_hf.configuration_gh import GHConfig
from gh_hf.data import DataSourceError, source_normalization
from gh_hf.data.sources import source_channels
from gh_hf.dist import default_accelerator_kwargs, resolve_mixed_precision
from gh_hf.hub import HubPublishError, check_can_push, collect_run_info, push_encoder
from gh_hf.hub.run_info import source_revision
from gh_hf.modeling_gh_pretraining import GHForPreTraining
from gh_hf.training.anchor_alignment import aligned_anchors
from gh_hf.training.arguments import DataArguments, ModelArguments, PretrainingArguments
from gh_hf.training.bcl import LossMemory
from gh_hf.training.checkpointing import (
    WARMUP_CHECKPOINT,
    list_checkpoints,
    require_complete_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from gh_hf.training.data import (
    build_train_loader,
    epoch_batches,
    labels_by_index,
    load_long_tailed_train,
    prepare_train_loader,
)
from gh_hf.training.export import export_encoder
from gh_hf.training.fork import check_fork, fork_source
from gh_hf.training.init_weights import check_init_source, load_init_encoder
from gh_hf.training.investigation import split_features
from gh_hf.training.prior import (
    BankMomenta,
    anchor_purity,
    bank_counts,
    plot_prior_history,
    prior_diagnostics,
    read_refreshes,
    refreshed_prior,
    resolve_bank_momenta,
    resolve_class_prior,
)
from gh_hf.training.run_log import LOG_FILE, UNKNOWN_ROWS, continue_log, start_log
from gh_hf.training.schedules import (
    gh_weight_at,
    resolve_lr_schedule,
    two_stage_cosine_lr,
    warmup_cosine_lr,
)
from gh_hf.training.score_bank import ScoreBank, build_score_bank

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became inf or NaN; the run stops and the last good checkpoint is left as it was."""


@dataclass
class TrainerState:
    """Counters saved with every checkpoint (registered with `accelerator.register_for_checkpointing`)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    train_time_s: float = 0.0  # summed over resumed segments
    # Rows of output_dir/log.jsonl when saved: a run resumed from this checkpoint cuts its log back
    # to them (gh_hf.training.run_log). Counted by the main process, the one that writes the log.
    log_rows: int = 0

    def state_dict(self) -> dict[str, int | float]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        self.log_rows = UNKNOWN_ROWS  # stays so for checkpoints saved before the rows were counted
        for key, value in state.items():
            setattr(self, key, type(getattr(self, key))(value))


def build_config(data_args: DataArguments, model_args: ModelArguments, seed: int) -> GHConfig:
    """The model config of a run; raises ValueError naming a bad field before any data is loaded."""
    kwargs = model_args.config_kwargs()
    in_chans = kwargs.pop("in_chans") or source_channels(data_args.dataset)
    mean, std = source_normalization(data_args.dataset, in_chans)
    return GHConfig(
        in_chans=in_chans, image_mean=list(mean), image_std=list(std), anchors_seed=seed, **kwargs
    )


def learning_rate_at(epoch: float, args: PretrainingArguments, use_gh: bool) -> float:
    """The learning rate at a (fractional) epoch, under the schedule `--lr_schedule` resolves to."""
    if resolve_lr_schedule(args.lr_schedule, use_gh, args.gh_warmup_epochs) == "two_stage":
        return two_stage_cosine_lr(
            epoch,
            args.num_epochs,
            args.learning_rate,
            args.gh_stage_learning_rate,
            args.gh_warmup_epochs,
            args.min_learning_rate,
        )
    return warmup_cosine_lr(
        epoch, args.num_epochs, args.learning_rate, args.lr_warmup_epochs, args.min_learning_rate
    )


def is_prior_refresh_epoch(epoch: int, args: PretrainingArguments) -> bool:
    return epoch >= args.gh_warmup_epochs and (epoch - args.gh_warmup_epochs) % args.prior_every_epochs == 0


class Pretrainer:
    """Runs GH pretraining as configured by the three argument dataclasses (see `pretrain`)."""

    def __init__(self, data_args: DataArguments, model_args: ModelArguments, args: PretrainingArguments):
        args = replace(args, mixed_precision=resolve_mixed_precision(args.mixed_precision))
        self.data_args, self.model_args, self.args = data_args, model_args, args
        # the gh_hf code this process runs is the code imported now: commits made while it trains
        # (a long run in the background) must not be credited with its result (run_info.json)
        self.source_revision = source_revision()
        self.config = build_config(data_args, model_args, args.seed)  # fails fast on bad values
        # "estimated", "uniform" or the known frequencies; a bad --class_prior file fails here too
        self.prior_source = resolve_class_prior(args.class_prior, self.config.num_anchors)
        self.resume_path = resolve_checkpoint(args.output_dir, args.resume_from_checkpoint)
        # --init_from acts on a new run only: a resume or a fork takes its weights from the checkpoint
        self.init_source = args.init_from if self.resume_path is None else None
        if self.init_source is not None:  # a missing or mismatched encoder fails here, before any data
            check_init_source(self.init_source, self.config)
        if args.push_to_hub:
            check_can_push(args.hub_model_id)  # no token / offline: fail now, not after training
        monitor_on = args.knn_at_end or args.knn_every_epochs > 0
        if monitor_on and data_args.split_file is not None and data_args.test_split_file is None:
            raise ValueError(  # the monitor needs test images: fail now, not after training
                "--split_file data with the kNN monitor on needs --test_split_file (the test images' "
                "'path label' file); or turn the monitor off with --knn_every_epochs 0 --knn_at_end false"
            )
        if monitor_on and data_args.streaming:
            raise ValueError(  # the monitor reads a test split, which a stream of shards does not have
                "--streaming true runs without the kNN monitor: turn it off with --knn_every_epochs 0 "
                "--knn_at_end false, and evaluate the encoder with scripts/benchmark.py"
            )
        if args.anchor_alignment != "none" and data_args.streaming:
            raise ValueError(  # the alignment scores the whole split in one pass, which a stream is not
                f"--anchor_alignment={args.anchor_alignment!r} needs the split in one pass: it cannot run "
                "with --streaming true; use --anchor_alignment none"
            )
        self.accelerator = Accelerator(
            mixed_precision=args.mixed_precision,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            log_with=None if args.report_to == "none" else args.report_to,
            project_dir=args.output_dir,
            **default_accelerator_kwargs(),
        )
        self.output_dir = Path(args.output_dir)
        self.fork_source = None  # the run whose checkpoint this one starts from, when not its own
        if self.resume_path is not None:  # a bad checkpoint fails here, before any data is loaded
            self.fork_source = fork_source(self.resume_path, self.output_dir)
            if self.fork_source is not None:  # another run's checkpoint: its warm-up must be this run's
                check_fork(self.fork_source, self.resume_path, (data_args, model_args, args))
            require_complete_checkpoint(
                self.resume_path,
                # setup registers a streamed loader, the counters and BCL's loss memory for checkpoints
                custom_objects=1 + int(data_args.streaming) + int(self.config.ssl_method == "bcl"),
                bank_shards=ScoreBank.shard_glob() if self.config.use_gh else None,
                single_files=self.accelerator.distributed_type
                not in (DistributedType.FSDP, DistributedType.DEEPSPEED),
            )
        self.state = TrainerState()
        self.final_metrics: dict[str, float] = {}
        self.knn_monitor = None  # built on first use

    # ---- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        accelerator, args = self.accelerator, self.args
        set_seed(args.seed)
        with accelerator.main_process_first():
            self.train_dataset = load_long_tailed_train(self.data_args, args.seed)
        loader, self.two_views = build_train_loader(self.train_dataset, self.data_args, self.config, args)
        model = GHForPreTraining(self.config)
        if self.init_source is not None:
            load_init_encoder(model, self.init_source)
            accelerator.print(f"Backbone initialised from {self.init_source}.")
        if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = apply_speed_options(model, compile=args.compile, channels_last=args.channels_last)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay
        )
        self.model, self.optimizer, self.loader = prepare_train_loader(accelerator, model, optimizer, loader)
        self.bank = None  # the bank only feeds GH's prior; its shards join every checkpoint
        if self.config.use_gh:
            self.bank = build_score_bank(
                accelerator,
                len(self.train_dataset),
                self.config.num_anchors,
                args.bank_sharding,
                args.bank_dtype,
            )
        accelerator.register_for_checkpointing(self.state)
        self.loss_memory = None
        if self.config.ssl_method == "bcl":
            self.loss_memory = LossMemory(
                len(self.train_dataset), args.bcl_momentum, device=accelerator.device
            )
            accelerator.register_for_checkpointing(self.loss_memory)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise DataSourceError(
                f"--per_device_batch_size={args.per_device_batch_size} x {accelerator.num_processes} "
                f"process(es) is larger than the training split ({len(self.train_dataset)} images): "
                "no full batch per epoch; lower --per_device_batch_size"
            )
        self.bank_momenta = self.resolve_bank_momenta()
        if self.resume_path is not None:
            accelerator.load_state(str(self.resume_path))
            if self.loss_memory is not None:
                self.two_views.set_strengths(self.loss_memory.current_strengths)
            accelerator.print(
                f"Resumed from {self.resume_path} (epoch {self.state.epoch}, step {self.state.global_step})."
            )
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "training_args.json").write_text(json.dumps(self.all_args(), indent=2))
            log_path = self.output_dir / LOG_FILE
            if self.resume_path is not None:  # the history of the state it starts from (run_log)
                self.state.log_rows = continue_log(
                    log_path, self.resume_path, self.state.global_step, self.state.log_rows, self.fork_source
                )
            elif (kept := start_log(log_path)) is not None:
                logger.warning("%s held the log of an earlier start: kept as %s", self.output_dir, kept.name)
        accelerator.init_trackers("gh_hf", config=_flat(self.all_args()))
        self.log({"bank_momentum_warmup": self.bank_momenta.warmup, "bank_momentum": self.bank_momenta.gh})

    def all_args(self) -> dict[str, Any]:
        return {
            "data": asdict(self.data_args),
            "model": asdict(self.model_args),
            "training": asdict(self.args),
        }

    # ---- schedule ----------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run: `--max_steps` when > 0 (it overrides `--num_epochs`)."""
        if self.args.max_steps > 0:
            return self.args.max_steps
        return self.args.num_epochs * (self.steps_per_epoch // self.args.gradient_accumulation_steps)

    @property
    def num_epochs(self) -> int:
        """Epochs the run reaches: enough for `--max_steps` when it is set, else `--num_epochs`."""
        if self.args.max_steps > 0:
            per_epoch = self.steps_per_epoch // self.args.gradient_accumulation_steps
            return math.ceil(self.args.max_steps / max(per_epoch, 1))
        return self.args.num_epochs

    def unwrapped(self) -> GHForPreTraining:
        return self.accelerator.unwrap_model(self.model)

    def resolve_bank_momenta(self) -> BankMomenta:
        """The bank momenta as numbers ("auto": gh_hf.training.prior); the run's args record them so."""
        args = self.args
        momenta = resolve_bank_momenta(
            args.bank_momentum_warmup, args.bank_momentum, args.gh_warmup_epochs, self.num_epochs
        )
        self.args = replace(args, bank_momentum_warmup=momenta.warmup, bank_momentum=momenta.gh)
        return momenta

    def refresh_prior(self, epoch: int) -> None:
        """At a refresh epoch: the new pi goes to the model, its diagnostics to the logs.

        Drift is measured against the model's `class_prior` buffer, which checkpoints carry, so it
        survives a resume.
        """
        if not (self.config.use_gh and is_prior_refresh_epoch(epoch, self.args)):
            return
        class_prior = self.unwrapped().class_prior
        prior = refreshed_prior(self.bank, self.prior_source, self.args.prior_floor)
        diagnostics = prior_diagnostics(prior, class_prior, *bank_counts(self.bank, self.train_labels))
        class_prior.copy_(prior)
        self.log({"epoch": epoch, **diagnostics})

    def align_anchors(self, epoch: int) -> None:
        """`--anchor_alignment kmeans`, once, at the first GH epoch, before its prior refresh.

        Every process scores the whole split (eval view); the main process alone runs K-means and
        its rotation is broadcast, so all processes hold the same anchors. The bank restarts from
        that pass, in the new frame: its scores against the old anchors would make the refresh read
        the partition the alignment replaces. A run resumed inside the GH stage has its aligned
        anchors (a buffer) and bank from the checkpoint; one resumed at the GH start aligns here, as
        it would have.
        """
        if not (
            self.config.use_gh
            and self.args.anchor_alignment == "kmeans"
            and epoch == self.args.gh_warmup_epochs
        ):
            return
        model, main = self.unwrapped(), self.accelerator.is_main_process
        _, projections, _ = split_features(model, self.train_dataset, self.args.per_device_batch_size)
        projections = projections.to(model.anchors.device)
        before = model.anchor_scores(projections).argmax(1).cpu()
        rotated, clusters = (
            aligned_anchors(model.anchors, projections, seed=self.args.seed)
            if main
            else (torch.empty_like(model.anchors), None)
        )
        if self.accelerator.num_processes > 1:
            rotated = broadcast(rotated.contiguous(), from_process=0)
        model.anchors.copy_(rotated)
        scores = model.anchor_scores(projections)
        self.bank.update(torch.arange(len(scores)), scores, momentum=0.0)  # each shard keeps its rows
        if not main:  # the record goes to the log, which the main process writes
            return
        after = scores.argmax(1).cpu()
        num_anchors = len(rotated)
        record: dict[str, Any] = {"epoch": epoch, "anchor_alignment": self.args.anchor_alignment}
        record["anchor_occupancy_aligned"] = torch.bincount(after, minlength=num_anchors).tolist()
        if self.train_labels is not None:  # diagnostics only: which partition the anchors now read
            for name, assignment in (("before", before), ("after", after), ("kmeans", clusters)):
                record[f"alignment_purity_{name}"] = anchor_purity(
                    assignment, self.train_labels, num_anchors
                )[1]
        self.log(record)

    @cached_property
    def train_labels(self) -> torch.Tensor | None:
        """(N_train,) class id per sample index, read for the prior's diagnostics only (None: no labels)."""
        return labels_by_index(self.train_dataset)

    def save_prior_figure(self) -> None:
        """output_dir/prior.png: each refresh's sorted prior estimate against the true class frequencies."""
        log_path = self.output_dir / LOG_FILE
        refreshes = read_refreshes(log_path) if log_path.is_file() else []
        if refreshes:
            plot_prior_history(refreshes, self.output_dir / "prior.png")

    # ---- loop --------------------------------------------------------------------------------
    def train(self) -> Path:
        """Trains to the end (or `max_steps`), then writes `output_dir/encoder/`. Returns that folder."""
        self.setup()
        accelerator, args, state = self.accelerator, self.args, self.state
        progress = tqdm(
            total=self.total_steps,
            initial=state.global_step,
            disable=not accelerator.is_local_main_process,
            desc="pretraining",
        )
        while state.epoch < self.num_epochs and state.global_step < self.total_steps:
            segment_start = time.perf_counter()
            self.run_epoch(progress)
            state.train_time_s += time.perf_counter() - segment_start
            if state.step_in_epoch == 0:  # the epoch ran to its end
                self.end_of_epoch()
        progress.close()
        if accelerator.is_main_process:
            self.save_prior_figure()
        if args.checkpoint_every_epochs or args.checkpoint_every:
            self.checkpoint_if_new()
        encoder_dir = self.export_encoder()
        self.final_metrics = self.run_monitor() if args.knn_at_end else {}
        if accelerator.is_main_process and self.final_metrics:
            (self.output_dir / "knn_metrics.json").write_text(json.dumps(self.final_metrics, indent=2))
        if args.push_to_hub and accelerator.is_main_process:
            self.push(encoder_dir)
        accelerator.end_training()
        return encoder_dir

    def push(self, encoder_dir: Path) -> None:
        """Uploads the encoder; a failed upload is logged with the retry command, the run is kept."""
        try:
            push_encoder(encoder_dir, self.args.hub_model_id, private=self.args.hub_private_repo)
        except HubPublishError as error:
            logger.error(
                "Upload failed (%s); the encoder is saved. Retry with: python scripts/push_to_hub.py "
                "--encoder %s --repo_id %s",
                error,
                encoder_dir,
                self.args.hub_model_id,
            )

    def run_epoch(self, progress: tqdm) -> None:
        accelerator, state = self.accelerator, self.state
        epoch = state.epoch
        self.two_views.set_epoch(epoch)
        if state.step_in_epoch == 0:
            self.unwrapped().refresh_pruning_masks()  # SDCLR; a no-op for the other bases
            self.align_anchors(epoch)
            self.refresh_prior(epoch)
        loader = epoch_batches(accelerator, self.loader, epoch, state.step_in_epoch)
        self.model.train()
        tick = time.perf_counter()
        for batch in loader:
            logs = self.training_step(batch)
            state.step_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            state.global_step += 1
            progress.update(1)
            now = time.perf_counter()
            logs["images_per_s"] = (
                batch["index"].shape[0]
                * accelerator.num_processes
                * self.args.gradient_accumulation_steps
                / (now - tick)
            )
            tick = now
            if state.global_step % self.args.logging_steps == 0 or state.global_step == 1:
                self.log(logs)
                progress.set_postfix(loss=f"{logs['loss']:.3f}", gh=f"{logs['gh_weight']:.2f}")
            if self.args.checkpoint_every and state.global_step % self.args.checkpoint_every == 0:
                save_checkpoint(accelerator, self.output_dir, state.global_step, self.args.save_total_limit)
            if state.global_step >= self.total_steps and state.step_in_epoch < self.steps_per_epoch:
                return  # stopped mid-epoch (max_steps); an epoch that ran to its end is closed below
        state.epoch += 1
        state.step_in_epoch = 0

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        accelerator, state, args = self.accelerator, self.state, self.args
        epoch = state.epoch + state.step_in_epoch / self.steps_per_epoch
        lr = learning_rate_at(epoch, args, self.config.use_gh)
        gh_weight = (
            gh_weight_at(epoch, args.gh_warmup_epochs, args.gh_ramp_epochs, self.config.gh_weight)
            if self.config.use_gh
            else 0.0
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with accelerator.accumulate(self.model):
            out = self.model(self.views_of(batch), gh_weight=gh_weight)
            terms = torch.stack(
                [
                    out.loss,
                    out.ssl_loss,
                    out.gh_loss if out.gh_loss is not None else torch.zeros_like(out.loss),
                ]
            )
            global_terms = accelerator.gather(terms.detach().float()[None]).mean(
                0
            )  # (3,), identical on all ranks
            if not torch.isfinite(global_terms).all():
                self.fail_non_finite(global_terms)
            accelerator.backward(out.loss)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if self.bank is not None:
            self.update_bank(batch["index"], out.anchor_scores[:, 0], epoch)
        if self.loss_memory is not None:
            indices, losses = accelerator.gather((batch["index"], out.ssl_loss_per_sample.detach().float()))
            self.loss_memory.update(indices, losses)
        loss, ssl_loss, gh_loss = global_terms.tolist()
        return {
            "loss": loss,
            "ssl_loss": ssl_loss,
            "gh_loss": gh_loss,
            "sinkhorn_iterations": self.unwrapped().gh_loss_fn.last_sinkhorn_iterations
            if out.gh_loss is not None
            else 0,
            "lr": lr,
            "gh_weight": gh_weight,
            "epoch": epoch,
        }

    def views_of(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 2, C, H, W): made by the per-image workers, or here on the model's device (batched)."""
        if "pixel_values" in batch:
            return batch["pixel_values"]
        return self.two_views(batch["image"], batch["index"])

    def update_bank(self, indices: torch.Tensor, scores: torch.Tensor, epoch: float) -> None:
        momentum = self.bank_momenta.at(epoch, self.args.gh_warmup_epochs)
        update_bank_globally(self.accelerator, self.bank, indices, scores, momentum)

    def fail_non_finite(self, terms: torch.Tensor) -> None:
        checkpoints = list_checkpoints(self.output_dir)
        last = str(checkpoints[-1]) if checkpoints else "none written yet"
        loss, ssl_loss, gh_loss = terms.tolist()
        raise NonFiniteLossError(
            f"Non-finite loss at step {self.state.global_step + 1} (epoch {self.state.epoch}): loss={loss}, "
            f"ssl_loss={ssl_loss}, gh_loss={gh_loss}. Stopping; the last good checkpoint is {last}. "
            "Lower --learning_rate, use --mixed_precision no, or raise --sinkhorn_epsilon."
        )

    def end_of_epoch(self) -> None:
        args, epoch = self.args, self.state.epoch
        if self.loss_memory is not None:  # BCL: this epoch's remembered losses set the next one's views
            self.two_views.set_strengths(self.loss_memory.next_epoch_strengths())
        if args.knn_every_epochs and epoch % args.knn_every_epochs == 0:
            self.log(self.run_monitor())
        if args.checkpoint_every_epochs and epoch % args.checkpoint_every_epochs == 0:
            save_checkpoint(self.accelerator, self.output_dir, self.state.global_step, args.save_total_limit)
        if args.save_warmup_checkpoint and epoch == args.gh_warmup_epochs:
            save_checkpoint(
                self.accelerator,
                self.output_dir,
                self.state.global_step,
                args.save_total_limit,
                name=WARMUP_CHECKPOINT,
            )

    def checkpoint_if_new(self) -> None:
        existing = list_checkpoints(self.output_dir)
        if not existing or existing[-1].name != f"step_{self.state.global_step:08d}":
            save_checkpoint(
                self.accelerator, self.output_dir, self.state.global_step, self.args.save_total_limit
            )

    # ---- outputs -----------------------------------------------------------------------------
    def log(self, values: dict[str, Any]) -> None:
        """To the Accelerate trackers (scalars) and to output_dir/log.jsonl (everything)."""
        values = {**values, "step": self.state.global_step}
        scalars = {key: value for key, value in values.items() if isinstance(value, (int, float))}
        self.accelerator.log(scalars, step=self.state.global_step)
        if self.accelerator.is_main_process:
            with open(self.output_dir / LOG_FILE, "a") as handle:
                handle.write(json.dumps(values) + "\n")
            self.state.log_rows += 1

    def run_monitor(self) -> dict[str, float]:
        """kNN accuracy of the current encoder; all processes take part (see gh_hf.training.monitor)."""
        from gh_hf.training.monitor import build_knn_monitor  # loads the evaluation stack only when used

        if self.knn_monitor is None:
            self.knn_monitor = build_knn_monitor(self)
        metrics = self.knn_monitor(self.unwrapped().encoder, self.accelerator)
        self.model.train()
        return metrics

    def run_info(self) -> dict[str, Any]:
        """The measured facts `run_info.json` records (gh_hf.hub.collect_run_info), with the gh_hf
        revision this process started from."""
        return collect_run_info(
            self.accelerator,
            wall_time_s=self.state.train_time_s,
            global_steps=self.state.global_step,
            epochs=self.state.epoch,
            source_revision=self.source_revision,
        )

    def export_encoder(self) -> Path:
        """Writes output_dir/encoder/ (config, weights, processor, code, card, run facts): main process."""
        encoder_dir = self.output_dir / "encoder"
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            export_encoder(
                self.unwrapped(), encoder_dir, self.all_args(), self.train_dataset, run_info=self.run_info()
            )
        self.accelerator.wait_for_everyone()
        return encoder_dir


def apply_speed_options(model: GHForPreTraining, compile: bool, channels_last: bool) -> GHForPreTraining:
    """`--channels_last` and `--compile` (backbone and projector, compiled in place with
    `nn.Module.compile`, so state_dict keys, checkpoints and the exported encoder keep their names)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model.encoder.backbone.compile()
        model.projector.compile()
    return model


def update_bank_globally(
    accelerator: Accelerator, bank: ScoreBank, indices: torch.Tensor, scores: torch.Tensor, momentum: float
) -> None:
    """Moving average of view-1 scores over the gathered global batch; each rank keeps the rows it holds."""
    indices, scores = accelerator.gather((indices, scores.detach().float()))
    bank.update(indices, scores, momentum)


def _flat(nested: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        key: value if isinstance(value, (int, float, str, bool)) else str(value)
        for part in nested.values()
        for key, value in part.items()
    }


def pretrain(data_args: DataArguments, model_args: ModelArguments, args: PretrainingArguments) -> Path:
    """Pretrains a GH encoder and returns the folder `AutoModel.from_pretrained` loads."""
    return Pretrainer(data_args, model_args, args).train()
