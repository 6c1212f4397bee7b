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


# All splits of a task in one job (they read the same table): one rule per task, since the task's
# split kinds, the run's split seeds and the scaffold_cv settings decide its file list.


def task_split_files(ds):
    return [f"data/processed/{ds}/splits/{s}.parquet" for s in _plan.split_names(config, ds)]


for _ds in _task_domain:

    rule:
        name:
            f"split_{_ds}"
        input:
            table=f"data/processed/{_ds}/table.parquet",
        output:
            task_split_files(_ds),
        params:
            dataset=_ds,
            registry=config["registry"],
            settings=_plan.settings_hash(_plan.split_settings(config, REGISTRY, _ds)),
            cv=f"--cv-folds {config['scaffold_cv']['folds']} --cv-valid-fraction {config['scaffold_cv']['valid_fraction']}",
        log:
            f"data/logs/split/{_ds}.log",
        benchmark:
            f"data/benchmarks/split/{_ds}.tsv"
        resources:
            **step_resources("split"),
        shell:
            "{PY} split --registry {params.registry} --dataset {params.dataset} {params.cv}"
            " --processed data/processed/{params.dataset} --out {output} > {log} 2>&1"
