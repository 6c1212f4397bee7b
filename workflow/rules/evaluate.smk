# evaluate: data/results/<dataset>/<method>/<protocol>/<split>/seed<k>.json
# linear: frozen features computed once per (dataset, checkpoint), then a probe per split;
# finetune: encoder + head per (split, seed); classical: the non-learned baselines.
from pipeline_src.evaluate.baselines import BASELINES, baselines_for


def corpus_of_task(ds):
    for d in config["domains"].values():
        if ds in d["tasks"]:
            return d["corpus"]
    raise ValueError(f"{ds} is a task of no domain")


def checkpoint(w):
    return f"data/checkpoints/{corpus_of_task(w.dataset)}/{w.method}/model.pt"


def result_seeds(split, protocol):
    """Seeded splits carry their own seed; a finetune run varies its seed on every split; a
    deterministic probe on a deterministic split is run once."""
    if "_seed" in split:
        seeds = [int(split.rsplit("_seed", 1)[1])]
        return seeds
    return list(config["seeds"]) if protocol == "finetune" else [config["seeds"][0]]


def eval_targets():
    out = []
    ev = config["evaluate"]
    for d in config["domains"].values():
        for ds in d["tasks"]:
            runs = [(m, p) for m in config["methods_run"] for p in ev["protocols"]]
            if ev["baselines"]:
                runs += [(b, "classical") for b in baselines_for(REGISTRY[ds]["input"]["kind"])]
            for split in split_names(ds, d):
                for method, protocol in runs:
                    for k in result_seeds(split, protocol):
                        out.append(f"data/results/{ds}/{method}/{protocol}/{split}/seed{k}.json")
    return out


EVAL_TARGETS = eval_targets()
_SPLIT_RE = r"scaffold|fixed|random_seed\d+|scaffold_balanced_seed\d+"


rule features:
    input:
        model=checkpoint,
        table="data/processed/{dataset}/table.parquet",
    output:
        "data/features/{dataset}/{method}.npz",
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=120,
    log:
        "data/logs/features/{dataset}/{method}.log",
    benchmark:
        "data/benchmarks/features/{dataset}/{method}.tsv"
    shell:
        "{PY} features --config {CONFIG_PATH} --dataset {wildcards.dataset} --model {input.model}"
        " --processed data/processed/{wildcards.dataset} --out {output} --threads {threads} > {log} 2>&1"


rule evaluate_linear:
    input:
        features="data/features/{dataset}/{method}.npz",
        model=checkpoint,
        split="data/processed/{dataset}/splits/{split}.parquet",
    output:
        "data/results/{dataset}/{method}/linear/{split}/seed{seed}.json",
    wildcard_constraints:
        split=_SPLIT_RE,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        "data/logs/evaluate/{dataset}/{method}/linear/{split}/seed{seed}.log",
    benchmark:
        "data/benchmarks/evaluate/{dataset}/{method}/linear/{split}/seed{seed}.tsv"
    shell:
        "{PY} evaluate --config {CONFIG_PATH} --dataset {wildcards.dataset} --method {wildcards.method}"
        " --protocol linear --split {wildcards.split} --seed {wildcards.seed}"
        " --processed data/processed/{wildcards.dataset} --split-file {input.split}"
        " --features {input.features} --model {input.model} --out {output} > {log} 2>&1"


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
        gpu=1,
        mem_mb=6000,
        runtime=600,
    log:
        "data/logs/evaluate/{dataset}/{method}/finetune/{split}/seed{seed}.log",
    benchmark:
        "data/benchmarks/evaluate/{dataset}/{method}/finetune/{split}/seed{seed}.tsv"
    shell:
        "{PY} evaluate --config {CONFIG_PATH} --dataset {wildcards.dataset} --method {wildcards.method}"
        " --protocol finetune --split {wildcards.split} --seed {wildcards.seed}"
        " --processed data/processed/{wildcards.dataset} --split-file {input.split}"
        " --model {input.model} --out {output} --threads {threads} > {log} 2>&1"


rule evaluate_classical:
    input:
        table="data/processed/{dataset}/table.parquet",
        split="data/processed/{dataset}/splits/{split}.parquet",
    output:
        "data/results/{dataset}/{method}/classical/{split}/seed{seed}.json",
    wildcard_constraints:
        split=_SPLIT_RE,
        method="|".join(BASELINES),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "data/logs/evaluate/{dataset}/{method}/classical/{split}/seed{seed}.log",
    benchmark:
        "data/benchmarks/evaluate/{dataset}/{method}/classical/{split}/seed{seed}.tsv"
    shell:
        "{PY} evaluate --config {CONFIG_PATH} --dataset {wildcards.dataset} --method {wildcards.method}"
        " --protocol classical --split {wildcards.split} --seed {wildcards.seed}"
        " --processed data/processed/{wildcards.dataset} --split-file {input.split}"
        " --out {output} --threads {threads} > {log} 2>&1"
