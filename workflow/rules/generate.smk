# Triplet generation: one job per shard of each split (generate_triplets), then one merge per
# split (gather_triplets). The backend is the domain's `backend` or generate.backend.


rule generate_triplets:
    input:
        unpack(generate_inputs),
        script=step_script("generate_triplets.py"),
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
        gpu_manufacturer="nvidia",
    params:
        backend=generate_backend_of,
        spec=generate_spec,
        forms=generate_forms,
        paraphrases=config["generate"]["paraphrases"],
        negatives=config["generate"]["negatives"],
        max_queries=config["generate"]["max_queries"],
        batch_size=config["generate"]["batch_size"],
        seed=config["generate"]["seed"],
        max_retries=config["generate"]["max_retries"],
        min_yield=config["generate"]["min_yield"],
        model=generate_model,
        revision=config["generate"]["vllm"]["revision"],
        tensor_parallel=generate_tensor_parallel,
        max_model_len=config["generate"]["vllm"]["max_model_len"],
        gpu_memory_utilization=config["generate"]["vllm"]["gpu_memory_utilization"],
        dtype=config["generate"]["vllm"]["dtype"],
        temperature=config["generate"]["sampling"]["temperature"],
        top_p=config["generate"]["sampling"]["top_p"],
        max_tokens=config["generate"]["sampling"]["max_tokens"],
        base_url=config["generate"]["openai"]["base_url"],
        api_key_env=config["generate"]["openai"]["api_key_env"],
        concurrency=config["generate"]["openai"]["concurrency"],
        timeout=config["generate"]["openai"]["timeout_s"],
        openai_retries=config["generate"]["openai"]["retries"],
        max_synonym_words=config["generate"]["structure"]["max_synonym_words"],
    shell:
        "python {input.script:q} --input {input.split:q} --output {output.triplets:q}"
        " --stats {output.stats:q} --split {wildcards.split} --domain {wildcards.domain}"
        " --shard {wildcards.shard} --shards {wildcards.shards} --backend {params.backend}"
        " --spec {params.spec:q} --paraphrases {params.paraphrases} --negatives {params.negatives}"
        " --max-queries {params.max_queries} --batch-size {params.batch_size} --seed {params.seed}"
        " --max-retries {params.max_retries} --min-yield {params.min_yield}"
        " --model={params.model:q} --revision {params.revision:q} --tensor-parallel {params.tensor_parallel}"
        " --max-model-len {params.max_model_len} --gpu-memory-utilization {params.gpu_memory_utilization}"
        " --dtype {params.dtype:q} --temperature {params.temperature} --top-p {params.top_p}"
        " --max-tokens {params.max_tokens} --base-url {params.base_url:q} --api-key-env {params.api_key_env:q}"
        " --concurrency {params.concurrency} --timeout {params.timeout} --openai-retries {params.openai_retries}"
        " --forms {params.forms:q} --max-synonym-words {params.max_synonym_words}"
        " > {log:q} 2>&1"


rule gather_triplets:
    input:
        script=step_script("gather_triplets.py"),
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
        shards=config["generate"]["shards"],
    shell:
        "python {input.script:q} --triplets {input.triplets:q} --shard-stats {input.stats:q}"
        " --input {input.split:q} --split {wildcards.split} --shards {params.shards}"
        " --output {output.triplets:q} --stats {output.stats:q} > {log:q} 2>&1"
