# Triplet generation: one job per shard of each split (generate_triplets), then one merge per
# split (gather_triplets). The backend is the domain's `backend` or generate.backend.


rule generate_triplets:
    input:
        unpack(generate_inputs),
        script=step_script("generate_triplets.py"),
        library=step_library("generate_triplets.py"),
    output:
        triplets="results/{domain}/triplets/shards/{split}/{shard}-of-{shards}.jsonl",
        stats="results/{domain}/triplets/shards/{split}/{shard}-of-{shards}.stats.json",
    log:
        "logs/{domain}/generate_triplets/{split}/{shard}-of-{shards}.log",
    benchmark:
        "benchmarks/{domain}/generate_triplets/{split}/{shard}-of-{shards}.tsv"
    wildcard_constraints:
        split="train|val|test",
        shard=r"\d+",
        shards=r"\d+",
    retries: 1
    conda:
        "../../envs/generate.yaml"
    threads: 1
    resources:
        mem_mb=generate_mem_mb,
        runtime=generate_runtime,
        gpu=generate_gpus,
        gpu_manufacturer=generate_gpu_manufacturer,
    params:
        settings=settings_param(generate_settings),
        runtime_options=generate_runtime_options,
        inputs=generate_input_flags,
    shell:
        "python {input.script:q} --input {input.split:q} --output {output.triplets:q}"
        " --stats {output.stats:q} --split {wildcards.split} --domain {wildcards.domain}"
        " --shard {wildcards.shard} --shards {wildcards.shards} {params.inputs}"
        " {params.settings} {params.runtime_options} > {log:q} 2>&1"


rule gather_triplets:
    input:
        script=step_script("gather_triplets.py"),
        library=step_library("gather_triplets.py"),
        split="results/{domain}/splits/{split}.jsonl",
        triplets=shard_triplets,
        stats=shard_stats,
    output:
        triplets="results/{domain}/triplets/{split}.jsonl",
        stats="results/{domain}/triplets/{split}.stats.json",
    log:
        "logs/{domain}/gather_triplets/{split}.log",
    benchmark:
        "benchmarks/{domain}/gather_triplets/{split}.tsv"
    wildcard_constraints:
        split="train|val|test",
    conda:
        "../../envs/generate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        settings=settings_param(gather_settings),
    shell:
        "python {input.script:q} --triplets {input.triplets:q} --shard-stats {input.stats:q}"
        " --input {input.split:q} --split {wildcards.split} {params.settings}"
        " --output {output.triplets:q} --stats {output.stats:q} > {log:q} 2>&1"
