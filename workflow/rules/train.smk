rule fetch_base_model:
    input:
        script=step_script("fetch_base_model.py"),
        library=step_library("fetch_base_model.py"),
    output:
        model=directory("resources/models/{model}"),
    log:
        "logs/fetch_base_model/{model}.log",
    benchmark:
        "benchmarks/fetch_base_model/{model}.tsv"
    wildcard_constraints:
        model=model_slug(config["base_model"]["name"]),
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=settings_param(fetch_base_model_settings),
    shell:
        "python {input.script:q} --output {output.model:q} {params.settings} > {log:q} 2>&1"


rule train_adapter:
    input:
        script=step_script("train_adapter.py"),
        library=step_library("train_adapter.py"),
        train="results/{domain}/triplets/train.jsonl",
        # Checkpoints are selected on one half of val; the deploy threshold is calibrated on the other.
        val="results/{domain}/triplets/val_select.jsonl",
        val_queries="results/{domain}/splits/val.jsonl",
        # The cache training sees: mined negatives come from its questions.
        train_queries="results/{domain}/splits/train.jsonl",
        base_model=base_model_dir(),
        spec=domain_spec,
    output:
        adapter=directory("models/{domain}/adapter"),
        history="results/{domain}/train/history.json",
    log:
        "logs/{domain}/train_adapter.log",
    benchmark:
        "benchmarks/{domain}/train_adapter.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=train_gpus,
        gpu_manufacturer=train_gpu_manufacturer,
    params:
        # Not an output: checkpoints must outlive a failed or killed job so a rerun resumes.
        checkpoint_dir="results/{domain}/train/checkpoints",
        settings=settings_param(train_settings),
    shell:
        "HF_HUB_OFFLINE=1 python {input.script:q} --train-data {input.train:q}"
        " --val-data {input.val:q} --val-queries {input.val_queries:q} --train-queries {input.train_queries:q}"
        " --base-model {input.base_model:q}"
        " --output {output.adapter:q} --history {output.history:q}"
        " --checkpoint-dir {params.checkpoint_dir:q} --domain {wildcards.domain}"
        " --domain-spec {input.spec:q} --threads {threads} {params.settings} > {log:q} 2>&1"


# The other seeds of train.seeds: the same step with another seed, for the report's spread.
use rule train_adapter as train_adapter_seed with:
    output:
        adapter=directory("models/{domain}/seeds/{seed}/adapter"),
        history="results/{domain}/seeds/{seed}/history.json",
    log:
        "logs/{domain}/seeds/{seed}/train_adapter.log",
    benchmark:
        "benchmarks/{domain}/seeds/{seed}/train_adapter.tsv"
    params:
        checkpoint_dir="results/{domain}/seeds/{seed}/checkpoints",
        settings=settings_param(train_seed_settings),


rule merge_adapter:
    input:
        script=step_script("merge_adapter.py"),
        library=step_library("merge_adapter.py"),
        adapter="models/{domain}/adapter",
        base_model=base_model_dir(),
    output:
        merged=directory("models/{domain}/merged"),
    log:
        "logs/{domain}/merge_adapter.log",
    benchmark:
        "benchmarks/{domain}/merge_adapter.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=settings_param(merge_settings),
    shell:
        "HF_HUB_OFFLINE=1 python {input.script:q} --base-model {input.base_model:q}"
        " --adapter {input.adapter:q} --output {output.merged:q} --threads {threads}"
        " {params.settings} > {log:q} 2>&1"
