rule export_deploy:
    input:
        script=step_script("export_deploy.py"),
        library=step_library("export_deploy.py"),
        merged="models/{domain}/merged",
        metrics="results/{domain}/eval/metrics.json",
    output:
        deploy=directory("models/{domain}/deploy"),
    log:
        "logs/{domain}/export_deploy.log",
    benchmark:
        "benchmarks/{domain}/export_deploy.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=settings_param(deploy_settings),
    shell:
        "HF_HUB_OFFLINE=1 python {input.script:q} --merged {input.merged:q}"
        " --eval-metrics {input.metrics:q} --output {output.deploy:q} {params.settings}"
        " > {log:q} 2>&1"


rule replay_cache:
    input:
        script=step_script("replay_cache.py"),
        library=step_library("replay_cache.py"),
        test_triplets="results/{domain}/triplets/test.jsonl",
        train_triplets="results/{domain}/triplets/train.jsonl",
        queries=expand("results/{{domain}}/splits/{split}.jsonl", split=SPLITS),
        test_queries="results/{domain}/splits/test.jsonl",
        metrics="results/{domain}/eval/metrics.json",
        deploy="models/{domain}/deploy",
        base_model=base_model_dir(),
    output:
        metrics="results/{domain}/replay/metrics.json",
        markdown="results/{domain}/replay/metrics.md",
        plot=report(
            "results/{domain}/replay/replay.png",
            caption="../report/replay_cache.rst",
            category="Replay",
            subcategory="{domain}",
        ),
    log:
        "logs/{domain}/replay_cache.log",
    benchmark:
        "benchmarks/{domain}/replay_cache.tsv"
    conda:
        "../../envs/deploy.yaml"
    threads: 2
    resources:
        mem_mb=replay_mem_mb,
        runtime=120,
    params:
        settings=settings_param(replay_settings),
    shell:
        "HF_HUB_OFFLINE=1 python {input.script:q} --test-triplets {input.test_triplets:q}"
        " --train-triplets {input.train_triplets:q} --queries {input.queries:q}"
        " --test-queries {input.test_queries:q}"
        " --base-model {input.base_model:q} --adapter-model {input.deploy:q}/model"
        " --eval-metrics {input.metrics:q} --output-json {output.metrics:q}"
        " --output-md {output.markdown:q} --plot {output.plot:q} --domain {wildcards.domain}"
        " --threads {threads} {params.settings} > {log:q} 2>&1"
