"""The HTML report: built from real MedQuAD stats and evaluation outputs, self-contained,
escaped, and rendered by a real headless Chromium without console errors or broken images."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import evaluate_adapter
import make_report
import numpy as np
import pytest

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import write_json
from cache_embed.report import html_report

EVIL = "<script>alert('x')</script> & \"quotes\""


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


def fake_embeddings(texts, rng, shift):
    """Anchors and positives share a direction; negatives sit further away (more so with `shift`)."""
    vectors = rng.normal(size=(len(texts), 16))
    for row, text in enumerate(texts):
        base = np.zeros(16)
        base[int(text.split(":")[1]) % 16] = 3.0 if not text.startswith("n") else 3.0 - shift
        vectors[row] += base
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="session")
def report_inputs(tmp_path_factory, medquad_splits) -> dict:
    out = tmp_path_factory.mktemp("report_inputs")
    rng = np.random.default_rng(0)
    triplets = [
        {
            "anchor": f"a:{i}",
            "positive": f"p:{i}",
            "negative": f"n:{i}",
            "qtype": EVIL if i % 5 == 0 else "symptoms",
            "negative_kind": ["same_focus_other_qtype", "llm_hard_negative"][i % 2],
            "positive_kind": ["surface_form", "synonym", "synonym_form"][i % 3],
        }
        for i in range(80)
    ]
    calibration = [{"anchor": f"a:{i}", "positive": f"p:{i}", "negative": f"n:{i}"} for i in range(100, 140)]
    pairs = [(f"a:{i}", f"p:{i}", 1) for i in range(10)] + [(f"a:{i}", f"n:{i}", 0) for i in range(10)]
    padding = [f"d:{i}" for i in range(200, 300)]  # questions of other groups that pad both caches
    texts = sorted({t[f] for t in triplets + calibration for f in ("anchor", "positive", "negative")} | set(padding))
    embeddings = {"base": fake_embeddings(texts, rng, 0.5), "adapter": fake_embeddings(texts, rng, 2.0)}
    metrics, curves = evaluate_adapter.compute_metrics(
        triplets,
        texts,
        embeddings,
        {EVIL: {"file": "x.csv", "pairs": pairs}},
        [0.8, 0.85, 0.9],
        [0.95, 0.99],
        0.9,
        50,
        7,
        calibration=calibration,
        cache_sizes=("test_cache", "120"),
        calibration_padding=padding,
        test_padding=padding,
    )
    metrics["models"].update(base="resources/models/l6", adapter="models/medical/adapter", adapter_base_model=EVIL)
    metrics["settings"] = {"bootstrap": 50}
    metrics["versions"] = evaluate_adapter.versions()
    plots = evaluate_adapter.make_plots(curves, 0.9, out / "plots")
    write_json(out / "metrics.json", metrics)
    write_json(
        out / "train.stats.json",
        {
            "triplets": 900,
            "yield": 0.9,
            "dropped": {"duplicate": 12, EVIL: 1},
            "failures": {"json_parse": 3},
            "backend": "structure",
        },
    )
    write_json(out / "val.stats.json", {"triplets": 100})  # keys missing: tolerated
    history = {
        "train": [
            {"step": s, "loss": 2.0 / (1 + s / 10), "learning_rate": 2e-4 * (1 - s / 60), "epoch": s / 60}
            for s in range(5, 60, 5)
        ],
        "eval": [
            {"step": s, "eval_loss": 1.5 / (1 + s / 20), "eval_val_cosine_accuracy": 0.8 + s / 500, "eval_runtime": 1.2}
            for s in (0, 20, 40, 60)
        ],
        "summary": {"train_runtime": 30.0},
        "base": {"val_cosine_accuracy": 0.8},
        "final": {"val_cosine_accuracy": 0.92},
    }
    write_json(out / "history.json", history)
    write_json(
        out / "training_info.json",
        {
            "steps": 60,
            "base_model": {"name": EVIL, "local_path": "/home/someone/models/l6"},
            "trainable_parameters": 73728,
        },
    )
    write_json(
        out / "val_halves.stats.json",
        {
            "select": {"triplets": 61, "anchors": 20, "groups": 7},
            "calibrate": {"triplets": 59, "anchors": 21, "groups": 8},
        },
    )
    return {"dir": out, "plots": plots, "splits": medquad_splits}


@pytest.fixture(scope="session")
def report_html(report_inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    inputs, splits = report_inputs["dir"], report_inputs["splits"]
    config = {"evaluate": {"thresholds": [0.8]}, "note": EVIL, "medquad": {"url": "https://x/{commit}.zip"}}
    assert (
        make_report.main(
            [
                "--domain",
                "medical",
                "--metrics",
                str(inputs / "metrics.json"),
                "--plots",
                *map(str, report_inputs["plots"]),
                "--queries-stats",
                str(splits / "queries.stats.json"),
                "--split-stats",
                str(splits / "split.stats.json"),
                "--triplet-stats",
                str(inputs / "train.stats.json"),
                str(inputs / "val.stats.json"),
                "--history",
                str(inputs / "history.json"),
                "--training-info",
                str(inputs / "training_info.json"),
                "--val-halves",
                str(inputs / "val_halves.stats.json"),
                "--effective-config-json",
                json.dumps(config),
                "--write-effective-config",
                str(out.parent / "effective_config.json"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out.parent / "effective_config.json").read_text(encoding="utf-8")) == config
    return out


def test_report_is_self_contained_and_escaped(report_html, report_inputs, medquad_splits):
    page = report_html.read_text(encoding="utf-8")
    parser = Elements()
    parser.feed(page)
    tags = [tag for tag, _ in parser.elements]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    images = [attrs for tag, attrs in parser.elements if tag == "img"]
    assert len(images) == 5  # training curves + four evaluation plots
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(attrs["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for tag, attrs in parser.elements:
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith(("data:", "#")), (tag, attrs)
    csp = [
        attrs
        for tag, attrs in parser.elements
        if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp and "default-src 'none'" in csp[0]["content"]
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "url(" not in page and "@import" not in page
    # Content: data stats, split overlap, training, threshold warning, config.
    stats = json.loads((medquad_splits / "queries.stats.json").read_text(encoding="utf-8"))
    assert f"<td>{stats['records']:,}</td>" in page  # thousands separated
    assert "focus overlap between splits (must be 0)" in page
    assert "Dropped by reason" in page and "duplicate" in page and "Failures by reason" in page
    assert "The threshold moves." in page and "Pair-based threshold (secondary)" in page
    # The first section is the answer: deploy thresholds, test wrong share and repeat hit rate with intervals.
    metrics = json.loads((report_inputs["dir"] / "metrics.json").read_text(encoding="utf-8"))
    rec = metrics["recommended_threshold"]
    first_h2 = re.search(r"<h2[^>]*>([^<]*)</h2>", page).group(1)
    assert first_h2 == "The answer"
    answer = page[page.index('<section id="answer">') : page.index("</section>")]
    assert "TEST wrong share [95% CI]" in answer and "TEST repeats answered [95% CI]" in answer
    assert [size["cache_size"] for size in rec["sizes"]] == [80, 120]
    for size in rec["sizes"]:
        assert html.escape(size["verdict"], quote=True) in answer
        for name in ("adapter", "base"):
            entry = size[name]
            shown = (
                html_report.fmt(entry["threshold"], 4)
                if entry["threshold"] is not None
                else f"none (closest {html_report.fmt(entry['evaluated_at'], 4)})"
            )
            assert f"<td>{html.escape(size['label'])}</td><td>{name}</td><td>{shown}</td>" in answer
            assert f"<td>{entry['test']['reading']}</td>" in answer
    assert "calibration half of the validation split" in answer and "stress figure" in answer
    assert "/home/someone" not in page and "0.000<" not in page
    assert "Validation halves" in page and "<td>61</td>" in page
    assert "95% CI of delta" in page and "By negative kind" in page and "llm_hard_negative" in page
    # Per paraphrase kind, the cache's rank-1 beside the pair figures.
    section = page[page.index("By paraphrase kind") :]
    section = section[: section.index("</table>")]
    assert "adapter cache rank-1" in section and "<td>synonym_form</td>" in section
    kinds = metrics["test"]["by_positive_kind"]
    assert (
        sum(entry["repeat_lookups"] for entry in kinds.values())
        == metrics["test"]["adapter"]["cache"]["repeat_lookups"]
    )
    synonym = kinds["synonym"]["adapter"]["cache_rank1_correct"]
    assert f"<td>{html_report.fmt(synonym)}</td>" in section
    assert "External labelled pairs" in page and "Effective configuration" in page
    assert "https://x/{commit}.zip" in page


def test_training_series_reads_several_history_shapes():
    trainer_log = [
        {"step": 10, "loss": 1.0, "epoch": 0.1, "learning_rate": 1e-4},
        {"step": 20, "eval_loss": 0.8, "eval_runtime": 3.0, "eval_acc": 0.7},
        {"step": 20, "train_runtime": 9.0, "train_loss": 0.9},
    ]
    series = html_report.training_series(trainer_log)
    assert series["train_loss"] == [(10.0, 1.0), (20.0, 0.9)]
    assert series["eval_loss"] == [(20.0, 0.8)] and series["eval_acc"] == [(20.0, 0.7)]
    assert "eval_runtime" not in series and "epoch" not in series
    nested = {"train": [{"global_step": 5, "loss": 2.0}], "validation": [{"step": 5, "loss": 1.5, "accuracy": 0.6}]}
    series = html_report.training_series(nested)
    assert series == {"eval_accuracy": [(5.0, 0.6)], "eval_loss": [(5.0, 1.5)], "train_loss": [(5.0, 2.0)]}
    assert html_report.training_series({"final": {"acc": 1.0}}) == {}
    assert html_report.training_plot({}) is None
    assert html_report.training_plot(html_report.training_series(trainer_log))[:4] == b"\x89PNG"


def test_report_flags_name_missing_files(tmp_path, report_inputs, capsys):
    rc = make_report.run_main(
        make_report.main,
        [
            "--domain",
            "d",
            "--metrics",
            str(report_inputs["dir"] / "metrics.json"),
            "--history",
            str(tmp_path / "nope.json"),
            "--output",
            str(tmp_path / "r.html"),
        ],
    )
    assert rc == 1 and "nope.json: not found" in capsys.readouterr().err


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {complete: img.complete, width: img.naturalWidth, data: img.src.indexOf("data:image/png;base64,") === 0};
  });
  document.body.setAttribute("data-image-check", JSON.stringify(images));
});
</script>"""


