# maskbench: download -> prepare -> pretrain -> evaluate -> report (see README.md).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/provenance.smk"


rule all:
    default_target: True
    input:
        "reports/all.md",


rule data:
    input:
        DATA_TARGETS,


rule pretrain_all:
    input:
        PRETRAIN_TARGETS,


rule evaluate_all:
    input:
        EVAL_TARGETS,
