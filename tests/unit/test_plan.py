"""The adaptation plan over a table of (requires, recommends, machine) cases."""

from __future__ import annotations

from typing import Any

import pytest

from aienv.system.inventory import Capacity, Gpu
from aienv.system.plan import DoesNotFit, make_plan
from aienv.workspace.manifest import Environment, Resources

GiB = 1024**3
MiB = 1024**2

SMALL = Capacity(cpus=2, memory_free=1 * GiB, disk_free=10 * GiB, memory_total=2 * GiB)
BIG = Capacity(cpus=16, memory_free=60 * GiB, disk_free=500 * GiB, memory_total=64 * GiB)
WITH_GPU = Capacity(
    cpus=8, memory_free=30 * GiB, disk_free=100 * GiB, gpus=(Gpu(0, "RTX", 24 * GiB),)
)
KVM = Capacity(cpus=4, memory_free=8 * GiB, disk_free=50 * GiB, kvm=True)


def env(
    requires: dict[str, Any] | None = None, recommends: dict[str, Any] | None = None
) -> Environment:
    return Environment.model_validate(
        {
            "name": "e",
            "runtime": "process",
            "process": {"command": ["true"]},
            "requires": requires or {},
            "recommends": recommends or {},
        }
    )


# (requires, recommends, machine) -> (cpus, memory, fit)
CASES = [
    pytest.param(None, None, BIG, (None, None, "fits"), id="nothing asked: no limits"),
    pytest.param(
        None, {"cpus": 4, "memory": "8GiB"}, BIG, (4.0, 8 * GiB, "fits"), id="big machine"
    ),
    pytest.param(
        {"cpus": 1, "memory": "512MiB"},
        {"cpus": 4, "memory": "8GiB"},
        SMALL,
        (2.0, 1 * GiB, "fits with less"),
        id="clamped to what is free",
    ),
    pytest.param(
        {"cpus": 1, "memory": "1GiB"},
        {"memory": "4GiB"},
        SMALL,
        (1.0, 1 * GiB, "fits with less"),
        id="clamped down to exactly required",
    ),
    pytest.param({"memory": "256MiB"}, None, SMALL, (None, 256 * MiB, "fits"), id="requires only"),
    pytest.param({"cpus": 0.5}, {"cpus": 1.5}, SMALL, (1.5, None, "fits"), id="fractional cpus"),
]


@pytest.mark.parametrize(("requires", "recommends", "cap", "expected"), CASES)
def test_allocation(
    requires: dict[str, Any] | None,
    recommends: dict[str, Any] | None,
    cap: Capacity,
    expected: tuple[float | None, int | None, str],
) -> None:
    plan = make_plan(env(requires, recommends), cap, ports={})
    assert (plan.cpus, plan.memory, plan.fit) == expected
    assert not plan.shortfalls


REFUSALS = [
    pytest.param({"cpus": 4}, SMALL, "needs 4 CPUs, this machine has 2", id="cpus"),
    pytest.param(
        {"memory": "4GiB"}, SMALL, "needs 4.0 GiB of memory, 1.0 GiB is free", id="memory"
    ),
    pytest.param({"disk": "20GiB"}, SMALL, "needs 20.0 GiB of disk, 10.0 GiB is free", id="disk"),
    pytest.param({"gpu": "required"}, BIG, "needs a GPU, this machine has none", id="gpu"),
]


@pytest.mark.parametrize(("requires", "cap", "message"), REFUSALS)
def test_refusal_names_the_shortfall(requires: dict[str, Any], cap: Capacity, message: str) -> None:
    with pytest.raises(DoesNotFit) as caught:
        make_plan(env(requires), cap, ports={})
    assert message in caught.value.message
    assert "--force" in caught.value.message
    assert caught.value.plan.fit == "does not fit"
    assert message in caught.value.details()["plan"]["shortfalls"][0]
    forced = make_plan(env(requires), cap, ports={}, force=True)
    assert forced.forced and forced.shortfalls
    assert forced.notes[0].startswith("forced to launch although it does not fit")


