rule fetch_base_model:
    input:
        script=step_script("fetch_base_model.py"),
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
        name=config["base_model"]["name"],
        revision=config["base_model"]["revision"],
        local_path=train_base_model_local_path(),
    shell:
        "python {input.script:q} --name {params.name:q} --revision {params.revision:q}"
        " --local-path={params.local_path:q} --output {output.model:q} > {log:q} 2>&1"


rule train_adapter:
    input:
        script=step_script("train_adapter.py"),
        train="results/{domain}/triplets/train.jsonl",
        # Checkpoints are selected on one half of val; the deploy threshold is calibrated on the other.
        val="results/{domain}/triplets/val_select.jsonl",
        base_model=base_model_dir(),
        spec=generate_spec,
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
        base_model_id=config["base_model"]["name"],
        epochs=config["train"]["epochs"],
        batch_size=config["train"]["batch_size"],
        lr=config["train"]["learning_rate"],
        scale=config["train"]["scale"],
        warmup_ratio=config["train"]["warmup_ratio"],
        scheduler=config["train"]["scheduler"],
        weight_decay=config["train"]["weight_decay"],
        max_grad_norm=config["train"]["max_grad_norm"],
        max_examples=config["train"]["max_examples"],
        max_val_examples=config["train"]["max_val_examples"],
        max_drop_fraction=config["train"]["max_drop_fraction"],
        max_seq_length=config["train"]["max_seq_length"],
        seed=config["train"]["seed"],
        loss=config["train"]["loss"],
        mini_batch_size=config["train"]["mini_batch_size"],
        precision=config["train"]["precision"],
        eval_steps=config["train"]["eval_steps"],
        best_metric=config["train"]["best_metric"],
        lora_r=config["train"]["lora"]["r"],
        lora_alpha=config["train"]["lora"]["alpha"],
        lora_dropout=config["train"]["lora"]["dropout"],
        lora_target_modules=" ".join(config["train"]["lora"]["target_modules"]),
    shell:
        "HF_HUB_OFFLINE=1 python {input.script:q} --train-data {input.train:q}"
        " --val-data {input.val:q} --base-model {input.base_model:q}"
        " --base-model-id {params.base_model_id:q} --output {output.adapter:q}"
        " --history {output.history:q} --checkpoint-dir {params.checkpoint_dir:q}"
        " --domain {wildcards.domain} --domain-spec {input.spec:q} --threads {threads}"
        " --epochs {params.epochs} --batch-size {params.batch_size} --lr {params.lr}"
        " --scale {params.scale} --warmup-ratio {params.warmup_ratio}"
        " --scheduler {params.scheduler} --weight-decay {params.weight_decay}"
        " --max-grad-norm {params.max_grad_norm} --max-examples {params.max_examples}"
        " --max-val-examples {params.max_val_examples}"
        " --max-drop-fraction {params.max_drop_fraction}"
        " --max-seq-length {params.max_seq_length} --seed {params.seed} --loss {params.loss}"
        " --mini-batch-size {params.mini_batch_size} --precision {params.precision}"
        " --eval-steps {params.eval_steps} --best-metric {params.best_metric}"
        " --lora-r {params.lora_r} --lora-alpha {params.lora_alpha}"
        " --lora-dropout {params.lora_dropout}"
        " --lora-target-modules {params.lora_target_modules} > {log:q} 2>&1"


rule merge_adapter:
    input:
        script=step_script("merge_adapter.py"),
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
        atol=config["train"]["merge_atol"],
    shell:
        "HF_HUB_OFFLINE=1 python {input.script:q} --base-model {input.base_model:q}"
        " --adapter {input.adapter:q} --output {output.merged:q} --atol {params.atol}"
        " --threads {threads} > {log:q} 2>&1"
