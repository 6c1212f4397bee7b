# report: every result, checkpoint and benchmark -> reports/all.md, reports/tables/*.csv, reports/figures/*.png


def _write_expected(paths):
    """The planned result paths, for the report to tell 'not run' from 'failed'."""
    import hashlib
    import os

    text = "\n".join(paths) + "\n"
    p = f"data/run_config/targets-{hashlib.sha256(text.encode()).hexdigest()[:16]}.txt"
    if not os.path.exists(p):
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p + ".tmp", "w") as f:
            f.write(text)
        os.replace(p + ".tmp", p)
    return p


EXPECTED_PATH = _write_expected(EVAL_TARGETS)


rule report:
    input:
        results=EVAL_TARGETS,
        checkpoints=PRETRAIN_TARGETS,
        reference="config/reference_results.yaml",
    output:
        md="reports/all.md",
        tables=directory("reports/tables"),
        figures=directory("reports/figures"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        "data/logs/report.log",
    benchmark:
        "data/benchmarks/report.tsv"
    shell:
        "{PY} report --config {CONFIG_PATH} --expected-file {EXPECTED_PATH} --reference {input.reference}"
        " --out {output.md} --tables-dir {output.tables} --figures-dir {output.figures} > {log} 2>&1"
