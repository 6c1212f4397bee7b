# download -> prepare -> splits. One download and one prepare rule per dataset (their outputs
# differ by dataset), generated from the registry; the split rule is generic.

for _ds in used_datasets():
    _out = processed_files(_ds)

    rule:
        name:
            f"download_{_ds}"
        output:
            raw_files(_ds),
        params:
            dataset=_ds,
            out=f"data/raw/{_ds}",
            registry=config["registry"],
            mirrors=" ".join(f"--mirror {m}" for m in config["data"]["mirrors"]),
        log:
            f"data/logs/download/{_ds}.log",
        benchmark:
            f"data/benchmarks/download/{_ds}.tsv"
        resources:
            mem_mb=500,
            runtime=30,
        shell:
            "{PY} download --config {CONFIG_PATH} --registry {params.registry} --dataset {params.dataset}"
            " --out {params.out} {params.mirrors} > {log} 2>&1"

    rule:
        name:
            f"prepare_{_ds}"
        input:
            raw_files(_ds),
        output:
            table=directory(_out["table"]) if is_sharded(_ds) else _out["table"],
            qc=_out["qc"],
            encoding=_out["encoding"],
        params:
            dataset=_ds,
            raw=f"data/raw/{_ds}",
            out=f"data/processed/{_ds}",
            registry=config["registry"],
        threads: config["data"]["prepare_threads"] if is_sharded(_ds) else 1
        log:
            f"data/logs/prepare/{_ds}.log",
        benchmark:
            f"data/benchmarks/prepare/{_ds}.tsv"
        resources:
            mem_mb=4000 if is_sharded(_ds) else 2000,
            runtime=60,
        shell:
            "{PY} prepare --registry {params.registry} --dataset {params.dataset} --raw {params.raw}"
            " --out {params.out} --threads {threads} > {log} 2>&1"


rule split:
    input:
        table="data/processed/{dataset}/table.parquet",
    output:
        "data/processed/{dataset}/splits/{kind}.parquet",
    wildcard_constraints:
        kind=r"scaffold|fixed|(scaffold_balanced|random)_seed\d+",
    params:
        registry=config["registry"],
        kind=lambda w: w.kind.split("_seed")[0],
        seed=lambda w: int(w.kind.split("_seed")[1]) if "_seed" in w.kind else 0,
    log:
        "data/logs/split/{dataset}/{kind}.log",
    benchmark:
        "data/benchmarks/split/{dataset}/{kind}.tsv"
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "{PY} split --registry {params.registry} --dataset {wildcards.dataset} --processed data/processed/{wildcards.dataset}"
        " --kind {params.kind} --seed {params.seed} --out {output} > {log} 2>&1"
