# Opt-in: push a trained adapter to the Hugging Face Hub and/or S3 (config `publish`), e.g.
#   snakemake --profile profiles/aws-g5 results/medical/publish/receipt.json


rule publish_adapter:
    input:
        script=step_script("publish_adapter.py"),
        library=step_library("publish_adapter.py"),
        adapter="models/{domain}/adapter",
    output:
        receipt="results/{domain}/publish/receipt.json",
    log:
        "logs/{domain}/publish_adapter.log",
    benchmark:
        "benchmarks/{domain}/publish_adapter.tsv"
    # A small upload that needs the submitting shell's credentials: run it on the head node.
    localrule: True
    conda:
        "../../envs/publish.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        hub_repo=publish_hub_repo,
        s3_prefix=publish_s3_prefix,
        flags=publish_flags(),
    shell:
        "python {input.script:q} --adapter {input.adapter:q} --receipt {output.receipt:q}"
        " --domain {wildcards.domain} --hub-repo={params.hub_repo:q} --s3-prefix={params.s3_prefix:q}"
        " {params.flags} > {log:q} 2>&1"