def test_report_renders_in_headless_chromium(report_html, tmp_path):
    browser = chromium_binary()
    if browser is None:
        if os.environ.get("CI", "false").lower() not in ("", "0", "false"):
            pytest.fail("chromium is not installed but CI is set: install Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    # A copy with an image checker: the CSP stays as it is except that inline scripts may run.
    page = report_html.read_text(encoding="utf-8")
    page = page.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';", 1)
    page = page.replace("</body>", CHECK_SCRIPT + "</body>", 1)
    checked = tmp_path / "checked.html"
    checked.write_text(page, encoding="utf-8")
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            checked.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, "console messages (errors, blocked loads):\n" + "\n".join(console)
    match = re.search(r'data-image-check="([^"]*)"', result.stdout)
    assert match, "the page did not finish loading in Chromium:\n" + result.stdout[:2000]
    images = json.loads(match.group(1).replace("&quot;", '"'))
    assert len(images) == 5
    assert all(image["complete"] and image["width"] > 0 and image["data"] for image in images), images


def deploy_metrics(chosen_on: str, reading: str) -> dict:
    """recommended_threshold with one size, in the evaluator's shape (figures made up)."""
    test = {
        "wrong_share": 0.03 if reading == "held" else 0.09,
        "repeat_hit_rate": 0.41,
        "novel_false_hit_rate": 0.0002,
        "wrong_share_cp": {"low": 0.02, "high": 0.045} if reading == "held" else {"low": 0.07, "high": 0.11},
        "repeat_hit_rate_ci": {"low": 0.38, "high": 0.44},
        "novel_false_hit_rate_ci": {"low": 0.0001, "high": 0.0004},
        "reading": reading,
    }
    entry = {
        "threshold": 0.8123,
        "bound_met_on_val": True,
        "evaluated_at": 0.8123,
        "val": {"wrong_share_upper": 0.049},
        "test": test,
    }
    cache = {"cached_entries": 4341, "distractor_entries": 2200, "repeat_lookups": 9000, "novel_lookups": 9000}
    return {
        "recommended_threshold": {
            "chosen_on": chosen_on,
            "calibration_triplets": 3000,
            "max_wrong_share": 0.05,
            "repeat_share": 0.5,
            "rule": "the rule",
            "padding": "padding note.",
            "novel_traffic": "stress figure.",
            "sizes": [
                {
                    "cache_size": 4341,
                    "names": ["test_cache"],
                    "label": "4,341 (test cache)",
                    "calibration_cache": cache,
                    "test_cache": cache,
                    "adapter": entry,
                    "base": None,
                    "verdict": "computed verdict",
                }
            ],
            "note": "n",
        }
    }


def test_answer_section_shows_the_reading_and_small_numbers_at_their_scale():
    page = html_report.section_answer(deploy_metrics("val", "held"))
    assert "computed verdict" in page and "<td>0.8123</td>" in page and "<td>held</td>" in page
    assert "0.02% [0.01%, 0.04%]" in page  # 2e-4 is not "0.000"
    assert "calibration half of the validation split" in page and "<td>4,341 (test cache)</td>" in page
    failed = html_report.section_answer(deploy_metrics("test", "missed"))
    assert "<td>missed</td>" in failed and "optimistic" in failed and "9.0% [7.0%, 11.0%]" in failed


TRAINING_INFO = {
    "hyperparameters": {"scale": 20.0, "epochs": 1},
    "base_model": {
        "name": "sentence-transformers/all-MiniLM-L6-v2",
        "revision": "x",
        "local_path": "resources/models/l6",
    },
    "trainable_parameters": 73728,
    "train": {"used": 900, "records": 1000},
    "val": {"used": 100},
    "loss": "mnrl",
    "steps": 60,
    "epochs_done": 1.0,
    "precision": "fp32",
    "device": "cpu",
    "metric_for_best_model": "eval_acc",
    "best_metric": 0.9,
}


def test_model_card_carries_measured_figures_and_the_domain_spec(report_inputs, tmp_path):
    import write_model_card

    from cache_embed.report.model_card import load_card_spec, render_card

    root = Path(__file__).resolve().parents[1] / "resources" / "domains"
    write_json(tmp_path / "info.json", TRAINING_INFO)
    out = tmp_path / "card.md"
    assert (
        write_model_card.main(
            [
                "--domain",
                "medical",
                "--metrics",
                str(report_inputs["dir"] / "metrics.json"),
                "--training-info",
                str(tmp_path / "info.json"),
                "--spec",
                str(root / "medical.yaml"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    card = out.read_text(encoding="utf-8")
    metrics = json.loads((report_inputs["dir"] / "metrics.json").read_text(encoding="utf-8"))
    rec = metrics["recommended_threshold"]
    largest = rec["sizes"][-1]
    assert (
        f"for {largest['label']} cached questions it is `{html_report.fmt(largest['adapter']['threshold'], 4)}`" in card
    )
    assert all(size["verdict"] in card for size in rec["sizes"]) and "stress figure" in card
    assert "license: cc-by-4.0" in card and "BMC Bioinformatics 20:511, 2019" in card
    assert "Not evaluated yet" not in card and "\n/" not in card and " /home" not in card
    programming = render_card("programming", TRAINING_INFO, load_card_spec(root / "programming.yaml"))
    assert "MedQuAD" not in programming and "license: other" in programming and "Not evaluated yet" in programming
    assert "domains.programming.queries" in programming


def seed_metrics(repeat_hit_rate: float, p_chr_auc: float) -> dict:
    """A metrics.json of one seed: the adapter's headline figures; the base's are the same for all."""

    def model(hit, auc, roc):
        return {"roc_auc": roc, "cache": {"rank1_correct": 0.8, "p_chr": {"auc": auc}}}

    def deploy(hit):
        return {"threshold": 0.9, "test": {"repeat_hit_rate": hit, "wrong_share": 0.04}}

    # The headline is the largest evaluated size (the last); the smaller one must not be read.
    smaller = {"cache_size": 10, "adapter": deploy(0.99), "base": deploy(0.99)}
    largest = {"cache_size": 20, "adapter": deploy(repeat_hit_rate), "base": deploy(0.20)}
    return {
        "recommended_threshold": {"sizes": [smaller, largest]},
        "test": {"adapter": model(repeat_hit_rate, p_chr_auc, 0.95), "base": model(0.2, 0.62, 0.77)},
    }


def test_seed_spread_claims_only_differences_larger_than_the_spread(tmp_path):
    from cache_embed.evaluate.seed_spread import seed_spread

    # repeats: 0.30, 0.10, 0.26 against the base's 0.20 (signs differ: not claimed);
    # P-CHR AUC: 0.70, 0.71, 0.69 against 0.62 (mean +0.08, sd 0.01: claimed).
    runs = {42: seed_metrics(0.30, 0.70), 43: seed_metrics(0.10, 0.71), 44: seed_metrics(0.26, 0.69)}
    spread = seed_spread(runs)
    assert spread["seeds"] == [42, 43, 44]
    repeats = spread["adapter"]["repeat_hit_rate"]
    assert repeats["mean"] == pytest.approx(0.22) and repeats["sd"] == pytest.approx(0.10583, abs=1e-5)
    assert (repeats["min"], repeats["max"]) == (0.10, 0.30)
    assert spread["delta"]["repeat_hit_rate"]["claimed"] is False
    assert spread["delta"]["p_chr_auc"]["mean"] == pytest.approx(0.08)
    assert spread["delta"]["p_chr_auc"]["claimed"] is True
    # Same sign but mean within two sds: 0.21, 0.50, 0.22 against 0.20 (mean +0.11, sd 0.16).
    wide = seed_spread({1: seed_metrics(0.21, 0.7), 2: seed_metrics(0.50, 0.7), 3: seed_metrics(0.22, 0.7)})
    assert wide["delta"]["repeat_hit_rate"]["claimed"] is False

    # The report reads the other seeds from their paths and shows the table and the verdicts.
    first = tmp_path / "eval" / "metrics.json"
    write_json(first, {**runs[42], "models": {}})
    paths = []
    for seed in (43, 44):
        paths.append(tmp_path / "seeds" / str(seed) / "metrics.json")
        write_json(paths[-1], runs[seed])
    write_json(tmp_path / "training_info.json", {"hyperparameters": {"seed": 42}})
    out = tmp_path / "report.html"
    argv = ["--domain", "medical", "--metrics", str(first), "--training-info", str(tmp_path / "training_info.json")]
    assert make_report.main([*argv, "--seed-metrics", *map(str, paths), "--output", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "Spread over 3 training seeds (42, 43, 44)" in page
    # repeats, wrong share (0.04 both) and rank-1 (0.8 both): not claimed; P-CHR AUC and ROC-AUC: claimed.
    assert page.count("within the seed spread: not claimed") == 3 and page.count("larger than the seed spread") == 2
    assert "0.2200 ± 0.1058" in page
    # Without other seeds there is no such section; a path that is not a seed's is refused.
    assert make_report.main([*argv, "--output", str(out)]) == 0
    assert "training seeds" not in out.read_text(encoding="utf-8")
    write_json(tmp_path / "other" / "metrics.json", runs[43])
    with pytest.raises(PipelineError, match="seeds/<seed>/metrics.json"):
        make_report.main([*argv, "--seed-metrics", str(tmp_path / "other" / "metrics.json"), "--output", str(out)])
