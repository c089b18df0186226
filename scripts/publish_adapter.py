"""Publish a trained adapter folder to a Hugging Face Hub model repo and/or an S3 prefix.

Uploads every file of the adapter folder (hidden files such as Snakemake's `.snakemake_timestamp`
are skipped and listed), plus an optional model card as README.md, and writes a receipt listing
each file with its size and sha256. With --dry-run nothing is uploaded: the receipt and the log say
what would be.

Credentials come only from the environment: the Hub token from $HF_TOKEN (or --token-env), never
logged; S3 from the standard boto3 chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
instance profile), with the endpoint from $AWS_ENDPOINT_URL when set (MinIO, a local test server).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import sha256_file, write_json

LOG = logging.getLogger("publish_adapter")
HUB_REPO_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
S3_PREFIX_PATTERN = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?$")


def collect_files(adapter: Path, model_card: Path | None = None) -> tuple[list[dict], list[dict]]:
    """The files to upload as {path (relative, POSIX), source, bytes, sha256}, sorted by path,
    and the skipped hidden files as {path, reason}."""
    if not adapter.is_dir():
        raise PipelineError(f"{adapter}: adapter folder not found; train it first (models/<domain>/adapter)")
    files, skipped = [], []
    for source in sorted(adapter.rglob("*")):
        if not source.is_file():
            continue
        relative = source.relative_to(adapter).as_posix()
        if any(part.startswith(".") for part in source.relative_to(adapter).parts):
            skipped.append({"path": relative, "reason": "hidden file"})
            continue
        if model_card is not None and relative == "README.md":
            skipped.append({"path": relative, "reason": "replaced by --model-card"})
            continue
        files.append({"path": relative, "source": source})
    if model_card is not None:
        if not model_card.is_file():
            raise PipelineError(f"{model_card}: model card not found")
        files.append({"path": "README.md", "source": model_card})
    files.sort(key=lambda item: item["path"])
    if not any(Path(item["path"]).name == "adapter_config.json" for item in files):
        raise PipelineError(
            f"{adapter}: no adapter_config.json in the folder; this does not look like a trained "
            "LoRA adapter (rerun the train_adapter rule)"
        )
    for item in files:
        item["bytes"] = item["source"].stat().st_size
        item["sha256"] = sha256_file(item["source"])
    return files, skipped


def parse_s3_prefix(prefix: str) -> tuple[str, str]:
    match = S3_PREFIX_PATTERN.match(prefix)
    if not match:
        raise PipelineError(f"publish.s3_prefix {prefix!r} is not an S3 URL; use s3://<bucket>/<optional/prefix>")
    return match.group(1), (match.group(2) or "").strip("/")


def upload_s3(files: list[dict], prefix: str, dry_run: bool) -> dict:
    bucket, key_prefix = parse_s3_prefix(prefix)
    keys = [f"{key_prefix}/{item['path']}" if key_prefix else item["path"] for item in files]
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    result = {"bucket": bucket, "prefix": key_prefix, "keys": keys, "endpoint_url": endpoint}
    if dry_run:
        for item, key in zip(files, keys, strict=False):
            LOG.info(
                "would upload %s (%d bytes, sha256 %s) to s3://%s/%s",
                item["path"],
                item["bytes"],
                item["sha256"],
                bucket,
                key,
            )
        return result
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    client = boto3.session.Session().client("s3", endpoint_url=endpoint)
    try:
        for item, key in zip(files, keys, strict=False):
            LOG.info("uploading %s (%d bytes) to s3://%s/%s", item["path"], item["bytes"], bucket, key)
            client.upload_file(
                str(item["source"]),
                bucket,
                key,
                ExtraArgs={"Metadata": {"sha256": item["sha256"]}},
            )
            head = client.head_object(Bucket=bucket, Key=key)
            if head["ContentLength"] != item["bytes"] or head.get("Metadata", {}).get("sha256") != item["sha256"]:
                raise PipelineError(
                    f"s3://{bucket}/{key}: stored object does not match {item['path']} "
                    f"({head['ContentLength']} bytes vs {item['bytes']}); upload again"
                )
    except NoCredentialsError:
        raise PipelineError(
            "no AWS credentials for publish.s3_prefix: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
            "AWS_PROFILE, or run where an instance profile grants s3:PutObject"
        ) from None
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "?")
        raise PipelineError(f"S3 upload to s3://{bucket}/{key_prefix} failed ({code}): {error}") from None
    except BotoCoreError as error:
        raise PipelineError(f"S3 upload to s3://{bucket}/{key_prefix} failed: {error}") from None
    return result


def upload_hub(files: list[dict], repo: str, token: str | None, private: bool, domain: str, dry_run: bool) -> dict:
    if not HUB_REPO_PATTERN.match(repo):
        raise PipelineError(f"publish.hub_repo {repo!r} is not a Hub repo id; use <owner>/<name>")
    result = {"repo": repo, "private": private, "files": [item["path"] for item in files]}
    if dry_run:
        if not token:
            LOG.warning("no Hub token in the environment: a real run would fail")
        for item in files:
            LOG.info(
                "would upload %s (%d bytes, sha256 %s) to hf.co/%s", item["path"], item["bytes"], item["sha256"], repo
            )
        return result
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=item["path"], path_or_fileobj=str(item["source"])) for item in files]
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        commit = api.create_commit(
            repo,
            operations=operations,
            repo_type="model",
            commit_message=f"Upload {domain} cache-embedding LoRA adapter",
        )
    except HfHubHTTPError as error:
        raise PipelineError(f"Hub upload to {repo} failed: {error}; check that the token can write there") from None
    result["commit_url"] = str(commit.commit_url)
    result["revision"] = commit.oid
    LOG.info("uploaded %d files to %s", len(files), commit.commit_url)
    return result


def publish(
    adapter: Path,
    receipt: Path,
    domain: str,
    hub_repo: str = "",
    s3_prefix: str = "",
    model_card: Path | None = None,
    hub_private: bool = True,
    token_env: str = "HF_TOKEN",
    dry_run: bool = False,
) -> dict:
    if not hub_repo and not s3_prefix:
        raise PipelineError(
            "nothing to publish to: set publish.hub_repo (<owner>/<name>) and/or publish.s3_prefix "
            "(s3://<bucket>/<prefix>) in the config"
        )
    token = os.environ.get(token_env) or None
    if hub_repo and not token and not dry_run:
        raise PipelineError(
            f"publish.hub_repo is {hub_repo!r} but ${token_env} is empty: export a Hugging Face write "
            f"token as {token_env} (never put it in the config), or clear publish.hub_repo"
        )
    if s3_prefix:
        parse_s3_prefix(s3_prefix)  # fail on a bad prefix before uploading anything anywhere
    files, skipped = collect_files(adapter, model_card)
    LOG.info(
        "%s: %d files, %d bytes%s",
        adapter,
        len(files),
        sum(item["bytes"] for item in files),
        " (dry run)" if dry_run else "",
    )
    record = {
        "domain": domain,
        "dry_run": dry_run,
        "files": [{key: item[key] for key in ("path", "bytes", "sha256")} for item in files],
        "skipped": skipped,
        "s3": upload_s3(files, s3_prefix, dry_run) if s3_prefix else None,
        "hub": upload_hub(files, hub_repo, token, hub_private, domain, dry_run) if hub_repo else None,
    }
    if record["hub"] is not None:
        record["hub"]["token_present"] = token is not None
    write_json(receipt, record)
    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", required=True, type=Path, help="trained adapter folder")
    parser.add_argument("--receipt", required=True, type=Path, help="JSON receipt to write")
    parser.add_argument("--domain", required=True)
    parser.add_argument("--hub-repo", default="", help="<owner>/<name> on the Hugging Face Hub; empty: skip")
    parser.add_argument(
        "--hub-private",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="create the Hub repo as private (default) if it does not exist",
    )
    parser.add_argument("--s3-prefix", default="", help="s3://<bucket>/<prefix>; empty: skip")
    parser.add_argument("--model-card", type=Path, help="upload this file as README.md")
    parser.add_argument("--token-env", default="HF_TOKEN", help="environment variable holding the Hub token")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")
    parser.add_argument("--verbose", action="store_true")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    # Keep HTTP client internals out of the log even with --verbose (request details, never the token).
    for name in ("httpx", "httpcore", "urllib3", "botocore", "boto3", "s3transfer", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.WARNING)
    publish(
        args.adapter,
        args.receipt,
        args.domain,
        hub_repo=args.hub_repo,
        s3_prefix=args.s3_prefix,
        model_card=args.model_card,
        hub_private=args.hub_private,
        token_env=args.token_env,
        dry_run=args.dry_run,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