def test_several_shortfalls_are_all_named() -> None:
    with pytest.raises(DoesNotFit) as caught:
        make_plan(env({"cpus": 64, "memory": "1TiB", "gpu": "required"}), SMALL, ports={})
    assert len(caught.value.plan.shortfalls) == 3


def test_gpu_optional_without_gpu_runs_on_cpu() -> None:
    plan = make_plan(env({"gpu": "optional"}), BIG, ports={})
    assert not plan.gpu.use and plan.gpu.devices == []
    assert plan.fit == "fits with less"
    assert "no GPU here: runs on the CPU" in plan.notes


def test_gpu_passed_through_when_present() -> None:
    for asked in ({"gpu": "optional"}, {"gpu": "required"}):
        plan = make_plan(env(asked), WITH_GPU, ports={})
        assert plan.gpu.use and plan.gpu.devices == [0]
        assert plan.fit == "fits"
    assert not make_plan(env(), WITH_GPU, ports={}).gpu.use  # gpu: none by default


def test_gpu_recommended_optional_only() -> None:
    plan = make_plan(env(None, {"gpu": "optional"}), WITH_GPU, ports={})
    assert plan.gpu.use


def test_accel_kvm_when_usable_else_tcg() -> None:
    assert make_plan(env(), KVM, ports={}, wants_accel=True).accel == "kvm"
    tcg = make_plan(env(), SMALL, ports={}, wants_accel=True)
    assert tcg.accel == "tcg"
    assert any("TCG" in n for n in tcg.notes)
    assert make_plan(env(), KVM, ports={}).accel is None  # not a VM: no choice to make


def test_runtime_defaults_fill_what_the_workspace_leaves_out() -> None:
    defaults = Resources(cpus=1, memory=512 * MiB)
    plan = make_plan(env(), KVM, ports={}, defaults=defaults, wants_accel=True)
    assert (plan.cpus, plan.memory) == (1.0, 512 * MiB)
    plan = make_plan(env(None, {"memory": "2GiB"}), KVM, ports={}, defaults=defaults)
    assert plan.memory == 2 * GiB


def test_threads_follow_cpus() -> None:
    assert make_plan(env(None, {"cpus": 2.5}), BIG, ports={}).threads == 2
    assert make_plan(env(None, {"cpus": 0.5}), BIG, ports={}).threads == 1
    assert make_plan(env(), BIG, ports={}).threads == 16


def test_ports_are_recorded() -> None:
    plan = make_plan(env(), BIG, ports={"http": 8001})
    assert plan.ports == {"http": 8001}
    assert plan.model_dump()["ports"] == {"http": 8001}


def test_announcement_summary_lists_runtimes_within_the_limit() -> None:
    from aienv.discovery.codec import Body
    from aienv.system.inventory import SUMMARY_KEYS, summary

    runtimes = {"process": (True, ""), "vm": (False, "no libvirt"), "venv": (True, "")}
    runtimes |= {f"plugin{i:02d}": (True, "") for i in range(20)}
    out = summary(BIG, runtimes)
    assert out["rt_process"] == 1 and out["rt_vm"] == 0 and out["gpus"] == 0
    assert len(out) == SUMMARY_KEYS
    assert "rt_plugin00" in out and "rt_venv" not in out  # built-ins first, then by name
    Body.model_validate(
        {"name": "n", "instance": "0" * 16, "seq": 1, "interval": 10.0, "resources": out}
    )


async def test_vm_accel_setting_overrides_what_the_machine_offers(tmp_path: Any) -> None:
    from aienv.config import NodeSettings
    from aienv.flows.planning import Planner
    from aienv.runtime.records import EnvRecords
    from aienv.runtime.vm import VmRuntime
    from aienv.state.db import Database
    from aienv.state.store import StateStore

    db = Database(tmp_path / "state.sqlite3")
    try:
        for setting, accel in (("tcg", "tcg"), ("kvm", "kvm")):
            settings = NodeSettings(home=tmp_path, vm_accel=setting)
            planner = Planner(settings, {}, {}, EnvRecords(StateStore(db)))
            plan = await planner.plan(env(), VmRuntime(), force=False)
            assert plan.accel == accel
            assert (plan.cpus, plan.memory) == (1.0, 512 * MiB)  # the VM runtime's defaults
    finally:
        db.close()
