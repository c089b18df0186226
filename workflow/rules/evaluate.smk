# Evaluation as a semantic cache: val split in two halves (checkpoint selection / threshold
# calibration), base against adapter on the held-out test split, the model card and the report.


rule split_val_triplets:
    input:
        script=step_script("split_val_triplets.py"),
        library=step_library("split_val_triplets.py"),
        triplets="results/{domain}/triplets/val.jsonl",
        queries="results/{domain}/splits/val.jsonl",
    output:
        select="results/{domain}/triplets/val_select.jsonl",
        calibrate="results/{domain}/triplets/val_calibrate.jsonl",
        stats="results/{domain}/triplets/val_halves.stats.json",
    log:
        "logs/{domain}/split_val_triplets.log",
    benchmark:
        "benchmarks/{domain}/split_val_triplets.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=settings_param(split_val_settings),
    shell:
        "python {input.script:q} --triplets {input.triplets:q} --queries {input.queries:q}"
        " --select {output.select:q} --calibrate {output.calibrate:q} --stats {output.stats:q}"
        " {params.settings} > {log:q} 2>&1"


rule evaluate_adapter:
    input:
        script=step_script("evaluate_adapter.py"),
        library=step_library("evaluate_adapter.py"),
        triplets="results/{domain}/triplets/test.jsonl",
        queries="results/{domain}/splits/test.jsonl",
        calibration_triplets="results/{domain}/triplets/val_calibrate.jsonl",
        calibration_queries="results/{domain}/splits/val.jsonl",
        # Questions of other focus groups that pad the calibration and test caches to each cache size.
        calibration_padding="results/{domain}/splits/train.jsonl",
        test_padding=expand(
            "results/{{domain}}/splits/{split}.jsonl", split=("train", "val")
        ),
        adapter="models/{domain}/adapter",
        base_model=base_model_dir(),
        external=evaluation_external_files,
    output:
        metrics="results/{domain}/eval/metrics.json",
        markdown="results/{domain}/eval/metrics.md",
        similarity_histograms=evaluation_plot("similarity_histograms"),
        precision_recall=evaluation_plot("precision_recall"),
        threshold_sweep=evaluation_plot("threshold_sweep"),
        cache_operations=evaluation_plot("cache_operations"),
    log:
        "logs/{domain}/evaluate_adapter.log",
    benchmark:
        "benchmarks/{domain}/evaluate_adapter.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        plots_dir=evaluation_plots_dir,
        settings=settings_param(evaluate_settings),
    shell:
        "HF_HUB_OFFLINE=1 python {input.script:q} --triplets {input.triplets:q}"
        " --queries {input.queries:q} --base-model {input.base_model:q} --adapter {input.adapter:q}"
        " --output-json {output.metrics:q} --output-md {output.markdown:q}"
        " --plots-dir {params.plots_dir:q} --calibration-triplets {input.calibration_triplets:q}"
        " --calibration-queries {input.calibration_queries:q}"
        " --calibration-padding {input.calibration_padding:q} --test-padding {input.test_padding:q}"
        " {params.settings} > {log:q} 2>&1"


# Each other seed's adapter evaluated like the deployed one (no bootstrap: the seeds give the
# spread; an empty plots folder: no plots, the report shows the deployed adapter's).
use rule evaluate_adapter as evaluate_adapter_seed with:
    input:
        script=step_script("evaluate_adapter.py"),
        library=step_library("evaluate_adapter.py"),
        triplets="results/{domain}/triplets/test.jsonl",
        queries="results/{domain}/splits/test.jsonl",
        calibration_triplets="results/{domain}/triplets/val_calibrate.jsonl",
        calibration_queries="results/{domain}/splits/val.jsonl",
        calibration_padding="results/{domain}/splits/train.jsonl",
        test_padding=expand(
            "results/{{domain}}/splits/{split}.jsonl", split=("train", "val")
        ),
        adapter="models/{domain}/seeds/{seed}/adapter",
        base_model=base_model_dir(),
        external=evaluation_external_files,
    output:
        metrics="results/{domain}/seeds/{seed}/metrics.json",
        markdown="results/{domain}/seeds/{seed}/metrics.md",
    log:
        "logs/{domain}/seeds/{seed}/evaluate_adapter.log",
    benchmark:
        "benchmarks/{domain}/seeds/{seed}/evaluate_adapter.tsv"
    params:
        plots_dir="",
        settings=settings_param(evaluate_seed_settings),


