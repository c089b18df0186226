rule evaluate_adapter:
    input:
        script=step_script("evaluate_adapter.py"),
        triplets="results/{domain}/triplets/test.jsonl",
        calibration_triplets="results/{domain}/triplets/val.jsonl",
        adapter="models/{domain}/adapter",
        base_model=base_model_dir(),
        external=evaluation_external_files(),
    output:
        metrics="results/{domain}/eval/metrics.json",
        markdown="results/{domain}/eval/metrics.md",
        similarity_histograms=evaluation_plot("similarity_histograms"),
        precision_recall=evaluation_plot("precision_recall"),
        threshold_sweep=evaluation_plot("threshold_sweep"),
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
        thresholds=" ".join(str(t) for t in config["evaluate"]["thresholds"]),
        target_precisions=" ".join(
            str(p) for p in config["evaluate"]["target_precisions"]
        ),
        deploy_precision=config["evaluate"]["deploy_precision"],
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["evaluate"]["seed"],
        batch_size=config["evaluate"]["batch_size"],
        max_calibration_triplets=config["evaluate"]["max_calibration_triplets"],
        external=evaluation_external_flags(),
    shell:
        "HF_HUB_OFFLINE=1 python {input.script:q} --triplets {input.triplets:q}"
        " --base-model {input.base_model:q} --adapter {input.adapter:q}"
        " --output-json {output.metrics:q} --output-md {output.markdown:q}"
        " --plots-dir {params.plots_dir:q} --thresholds {params.thresholds}"
        " --target-precisions {params.target_precisions}"
        " --deploy-precision {params.deploy_precision} --bootstrap {params.bootstrap}"
        " --seed {params.seed} --batch-size {params.batch_size}"
        " --calibration-triplets {input.calibration_triplets:q}"
        " --max-calibration-triplets {params.max_calibration_triplets}"
        " --external {params.external} > {log:q} 2>&1"


rule report:
    input:
        script=step_script("make_report.py"),
        metrics="results/{domain}/eval/metrics.json",
        plots=expand("results/{{domain}}/eval/plots/{name}.png", name=EVAL_PLOTS),
        queries_stats="results/{domain}/queries.stats.json",
        split_stats="results/{domain}/splits/stats.json",
        triplet_stats=expand(
            "results/{{domain}}/triplets/{split}.stats.json", split=SPLITS
        ),
        history="results/{domain}/train/history.json",
        adapter="models/{domain}/adapter",
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
        effective_config=evaluation_effective_config,
    shell:
        "python {input.script:q} --domain {wildcards.domain} --metrics {input.metrics:q}"
        " --plots {input.plots:q} --queries-stats {input.queries_stats:q}"
        " --split-stats {input.split_stats:q} --triplet-stats {input.triplet_stats:q}"
        " --history {input.history:q} --training-info {input.adapter:q}/training_info.json"
        " --effective-config-json {params.effective_config:q}"
        " --write-effective-config {output.effective_config:q} --output {output.html:q}"
        " > {log:q} 2>&1"
