#!/usr/bin/env python
"""How much memory does the score bank take? `PYTHONPATH=. python scripts/bench_bank_memory.py`.

Writes `--output` (JSON) and prints three tables (logic in gh_hf.training.bank_memory):
1. `table`: the memory model, bytes per process of bank, model and optimizer (docs/memory.md);
2. `rss`: peak resident memory of each of 2 gloo processes (`accelerate launch`, started here)
   through one synthetic epoch of bank updates and the prior, N = `--num_samples`, K =
   `--num_anchors`, replicated and then sharded;
3. `dtype`: a bfloat16 / float16 bank against float32 over simulated schedules.
`--parts` picks some of them. With `--worker_output` the script is one process of part 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from gh_hf import GHConfig
from gh_hf.dist import ends_process_group, free_port
from gh_hf.training.bank_memory import BankSchedule, dtype_error, measure_bank_rss, memory_table, model_bytes

ROOT = Path(__file__).resolve().parents[1]
# (schedule, N, K) of the dtype part: the presets' stages and momenta when measured (fashion_mnist_lt
# has since doubled to 40 + 40, auto 0.268 / 0.988; its 20 + 20 row stays as a short auto schedule)
SCHEDULES = (
    (BankSchedule("paper CIFAR 500 + 500, beta 0.9 / 0.999", 500, 0.9, 500, 0.999), 4000, 100),
    (BankSchedule("imagenet_lt 400 + 100, beta 0.9 / 0.999", 400, 0.9, 100, 0.999), 2000, 1000),
    (BankSchedule("fashion_mnist_lt 20 + 20, beta auto 0.0718 / 0.9753", 20, 0.0718, 20, 0.9753), 4000, 10),
    (BankSchedule("demo 2 + 2, beta auto 0 / 0.7787", 2, 0.0, 2, 0.7787), 4000, 10),
)


@dataclass
class BenchArguments:
    parts: str = field(default="table,rss,dtype", metadata={"help": "Comma-separated: table, rss, dtype."})
    num_samples: int = 1_000_000
    num_anchors: int = 1000
    per_process_batch: int = 4096
    bank_dtype: str = "float32"
    output: str = "results/bank_memory_cpu.json"
    worker_output: str | None = field(default=None, metadata={"help": "Internal: run as one rss process."})
    bank_sharding: str = "sharded"


def _gb(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:.2f}"


def _table(rows: list[dict]) -> None:
    print("\nbank GB per process (replicated fp32 / bf16 | sharded fp32 / bf16), model + SGD GB")
    for row in rows:
        print(
            f"{row['dataset']:<34} W={row['num_processes']:<4} "
            f"{_gb(row['bank_replicated_float32']):>8} {_gb(row['bank_replicated_bfloat16']):>8} | "
            f"{_gb(row['bank_sharded_float32']):>7} {_gb(row['bank_sharded_bfloat16']):>7}   "
            f"{_gb(row['model_and_optimizer'])}"
        )


def _worker(args: BenchArguments) -> None:
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from gh_hf.dist import default_accelerator_kwargs

    accelerator = Accelerator(**default_accelerator_kwargs())
    measured = measure_bank_rss(
        accelerator,
        args.num_samples,
        args.num_anchors,
        args.bank_sharding,
        args.bank_dtype,
        args.per_process_batch,
    )
    processes = gather_object([measured])
    if accelerator.is_main_process:
        Path(args.worker_output).write_text(json.dumps(processes))


def _rss(args: BenchArguments) -> list[dict]:
    runs = []
    for sharding in ("replicated", "sharded"):
        options = ["--num_samples", str(args.num_samples), "--num_anchors", str(args.num_anchors),
                   "--per_process_batch", str(args.per_process_batch), "--bank_dtype", args.bank_dtype,
                   "--bank_sharding", sharding]  # fmt: skip
        launch = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
        script = "scripts/bench_bank_memory.py"
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "rss.json"
            port = ["--main_process_port", str(free_port())]  # not 29500: another run may hold it
            command = [sys.executable, "-m", "accelerate.commands.launch", *launch[2:], *port, script,
                       *options]  # fmt: skip
            subprocess.run([*command, "--worker_output", str(out)], cwd=ROOT, check=True)
            processes = json.loads(out.read_text())
        runs.append(
            {
                "bank_sharding": sharding,
                "command": " ".join([*launch, script, *options]),
                "processes": processes,
            }
        )
        peaks = ", ".join(f"rank {p['rank']}: {_gb(p['peak_rss'])} GB" for p in processes)
        bank = ", ".join(_gb(p["bank_bytes"]) for p in processes)
        print(
            f"{sharding}: peak RSS {peaks}; bank {bank} GB per process; epoch {processes[0]['epoch_s']:.1f} s"
        )
    return runs


def _dtype() -> list[dict]:
    rows = []
    for schedule, num_samples, num_anchors in SCHEDULES:
        for row in dtype_error(schedule, num_samples, num_anchors):
            rows.append(row)
            print(
                f"{row['schedule']:<52} K={num_anchors:<5} {row['dtype']:<9} TV {row['prior_tv']:.4f}  "
                f"argmax agree {row['argmax_agreement']:.4f}  "
                f"entries moved {row['entries_moved_last_epoch']:.3f}"
            )
    return rows


@ends_process_group
def main() -> None:
    (args,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses()
    if args.worker_output is not None:
        _worker(args)
        return
    parts = set(args.parts.split(","))
    output = Path(args.output)
    result = json.loads(output.read_text()) if output.is_file() else {}  # other parts are kept
    result["command"] = " ".join(["PYTHONPATH=. python scripts/bench_bank_memory.py", *sys.argv[1:]])
    result["arguments"] = asdict(args)
    if "table" in parts:
        config = GHConfig(
            backbone="resnet50",
            image_size=224,
            in_chans=3,
            small_input_stem=False,
            num_anchors=1000,
            projection_dim=1024,
        )
        result["model"] = {"config": "resnet50, d = 1024, K = 1000", **model_bytes(config, num_processes=8)}
        result["table"] = memory_table(result["model"])
        _table(result["table"])
    if "rss" in parts:
        result["rss"] = _rss(args)
    if "dtype" in parts:
        result["dtype_error"] = _dtype()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
