"""Issue 11, "no doubles after kill -9": a two-tier site (slapd, a store,
an mta-in) under load, both tiers killed with SIGKILL several times; every
acknowledged message arrives exactly once and nothing arrives twice
(duplicate delivery suppression on the store, docs/delivery.md), and the
mta-in's queue ends empty (an entry finished before a kill is removed
after the restart). scripts/kill-cycles.py runs the same with 100 cycles.
"""

from __future__ import annotations

import random

import pytest

from killcycles import Load, Site, check

CYCLES = 8


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


def test_kill9_of_mta_in_and_store_under_load_loses_and_doubles_nothing(site):
    load = Load(site.mta).start()
    try:
        site.cycles(CYCLES, load, random.Random(11))
    finally:
        load.stop()
    assert len(load.acked) > 0, "no message was acknowledged under load"
    drained = site.drain(90)
    assert drained, f"mta-in queue not empty: {site.mta.queue_files()}\n{site.logs()}"
    counts = site.counts()
    lost, doubled = check(load, counts)
    print(f"{len(load.acked)} acknowledged, {len(load.tried)} sent, "
          f"{site.suppressed()} repeats suppressed by the store")
    assert not lost, f"{len(lost)} acknowledged copies lost or doubled: {lost[:20]}\n{site.logs()}"
    assert not doubled, f"{len(doubled)} doubled: {doubled[:20]}\n{site.logs()}"
    # Both processes still run cleanly after all that.
    for n in site.nodes:
        n.stop()
