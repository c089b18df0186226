"""The config schema is the one place for defaults, bounds and meanings: config/README.md is rendered
from it, config/config.yaml holds only what has no default, and a value a step would reject fails
when the workflow is parsed (dry runs of the real workflow), not in a job."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import write_config_reference
import yaml
from snakemake.utils import validate

from cache_embed.settings.config_reference import REFERENCE_PATH, REGENERATE_COMMAND, SCHEMA_PATH, iter_keys, render
from conftest import PROJECT_ROOT, run_snakemake

SCHEMA_FILE = PROJECT_ROOT / SCHEMA_PATH
MEDICAL = {
    "queries": "medquad",
    "spec": "resources/domains/medical.yaml",
    "external": {
        "natural_val": "resources/eval/natural_val.jsonl",
        "natural_test": "resources/eval/natural_test.jsonl",
    },
    "phrasing_guard": "natural_val",
}


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_FILE.read_text(encoding="utf-8"))


def validated(config: dict) -> dict:
    """`config` with the schema's defaults filled in, exactly as the workflow validates it."""
    config = copy.deepcopy(config)
    validate(config, str(SCHEMA_FILE))
    return config


def test_committed_reference_is_rendered_from_the_schema():
    committed = (PROJECT_ROOT / REFERENCE_PATH).read_text(encoding="utf-8")
    assert committed == render(load_schema()), (
        f"{REFERENCE_PATH} is out of date with {SCHEMA_PATH}; run `{REGENERATE_COMMAND}` and commit the result"
    )


def test_check_mode_fails_on_a_stale_page_and_names_the_command(tmp_path, capsys):
    page = tmp_path / "README.md"
    assert write_config_reference.main(["--schema", str(SCHEMA_FILE), "--output", str(page)]) == 0
    assert write_config_reference.main(["--schema", str(SCHEMA_FILE), "--output", str(page), "--check"]) == 0
    page.write_text(page.read_text(encoding="utf-8").replace("| 2e-4 |", "| 2e-5 |"), encoding="utf-8")
    assert (
        write_config_reference.run_main(
            write_config_reference.main, ["--schema", str(SCHEMA_FILE), "--output", str(page), "--check"]
        )
        == 1
    )
    error = capsys.readouterr().err
    assert REGENERATE_COMMAND in error and "-| `train.learning_rate` | 2e-5 |" in error


def test_rendered_rows_show_defaults_bounds_and_meanings():
    page = render(load_schema())
    rows = {line.split(" | ")[0].strip("| `"): line for line in page.splitlines() if line.startswith("| `")}
    assert rows["train.warmup_ratio"] == (
        "| `train.warmup_ratio` | 0.1 | number in [0, 1) | Fraction of the steps spent warming the learning rate up. |"
    )
    assert "| (required) | non-empty text |" in rows["domains.<name>.queries"]
    assert "| `a09a35458c702b33eeacc393d103063234e8bc28` |" in rows["generate.vllm.revision"]
    assert "| integer ≥ 2 |" in rows["train.batch_size"]
    assert "| one of `vllm`, `openai`, `structure` |" in rows["generate.backend"]
    # Every key of the schema has its row, and each section its heading.
    schema = load_schema()
    assert set(rows) == {path for path, _, _ in iter_keys(schema) if "." in path}
    assert [line[3:] for line in page.splitlines() if line.startswith("## ")] == list(schema["properties"])


def test_every_key_has_a_description_and_every_optional_leaf_a_default():
    schema = load_schema()
    keys = list(iter_keys(schema))
    assert len(keys) > 80
    no_description = [path for path, key, _ in keys if not key.get("description", "").strip()]
    assert not no_description, f"keys without a description in {SCHEMA_PATH}: {no_description}"
    # Optional leaves without a default on purpose: when absent, generate.backend applies, and the
    # router category is the domain's name.
    unset_on_purpose = {"domains.<name>.backend", "domains.<name>.router_category"}
    no_default = [
        path for path, key, required in keys if "default" not in key and not required and path not in unset_on_purpose
    ]
    assert not no_default, f"optional keys without a default in {SCHEMA_PATH}: {no_default}"
    assert all("description" in schema["properties"][section] for section in schema["properties"])


