# evaluate: data/results/<dataset>/<method>/<protocol>/<split>/seed<k>.json
#   linear    one job per (task, method): pooled frozen features once (data/features/...npz), then
#             a linear probe per split and seed (cheap: one process instead of one per split);
#   classical one job per (task, baseline), every split and seed;
#   finetune  one job per (task, method, split, seed): each trains the encoder.
# The linear and classical rules are one per domain, since the domain's splits decide their outputs.
from pipeline_src.evaluate.baselines import BASELINES, baselines_for


def corpus_of_task(ds):
    return config["domains"][_task_domain[ds]]["corpus"]


def checkpoint(w):
    return f"data/checkpoints/{corpus_of_task(w.dataset)}/{w.method}/model.pt"


def result_seeds(split, protocol):
    """Seeded splits carry their own seed; a finetune run varies its seed on every split; a
    deterministic probe on a deterministic split is run once."""
    if "_seed" in split:
        return [int(split.rsplit("_seed", 1)[1])]
    return list(config["seeds"]) if protocol == "finetune" else [config["seeds"][0]]


def runs_of(domain_cfg, protocol):
    """`<split>/seed<k>` of every result a (task, method, protocol) has in this domain."""
    return [f"{s}/seed{k}" for s in split_names(domain_cfg) for k in result_seeds(s, protocol)]


def eval_targets():
    out = []
    ev = config["evaluate"]
    for d in config["domains"].values():
        for ds in d["tasks"]:
            runs = [(m, p) for m in config["methods_run"] for p in ev["protocols"]]
            if ev["baselines"]:
                runs += [(b, "classical") for b in baselines_for(REGISTRY[ds]["input"]["kind"])]
            for method, protocol in runs:
                out += [f"data/results/{ds}/{method}/{protocol}/{r}.json" for r in runs_of(d, protocol)]
    return out


EVAL_TARGETS = eval_targets()
_SPLIT_RE = r"scaffold|fixed|column|random_seed\d+|scaffold_balanced_seed\d+"


def task_splits(w):
    return [f"data/processed/{w.dataset}/splits/{s}.parquet" for s in split_names(config["domains"][_task_domain[w.dataset]])]


for _domain, _d in config["domains"].items():

    rule:
        name:
            f"evaluate_linear_{_domain}"
        input:
            model=checkpoint,
            table="data/processed/{dataset}/table.parquet",
            splits=task_splits,
        output:
            features="data/features/{dataset}/{method}.npz",
            results=[f"data/results/{{dataset}}/{{method}}/linear/{r}.json" for r in runs_of(_d, "linear")],
        wildcard_constraints:
            dataset="|".join(_d["tasks"]),
            method="|".join(config["methods"]),
        threads: 1  # mostly single-threaded work: two such jobs share two cores better than one
        resources:
            **step_resources("evaluate_linear", gpu=True),
        log:
            "data/logs/evaluate/{dataset}/{method}/linear.log",
        benchmark:
            "data/benchmarks/evaluate/{dataset}/{method}/linear.tsv"
        shell:
            "{PY} evaluate --config {CONFIG_PATH} --dataset {wildcards.dataset} --method {wildcards.method}"
            " --protocol linear --processed data/processed/{wildcards.dataset} --model {input.model}"
            " --features {output.features} --out {output.results} --threads {threads} > {log} 2>&1"

    rule:
        name:
            f"evaluate_classical_{_domain}"
        input:
            table="data/processed/{dataset}/table.parquet",
            splits=task_splits,
        output:
            [f"data/results/{{dataset}}/{{method}}/classical/{r}.json" for r in runs_of(_d, "classical")],
        wildcard_constraints:
            dataset="|".join(_d["tasks"]),
            method="|".join(BASELINES),
        threads: 2
        resources:
            **step_resources("evaluate_classical"),
        log:
            "data/logs/evaluate/{dataset}/{method}/classical.log",
        benchmark:
            "data/benchmarks/evaluate/{dataset}/{method}/classical.tsv"
        shell:
            "{PY} evaluate --config {CONFIG_PATH} --dataset {wildcards.dataset} --method {wildcards.method}"
            " --protocol classical --processed data/processed/{wildcards.dataset}"
            " --out {output} --threads {threads} > {log} 2>&1"


rule evaluate_finetune:
    input:
        model=checkpoint,
        table="data/processed/{dataset}/table.parquet",
        split="data/processed/{dataset}/splits/{split}.parquet",
    output:
        "data/results/{dataset}/{method}/finetune/{split}/seed{seed}.json",
    wildcard_constraints:
        split=_SPLIT_RE,
    threads: 2
    resources:
        **step_resources("evaluate_finetune", gpu=True),
    log:
        "data/logs/evaluate/{dataset}/{method}/finetune/{split}/seed{seed}.log",
    benchmark:
        "data/benchmarks/evaluate/{dataset}/{method}/finetune/{split}/seed{seed}.tsv"
    shell:
        "{PY} evaluate --config {CONFIG_PATH} --dataset {wildcards.dataset} --method {wildcards.method}"
        " --protocol finetune --processed data/processed/{wildcards.dataset} --model {input.model}"
        " --out {output} --threads {threads} > {log} 2>&1"

