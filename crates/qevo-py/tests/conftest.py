"""Shared fixtures: the embedded model and a search small enough to run in seconds."""

import pytest

import qevo

# 3 windows of 32 tokens, screening on 1, 8 plans x 2 generations, three formats.
SMALL = dict(
    generations=2,
    population=8,
    seq_len=32,
    calib_windows=3,
    screen_windows=1,
    heldout_windows=2,
    baselines=False,
    formats="q2_k,q4_k,q8_0",
)


@pytest.fixture(scope="session")
def model():
    return qevo.load()


@pytest.fixture(scope="session")
def small():
    return dict(SMALL)
