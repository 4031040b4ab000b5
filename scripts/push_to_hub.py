#!/usr/bin/env python
"""Publish a pretrained encoder folder to the Hugging Face Hub, with its model card.

    python scripts/push_to_hub.py --encoder outputs/demo/encoder --repo_id USER/NAME \
        [--results bench/results.json] [--private] [--dry_run] [--staging_dir DIR]

Stages exactly the files to upload (config, weights, processor config, remote code, card) in a
folder it prints; --dry_run stops there. Otherwise uploads them in one commit (see docs/hub.md).
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser
from transformers.utils import logging as transformers_logging

from gh_hf.hub import HubPublishError, PushArguments, push_encoder


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(args=argv)
    transformers_logging.disable_progress_bar()  # loading a small encoder needs no bars
    try:
        staged = push_encoder(
            args.encoder,
            args.repo_id,
            args.results,
            results_key=args.results_key,
            private=args.private,
            dry_run=args.dry_run,
            staging_dir=args.staging_dir,
            license=args.license,
            commit_message=args.commit_message,
        )
    except (HubPublishError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Staged {len(staged.files)} files for {staged.repo_id} in {staged.directory}:")
    print("\n".join(f"  {name}" for name in staged.files))
    print(f"Uploaded: {staged.commit_url}" if staged.commit_url else "Dry run: nothing uploaded.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
