from pathlib import Path

from snakemake.utils import validate

# Validate early so a bad key or value fails at parse time, naming its path; defaults are filled in.
validate(config, workflow.source_path("../schemas/config.schema.yaml"))

PROJECT_ROOT = Path(workflow.basedir).parent
SCRIPTS = PROJECT_ROOT / "scripts"
SPLITS = ["train", "val", "test"]
MEDQUAD_DOMAINS = sorted(
    name for name, spec in config["domains"].items() if spec["queries"] == "medquad"
)
FILE_DOMAINS = sorted(
    name for name, spec in config["domains"].items() if spec["queries"] != "medquad"
)


def domain_pattern(domains):
    # A pattern that matches none of the names keeps a rule unreachable when its list is empty.
    return "|".join(domains) if domains else "(?!x)x"


def project_path(path):
    """Paths in config are relative to the project root unless absolute."""
    path = Path(path)
    return str(path if path.is_absolute() else PROJECT_ROOT / path)


def medquad_archive_path():
    return f"resources/medquad/MedQuAD-{config['medquad']['commit']}.zip"


def medquad_source():
    medquad = config["medquad"]
    if medquad["archive"]:
        source = medquad["archive"]
        return source if "://" in source else project_path(source)
    return medquad["url"].format(commit=medquad["commit"])


def domain_queries_file(wildcards):
    return project_path(config["domains"][wildcards.domain]["queries"])


def all_targets():
    return [f"models/{domain}/adapter" for domain in sorted(config["domains"])]