rule model_card:
    input:
        script=step_script("write_model_card.py"),
        library=step_library("write_model_card.py"),
        metrics="results/{domain}/eval/metrics.json",
        adapter="models/{domain}/adapter",
        spec=domain_spec,
    output:
        card="results/{domain}/model_card.md",
    log:
        "logs/{domain}/model_card.log",
    benchmark:
        "benchmarks/{domain}/model_card.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "python {input.script:q} --domain {wildcards.domain} --metrics {input.metrics:q}"
        " --training-info {input.adapter:q}/training_info.json --spec {input.spec:q}"
        " --output {output.card:q} > {log:q} 2>&1"


rule report:
    input:
        script=step_script("make_report.py"),
        library=step_library("make_report.py"),
        metrics="results/{domain}/eval/metrics.json",
        plots=expand("results/{{domain}}/eval/plots/{name}.png", name=EVAL_PLOTS),
        queries_stats="results/{domain}/queries.stats.json",
        split_stats="results/{domain}/splits/stats.json",
        val_halves="results/{domain}/triplets/val_halves.stats.json",
        triplet_stats=expand(
            "results/{{domain}}/triplets/{split}.stats.json", split=SPLITS
        ),
        history="results/{domain}/train/history.json",
        adapter="models/{domain}/adapter",
        seed_metrics=seed_metrics_files,
    output:
        html=report(
            "results/{domain}/report.html",
            caption="../report/html_report.rst",
            category="Report",
        ),
        effective_config="results/{domain}/eval/effective_config.json",
    log:
        "logs/{domain}/report.log",
    benchmark:
        "benchmarks/{domain}/report.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        step_settings=report_settings,
    shell:
        "python {input.script:q} --domain {wildcards.domain} --metrics {input.metrics:q}"
        " --plots {input.plots:q} --queries-stats {input.queries_stats:q}"
        " --split-stats {input.split_stats:q} --val-halves {input.val_halves:q}"
        " --triplet-stats {input.triplet_stats:q}"
        " --history {input.history:q} --training-info {input.adapter:q}/training_info.json"
        " --seed-metrics {input.seed_metrics:q}"
        " --effective-config-json {params.step_settings:q}"
        " --write-effective-config {output.effective_config:q} --output {output.html:q}"
        " > {log:q} 2>&1"


# The run's answer in one page (results/<domain>/summary.md), from the figures the run wrote.
rule summary:
    input:
        script=step_script("write_summary.py"),
        library=step_library("write_summary.py"),
        metrics="results/{domain}/eval/metrics.json",
        effective_config="results/{domain}/eval/effective_config.json",
        replay=replay_metrics_for_summary,
    output:
        markdown="results/{domain}/summary.md",
        figures="results/{domain}/summary.json",
    log:
        "logs/{domain}/summary.log",
    benchmark:
        "benchmarks/{domain}/summary.tsv"
    conda:
        "../../envs/deploy.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        replay=lambda wildcards, input: (
            f"--replay-metrics {input.replay[0]}" if input.replay else ""
        ),
    shell:
        "python {input.script:q} --domain {wildcards.domain} --metrics {input.metrics:q}"
        " --effective-config {input.effective_config:q} {params.replay}"
        " --output-md {output.markdown:q} --output-json {output.figures:q} > {log:q} 2>&1"
