# pretrain: one job per (corpus, method, seed) -> data/checkpoints/<corpus>/<method>/seed<k>/model.pt + log.jsonl
# + meta.json (the metadata of model.pt, which the report reads).
# A killed job leaves data/checkpoints/<corpus>/<method>/seed<k>/last.pt (not a declared output, so
# Snakemake keeps it); the rerun resumes from it.
# GPUs: `resources: gpu=1` only limits how many training jobs run at once (`--resources gpu=N`);
# the command itself takes a free device through a lock-file slot (pipeline_src/train/slots.py,
# $MASKBENCH_GPU_LOCK_DIR) and sets CUDA_VISIBLE_DEVICES for itself. One job on several GPUs:
# run the same command under torchrun (see pipeline_src/train/distributed.py).


def corpus_inputs(w):
    files = processed_files(w.corpus)
    return [files["table"], files["encoding"]]


rule pretrain:
    input:
        corpus_inputs,
    output:
        model="data/checkpoints/{corpus}/{method}/seed{seed}/model.pt",
        log="data/checkpoints/{corpus}/{method}/seed{seed}/log.jsonl",
        meta="data/checkpoints/{corpus}/{method}/seed{seed}/meta.json",
    wildcard_constraints:
        corpus="|".join(sorted({d["corpus"] for d in config["domains"].values()})),
        method=METHODS_RE,
        seed=r"\d+",
    params:
        # rerun when the settings this job uses change, not when any config key does
        settings=lambda w: resolve_pretrain(config, w.corpus, w.method).settings_hash(int(w.seed)),
        processed=lambda w: f"data/processed/{w.corpus}",
        out=lambda w: f"data/checkpoints/{w.corpus}/{w.method}/seed{w.seed}",
    # small models train faster per core on one thread: two such jobs share two cores
    threads: config["resources"]["pretrain"]["threads"]
    # before any evaluation job that is ready at the same time: the long jobs start first, and
    # the one-thread evaluation jobs fill the cores around them instead of trailing at the end
    priority: 10
    resources:
        **step_resources("pretrain", gpu=True),
    log:
        "data/logs/pretrain/{corpus}/{method}/seed{seed}.log",
    benchmark:
        "data/benchmarks/pretrain/{corpus}/{method}/seed{seed}.tsv"
    shell:
        "{PY} pretrain --config {CONFIG_PATH} --corpus {wildcards.corpus} --method {wildcards.method} --seed {wildcards.seed}"
        " --processed {params.processed} --out {params.out} --threads {threads} > {log} 2>&1"


PRETRAIN_TARGETS = _plan.planned_checkpoints(config)
