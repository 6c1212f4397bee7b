# report: every result, checkpoint and benchmark -> reports/all.md, reports/tables/*.csv, reports/figures/*.png


rule report:
    input:
        results=EVAL_TARGETS,
        checkpoints=PRETRAIN_TARGETS,
        reference="config/reference_results.yaml",
        # provenance (workflow/rules/provenance.smk) is built with the report, never triggers it
        pipeline_info=ancient("reports/pipeline_info/software_versions.yaml"),
    output:
        md=report("reports/all.md", caption="../report/all.rst", category="Report"),
        tables=report(
            directory("reports/tables"), patterns=["{name}.csv"], caption="../report/tables.rst", category="Tables"
        ),
        figures=report(
            directory("reports/figures"), patterns=["{name}.png"], caption="../report/figures.rst", category="Figures"
        ),
        # headline numbers and loss curves in DVC's formats (dvc metrics / dvc plots)
        metrics="reports/metrics.json",
        plots=directory("reports/plots"),
    params:
        # the report checks every result's settings hash against the config: rebuild on any change
        settings=config_hash(config),
    threads: 1
    resources:
        **step_resources("report"),
    log:
        "data/logs/report.log",
    benchmark:
        "data/benchmarks/report.tsv"
    shell:
        "({PY} report --config {CONFIG_PATH} --reference {input.reference}"
        " --out {output.md} --tables-dir {output.tables} --figures-dir {output.figures}"
        " && {PY} metrics --config {CONFIG_PATH} --out {output.metrics}"
        " --plots-dir {output.plots}) > {log} 2>&1"
