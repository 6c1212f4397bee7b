# provenance: what produced this run -> reports/pipeline_info/ (software versions, git commit,
# effective config + hash, hardware), built with the report, which reads it. The params make the
# rule (and so the report) rerun when the config, an installed version or the code of a method from
# another package changes; a new commit alone rebuilds neither: git.json names the commit the
# report was built from. (The report's input from here is not `ancient`: Snakemake 9 then skips the
# report when this rule reruns for its params, even when the report's own inputs changed, e.g. a
# method added to methods_run.)
from importlib import metadata as _metadata

from pipeline_src.methods.registry import outside_code as _outside_code
from pipeline_src.report.provenance import DISTRIBUTIONS as _DISTRIBUTIONS


def _installed_versions():
    out = []
    for name, dist in _DISTRIBUTIONS.items():
        try:
            out.append(f"{name}={_metadata.version(dist)}")
        except _metadata.PackageNotFoundError:
            out.append(f"{name}=none")
    return " ".join(out)


PIPELINE_INFO = {
    "versions": "reports/pipeline_info/software_versions.yaml",
    "git": "reports/pipeline_info/git.json",
    "config": "reports/pipeline_info/config.yaml",
    "config_hash": "reports/pipeline_info/config_hash.json",
    "hardware": "reports/pipeline_info/hardware.json",
}


report: "../report/workflow.rst"


rule provenance:
    output:
        **{
            k: report(v, caption="../report/pipeline_info.rst", category="Provenance")
            for k, v in PIPELINE_INFO.items()
        },
    params:
        settings=config_hash(config),
        versions=_installed_versions(),
        # the code identity of the run's methods from other packages (editing one rewrites the file)
        methods=config_hash({m: _outside_code(m) for m in config["methods_run"]}),
        out="reports/pipeline_info",
    threads: 1
    resources:
        **step_resources("provenance"),
    log:
        "data/logs/provenance.log",
    shell:
        "{PY} provenance --config {CONFIG_PATH} --out-dir {params.out} > {log} 2>&1"
