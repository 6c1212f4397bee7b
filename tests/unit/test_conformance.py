"""``method check``: every built-in method passes; broken methods fail, naming the check."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline_src.methods import BUILTIN, MaskedAutoencoder
from pipeline_src.methods.conformance import CHECKS, check_class, check_method, format_table
from plugin_files import write_plugin

ROOT = Path(__file__).resolve().parents[2]


def statuses(results, check):
    return {r.domain: r.status for r in results if r.check == check}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_method_passes(name):
    results = check_method(name, steps=2)
    assert not [r for r in results if r.failed], format_table(name, results)
    assert {(r.domain, r.check) for r in results} == {(d, c) for d in ("chemistry", "proteins", "physics") for c in CHECKS}
    if name == "none":
        assert {r.status for r in results if r.check != "build"} == {"n/a"}
    else:
        assert set(statuses(results, "steps").values()) == {"ok"}
        assert set(statuses(results, "permutation").values()) == ({"n/a"} if name == "span" else {"ok"})


def test_span_would_fail_the_permutation_check_if_forced():
    results = check_method("span", steps=2, force_permutation=True)
    assert set(statuses(results, "permutation").values()) == {"FAIL"}
    assert "permuted mask" in [r for r in results if r.failed][0].detail


class PositionMasking(MaskedAutoencoder):
    """Broken: masks the first positions whatever the input, yet claims to be domain-agnostic."""
    name = "positional"
    domain_agnostic = True
    defaults = {"mask_ratio": 0.3}

    def make_mask(self, batch, x_emb, ratio, generator, step):
        n = batch.padding_mask.shape[1]
        k = (batch.n_valid.double() * ratio).round().long().clamp(min=1)
        return (torch.arange(n)[None, :] < k[:, None]) & ~batch.padding_mask, {}


class GlobalNoise(MaskedAutoencoder):
    """Broken: draws its mask noise from the global RNG, not from the generator."""
    name = "globalnoise"
    defaults = {"mask_ratio": 0.3}

    def make_mask(self, batch, x_emb, ratio, generator, step):
        from pipeline_src.methods.masking import num_masked, random_mask

        noise = torch.rand(batch.padding_mask.shape)
        return random_mask(noise, batch.padding_mask, num_masked(batch.n_valid, ratio)), {}


class NoGradient(MaskedAutoencoder):
    """Broken: its loss does not depend on the encoder."""
    name = "nograd"
    defaults = {"mask_ratio": 0.3}

    def make_mask(self, batch, x_emb, ratio, generator, step):
        return self.random_mask(batch, ratio, generator), {}

    def forward(self, batch, generator=None, step=0):
        out = super().forward(batch, generator, step)
        out.loss = sum(p.sum() for p in self.decoder.parameters()) * 0 + out.loss.detach()
        return out


# a global-RNG draw also breaks the permutation property (the twin's noise is not the permuted noise)
@pytest.mark.parametrize("cls,checks", [(PositionMasking, {"permutation"}), (GlobalNoise, {"generator", "permutation"}),
                                        (NoGradient, {"steps"})])
def test_a_broken_method_fails_naming_the_check(cls, checks):
    results = check_class(cls, steps=2)
    failed = {r.check for r in results if r.failed}
    assert failed == checks, format_table(cls.name, results)
    check = sorted(checks)[0]
    assert f"{check} (chemistry):" in format_table(cls.name, results)


def test_the_command_exits_non_zero_naming_the_check(tmp_path):
    src = (Path(__file__).read_text().split("class PositionMasking", 1)[1].split("class GlobalNoise", 1)[0])
    module = "import torch\nfrom pipeline_src.methods import MaskedAutoencoder\n\n\nclass PositionMasking" + src
    module = module.replace('    name = "positional"\n', "")
    site = write_plugin(tmp_path / "site", "positional-masks", "posmask", {"mod": module},
                        {"positional": "posmask.mod:PositionMasking"})
    env = {**__import__("os").environ, "PYTHONPATH": f"{site}:{ROOT}"}
    r = subprocess.run([sys.executable, "-m", "pipeline_src", "method", "check", "positional", "--steps", "2"],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "positional-masks 1.0" in r.stdout
    assert "permutation (chemistry): " in r.stdout and "permutation  FAIL" in r.stdout
    ok = subprocess.run([sys.executable, "-m", "pipeline_src", "method", "check", "random", "--steps", "2"],
                        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0 and "every check passed" in ok.stdout, ok.stdout + ok.stderr


def test_the_example_package_passes(tmp_path):
    from plugin_files import install_example

    site = install_example(tmp_path / "site")
    env = {**__import__("os").environ, "PYTHONPATH": f"{site}:{ROOT}"}
    r = subprocess.run([sys.executable, "-m", "pipeline_src", "method", "check", "curriculum", "--steps", "2"],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MAE (ratio curriculum)" in r.stdout and "maskbench-curriculum 0.1.0" in r.stdout
    assert r.stdout.count("ok") >= 15 and "FAIL" not in r.stdout
