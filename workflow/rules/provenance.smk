# provenance: what produced this run -> reports/pipeline_info/ (software versions, git commit,
# effective config + hash, hardware). The params make the rule rerun when the commit, the config
# or an installed version changes; the report rule needs its output (ancient: a new commit alone
# does not rebuild the report).
from importlib import metadata as _metadata

from pipeline_src.methods.registry import outside_code as _outside_code
from pipeline_src.report.provenance import DISTRIBUTIONS as _DISTRIBUTIONS, head_commit as _head_commit


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
        commit=_head_commit(workflow.basedir) or "none",  # read from .git, no git process
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