def test_defaults_are_the_pinned_values_and_config_yaml_sets_only_the_domains():
    config = validated({"domains": {"medical": MEDICAL}})
    assert config["generate"]["vllm"]["revision"] == "a09a35458c702b33eeacc393d103063234e8bc28"
    assert config["base_model"]["revision"] == "c004d8e3e901237d8fa7e9fff12774962e391ce5"
    assert config["medquad"]["content_sha256"] == "a59511ec3c51ebc84321746251b298fa4b48cbf18938fd2dd0ad85323a0c0269"
    assert config["medquad"]["commit"] == "577bd37b96c02d1833b2c9eed2de9f96964e96cb"
    assert config["train"]["learning_rate"] == 2e-4 and isinstance(config["train"]["learning_rate"], float)
    assert config["train"]["warmup_ratio"] == 0.1
    assert config["train"]["lora"] == {
        "r": 32,
        "alpha": 128,
        "dropout": 0.1,
        "target_modules": ["query", "key", "value", "dense"],
    }
    assert config["split"] == {"train": 0.8, "val": 0.1, "test": 0.1, "seed": 13}
    assert config["domains"]["medical"]["max_reject_fraction"] == 0.01
    main_config = yaml.safe_load((PROJECT_ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    assert list(main_config) == ["domains"], "config/config.yaml holds only what has no default"
    assert validated(main_config) == config


# A value each step script rejects in its argument checks, as (config path, value). The schema must
# refuse it too, so that the mistake shows when the workflow is parsed rather than in a (GPU) job.
REJECTED_BY_STEPS = [
    ("train.warmup_ratio", 1),
    ("train.warmup_ratio", -0.1),
    ("train.batch_size", 1),
    ("train.epochs", 0),
    ("train.learning_rate", 0),
    ("train.scale", 0),
    ("train.eval_steps", 0),
    ("train.max_seq_length", 0),
    ("train.lora.r", 0),
    ("train.max_examples", -1),
    ("train.max_val_examples", -1),
    ("generate.paraphrases", 0),
    ("generate.negatives", 0),
    ("generate.batch_size", 0),
    ("generate.max_retries", -1),
    ("generate.max_queries", -1),
    ("generate.min_yield", 1.5),
    ("generate.shards", 0),
    ("generate.openai.concurrency", 0),
    ("evaluate.deploy_precision", 0),
    ("evaluate.target_precisions", [0.95, 1.5]),
    ("evaluate.bootstrap", -1),
    ("evaluate.batch_size", 0),
    ("evaluate.max_calibration_triplets", -1),
    ("split.val", -0.1),
    ("base_model.name", "/models/all-MiniLM-L6-v2"),
    ("base_model.name", "./all-MiniLM-L6-v2"),
    ("base_model.name", "all-MiniLM-L6-v2"),
    ("publish.hub_repo", "no-owner"),
]
ACCEPTED_AT_THE_EDGE = [
    ("train.warmup_ratio", 0.99),
    ("train.warmup_ratio", 0),
    ("train.batch_size", 2),
    ("generate.min_yield", 1),
    ("evaluate.deploy_precision", 1),
    ("base_model.name", "sentence-transformers/all-MiniLM-L6-v2"),
]


def with_value(path: str, value) -> dict:
    config = {"domains": {"medical": dict(MEDICAL)}}
    *sections, name = path.split(".")
    node = config
    for section in sections:
        node = node.setdefault(section, {})
    node[name] = value
    return config


@pytest.mark.parametrize(("path", "value"), REJECTED_BY_STEPS)
def test_schema_refuses_what_a_step_would_reject(path, value):
    errors = list(jsonschema.Draft202012Validator(load_schema()).iter_errors(with_value(path, value)))
    assert [".".join(str(part) for part in error.absolute_path) for error in errors] in (
        [path],
        [f"{path}.1"],  # a list's bad item
    ), [error.message for error in errors]


@pytest.mark.parametrize(("path", "value"), ACCEPTED_AT_THE_EDGE)
def test_schema_accepts_the_edges_steps_accept(path, value):
    jsonschema.Draft202012Validator(load_schema()).validate(with_value(path, value))


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        ("train:\n  warmup_ratio: 1\n", ["Failed validating 'exclusiveMaximum'", "['train']['warmup_ratio']"]),
        (
            "split: {train: 0.9, val: 0.1, test: 0.1}\n",
            ["split.train + split.val + split.test must sum to 1, got 0.9 + 0.1 + 0.1 = 1.1"],
        ),
    ],
    ids=["warmup_ratio", "split_sum"],
)
def test_bad_value_fails_the_dry_run_at_parse_time(project, config_text, expected):
    (project / "bad.yaml").write_text(config_text, encoding="utf-8")
    result = run_snakemake(project, "-n", "--configfile", "bad.yaml", check=False, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    for text in expected:
        assert text in output, output[-3000:]
    assert "Job stats" not in output, "the bad value was caught only after planning jobs"
