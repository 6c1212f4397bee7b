# evaluate: data/results/<dataset>/<method>/<protocol>/<split>/seed<k>.json (paths: pipeline_src/paths.py;
# the plan: pipeline_src/plan.py). seed<k> is the pretraining seed: a result is one (seed, split)
# unit, the same units for every method of a task. One job per (task, method) and protocol, over
# every seed and split (one process: start-up and data loading are paid once):
#   linear    each checkpoint's pooled frozen features once (data/features/<task>/<method>/seed<k>.npz),
#             then a linear probe per split;
#   finetune  the encoder of each checkpoint trained once per split;
#   classical one job per (task, baseline), its features once, one fit per split (first seed only).
# One rule per protocol and task (the task decides the split list); `params.settings` is the hash of
# exactly the config slice and registry entry the results depend on (their rerun trigger; the report
# refuses a result whose recorded hash differs).


def task_checkpoints(ds):
    corpus = config["domains"][_task_domain[ds]]["corpus"]
    seeds = _plan.pretrain_seeds(config, _task_domain[ds])
    return lambda w: [f"data/checkpoints/{corpus}/{w.method}/seed{k}/model.pt" for k in seeds]


def _outs(ds, protocol):
    """A job's results: every split and seed of the protocol, for the job's {method}."""
    return [f"data/results/{ds}/{{method}}/{protocol}/{k.split}/seed{k.seed}.json"
            for k in _plan.results_of(config, ds, "any", protocol)]


EVAL_TARGETS = [k.path() for k in _plan.planned_results(config, REGISTRY)]
_METHODS_RE = METHODS_RE

for _ds in _task_domain:
    _settings = {p: _plan.eval_settings_hash(config, REGISTRY, _ds, p) for p in _plan.PROTOCOLS}
    _splits = task_split_files(_ds)
    _seeds = _plan.pretrain_seeds(config, _task_domain[_ds])

    rule:
        name:
            f"evaluate_linear_{_ds}"
        input:
            models=task_checkpoints(_ds),
            table=f"data/processed/{_ds}/table.parquet",
            splits=_splits,
        output:
            features=[f"data/features/{_ds}/{{method}}/seed{k}.npz" for k in _seeds],
            results=_outs(_ds, "linear"),
        wildcard_constraints:
            method=_METHODS_RE,
        params:
            dataset=_ds,
            settings=_settings["linear"],
        threads: 1  # mostly single-threaded work: two such jobs share two cores better than one
        resources:
            **step_resources("evaluate_linear", gpu=True),
        log:
            f"data/logs/evaluate/{_ds}/{{method}}/linear.log",
        benchmark:
            f"data/benchmarks/evaluate/{_ds}/{{method}}/linear.tsv"
        shell:
            "{PY} evaluate --config {CONFIG_PATH} --dataset {params.dataset} --method {wildcards.method}"
            " --protocol linear --processed data/processed/{params.dataset} --model {input.models}"
            " --features {output.features} --out {output.results} --threads {threads} > {log} 2>&1"

    if _ds in _plan.finetune_tasks(config):

        rule:
            name:
                f"evaluate_finetune_{_ds}"
            input:
                models=task_checkpoints(_ds),
                table=f"data/processed/{_ds}/table.parquet",
                splits=_splits,
            output:
                _outs(_ds, "finetune"),
            wildcard_constraints:
                method=_METHODS_RE,
            params:
                dataset=_ds,
                settings=_settings["finetune"],
            threads: config["resources"]["evaluate_finetune"]["threads"]
            resources:
                **step_resources("evaluate_finetune", gpu=True),
            log:
                f"data/logs/evaluate/{_ds}/{{method}}/finetune.log",
            benchmark:
                f"data/benchmarks/evaluate/{_ds}/{{method}}/finetune.tsv"
            shell:
                "{PY} evaluate --config {CONFIG_PATH} --dataset {params.dataset} --method {wildcards.method}"
                " --protocol finetune --processed data/processed/{params.dataset} --model {input.models}"
                " --out {output} --threads {threads} > {log} 2>&1"

    rule:
        name:
            f"evaluate_classical_{_ds}"
        input:
            table=f"data/processed/{_ds}/table.parquet",
            splits=_splits,
        output:
            _outs(_ds, "classical"),
        wildcard_constraints:
            method="|".join(_plan.BASELINE_KINDS),
        params:
            dataset=_ds,
            settings=_settings["classical"],
        threads: 2
        resources:
            **step_resources("evaluate_classical"),
        log:
            f"data/logs/evaluate/{_ds}/{{method}}/classical.log",
        benchmark:
            f"data/benchmarks/evaluate/{_ds}/{{method}}/classical.tsv"
        shell:
            "{PY} evaluate --config {CONFIG_PATH} --dataset {params.dataset} --method {wildcards.method}"
            " --protocol classical --processed data/processed/{params.dataset}"
            " --out {output} --threads {threads} > {log} 2>&1"
