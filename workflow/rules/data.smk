rule download_medquad:
    input:
        # ancient(): the archive is verified against the pinned content digest, so editing the
        # downloader never makes a verified archive stale (nor asks an offline machine to refetch).
        script=ancient(step_script("download_medquad.py")),
        library=[ancient(path) for path in step_library("download_medquad.py")],
    output:
        archive=protected("resources/medquad/MedQuAD-{commit}.zip"),
    log:
        "logs/download_medquad/{commit}.log",
    benchmark:
        "benchmarks/download_medquad/{commit}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        settings=settings_param(download_settings),
    shell:
        "python {input.script:q} --output {output.archive:q} {params.settings} > {log:q} 2>&1"


rule parse_medquad:
    input:
        script=step_script("parse_medquad.py"),
        library=step_library("parse_medquad.py"),
        archive=medquad_archive_path(),
    output:
        queries="results/{domain}/queries.jsonl",
        rejects="results/{domain}/queries.rejects.jsonl",
        stats="results/{domain}/queries.stats.json",
    log:
        "logs/{domain}/parse_medquad.log",
    benchmark:
        "benchmarks/{domain}/parse_medquad.tsv"
    wildcard_constraints:
        domain=domain_pattern(MEDQUAD_DOMAINS),
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        settings=settings_param(parse_settings),
    shell:
        "python {input.script:q} --archive {input.archive:q} --output {output.queries:q}"
        " --rejects {output.rejects:q} --stats {output.stats:q} {params.settings} > {log:q} 2>&1"


rule import_queries:
    input:
        script=step_script("import_queries.py"),
        library=step_library("import_queries.py"),
        source=domain_queries_file,
    output:
        queries="results/{domain}/queries.jsonl",
        rejects="results/{domain}/queries.rejects.jsonl",
        stats="results/{domain}/queries.stats.json",
    log:
        "logs/{domain}/import_queries.log",
    benchmark:
        "benchmarks/{domain}/import_queries.tsv"
    wildcard_constraints:
        domain=domain_pattern(FILE_DOMAINS),
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=15,
    params:
        settings=settings_param(import_settings),
    shell:
        "python {input.script:q} --source {input.source:q} --domain {wildcards.domain}"
        " --output {output.queries:q} --rejects {output.rejects:q} --stats {output.stats:q}"
        " {params.settings} > {log:q} 2>&1"


rule split_queries:
    input:
        script=step_script("split_queries.py"),
        library=step_library("split_queries.py"),
        queries="results/{domain}/queries.jsonl",
    output:
        train="results/{domain}/splits/train.jsonl",
        val="results/{domain}/splits/val.jsonl",
        test="results/{domain}/splits/test.jsonl",
        stats="results/{domain}/splits/stats.json",
    log:
        "logs/{domain}/split_queries.log",
    benchmark:
        "benchmarks/{domain}/split_queries.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        settings=settings_param(split_settings),
    shell:
        "python {input.script:q} --queries {input.queries:q} --train {output.train:q}"
        " --val {output.val:q} --test {output.test:q} --stats {output.stats:q}"
        " {params.settings} > {log:q} 2>&1"
