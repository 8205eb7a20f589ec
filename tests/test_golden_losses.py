"""Every trainer's first-epoch losses equal those the code gave before the shared training loop.

The numbers in ``tests/fixtures/first_epoch_losses.json`` were recorded with the per-stage
loops (commit before issue 15) by ``python -m tests.golden_runs record``: fp32, seed 3,
tiny configs on the embedded sample, so they do not depend on the CPU's bf16 support.
A refactor that changes them changed behaviour.
"""

from __future__ import annotations

import json

import pytest

from tests.golden_runs import LOSSES_FILE, run_all

EXPECTED = json.loads(LOSSES_FILE.read_text())


@pytest.fixture(scope="module")
def losses(tmp_path_factory):
    return run_all(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("trainer", sorted(EXPECTED))
def test_first_epoch_losses_are_unchanged(losses, trainer):
    assert set(losses[trainer]) == set(EXPECTED[trainer])
    for key, value in EXPECTED[trainer].items():
        assert losses[trainer][key] == pytest.approx(value, rel=2e-4, abs=1e-5), f"{trainer} {key}"
