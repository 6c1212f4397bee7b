# download -> prepare -> splits. One download and one prepare rule per dataset (their outputs
# differ by dataset), generated from the registry; one split rule per domain.

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
        priority: 20  # the data jobs first (MOSES prepare gates every chemistry job)
        resources:
            **step_resources("download"),
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
        priority: 20
        resources:
            **step_resources("prepare"),
        shell:
            "{PY} prepare --registry {params.registry} --dataset {params.dataset} --raw {params.raw}"
            " --out {params.out} --threads {threads} > {log} 2>&1"


# All splits of a task in one job (they read the same table): one rule per domain, since the
# domain's `splits` and the run's seeds decide the file list.
for _domain, _d in config["domains"].items():

    rule:
        name:
            f"split_{_domain}"
        input:
            table="data/processed/{dataset}/table.parquet",
        output:
            [f"data/processed/{{dataset}}/splits/{s}.parquet" for s in split_names(_d)],
        wildcard_constraints:
            dataset="|".join(_d["tasks"]),
        params:
            registry=config["registry"],
        log:
            "data/logs/split/{dataset}.log",
        benchmark:
            "data/benchmarks/split/{dataset}.tsv"
        resources:
            **step_resources("split"),
        shell:
            "{PY} split --registry {params.registry} --dataset {wildcards.dataset}"
            " --processed data/processed/{wildcards.dataset} --out {output} > {log} 2>&1"
