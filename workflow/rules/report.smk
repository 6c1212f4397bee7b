# report: every result, pretraining meta.json, mask draw and benchmark -> reports/all.md,
# reports/tables/*.csv, reports/figures/*.png. The report reads files only; the mask draws come
# from their own step (rule masks), which loads a checkpoint.
MASK_TARGETS = _plan.planned_masks(config)
# the masks rule needs one method at least in its constraint, even when no method of the run draws masks
_MASK_RE = "|".join(_plan.mask_methods(config)) or "(?!)"


rule masks:
    input:
        model=lambda w: MASK_TARGETS[f"data/masks/{w.corpus}/{w.method}.json"],
        corpus=lambda w: processed_files(w.corpus)["table"],
    output:
        "data/masks/{corpus}/{method}.json",
    wildcard_constraints:
        method=_MASK_RE,
    params:
        processed=lambda w: f"data/processed/{w.corpus}",
    threads: 1
    resources:
        **step_resources("report"),
    log:
        "data/logs/masks/{corpus}/{method}.log",
    benchmark:
        "data/benchmarks/masks/{corpus}/{method}.tsv"
    shell:
        "{PY} masks --model {input.model} --processed {params.processed} --corpus {wildcards.corpus}"
        " --out {output} --threads {threads} > {log} 2>&1"



rule report:
    input:
        results=EVAL_TARGETS,
        metas=_plan.planned_metas(config),
        masks=list(MASK_TARGETS),
        reference="config/reference_results.yaml",
        # provenance (workflow/rules/provenance.smk), rebuilt with the report when the config or an
        # installed version changes
        pipeline_info="reports/pipeline_info/software_versions.yaml",
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
