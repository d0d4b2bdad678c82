"""Seam patterns: validation, kernel names, and deduplication into kernel plans."""

import pytest

from bwsk.kernels.patterns import SeamPattern, SeamUse, plan_kernels

LAYERNORM = SeamPattern("add", "layernorm", True, True, 1e-5)
RMSNORM = SeamPattern("add", "rmsnorm", True, False, 1e-6)


def test_names_are_identifiers_that_tell_patterns_apart():
    patterns = [
        LAYERNORM,
        RMSNORM,
        SeamPattern("add", "rmsnorm", True, False, 1e-5),
        SeamPattern("add", "layernorm", False, True, 1e-5),
        SeamPattern("add", "none", False, False, 0.0),
    ]
    names = [p.name for p in patterns]
    assert all(name.isidentifier() for name in names)
    assert len(set(names)) == len(names)
    assert LAYERNORM.name == "seam_add_layernorm_wb_eps1em05"


@pytest.mark.parametrize(
    "fields, message",
    [
        (("sub", "layernorm", True, True, 1e-5), "seam op"),
        (("add", "batchnorm", True, True, 1e-5), "seam norm"),
        (("add", "none", True, False, 0.0), "no weight"),
        (("add", "rmsnorm", True, False, 0.0), "positive finite"),
        (("add", "rmsnorm", True, False, float("nan")), "positive finite"),
    ],
)
def test_invalid_patterns_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        SeamPattern(*fields)


def test_plan_deduplicates_patterns_and_sorts_users():
    uses = [
        (LAYERNORM, SeamUse("pythia", "layers.1", "y1")),
        (RMSNORM, SeamUse("smollm", "layers.0", "y2")),
        (LAYERNORM, SeamUse("pythia", "layers.0", "y2")),
        (LAYERNORM, SeamUse("pythia", "layers.1", "y1")),
    ]
    plans = plan_kernels(uses)
    assert [plan.pattern for plan in plans] == [LAYERNORM, RMSNORM]
    assert plans[0].users == (SeamUse("pythia", "layers.0", "y2"), SeamUse("pythia", "layers.1", "y1"))
    assert plan_kernels(reversed(uses)) == plans
    assert plan_kernels([]) == []
