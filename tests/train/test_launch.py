"""Process environment detection and the accelerate launch command."""

from __future__ import annotations

import pytest
import torch

from deepspec_core.distributed import _first_slurm_host, detect_env
from deepspec_core.errors import SpecError
from deepspec_core.train.launch import launch_command

pytestmark = pytest.mark.unit


def test_single_process_by_default():
    env = detect_env({})
    assert (env.rank, env.world_size, env.distributed, env.is_main) == (0, 1, False, True)


def test_torchrun_and_accelerate_variables():
    env = detect_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.launcher) == (3, 8, 1, "torchrun")
    assert not env.is_main


def test_slurm_srun_fills_the_rendezvous():
    environ = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5", "SLURM_STEP_ID": "0",
               "SLURM_JOB_ID": "1234", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    env = detect_env(environ)
    assert (env.rank, env.world_size, env.local_rank, env.launcher) == (5, 16, 5, "slurm")
    assert environ["MASTER_ADDR"] == "gpu07" and environ["RANK"] == "5" and environ["MASTER_PORT"] == "21234"


def test_sbatch_script_without_srun_is_one_process():
    assert detect_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}).world_size == 1


def test_slurm_host_lists():
    assert _first_slurm_host("node1,node2") == "node1"
    assert _first_slurm_host("a[3,5-9]") == "a3"
    assert _first_slurm_host("solo") == "solo"


def test_launch_command_passes_multi_node_arguments():
    cmd = launch_command(["train", "tiny-dflash"], gpus=8, nodes=2, node_rank=1, main_addr="10.0.0.1", main_port=29400)
    s = " ".join(cmd)
    assert "--num_processes 16" in s and "--num_machines 2" in s and "--machine_rank 1" in s
    assert "--main_process_ip 10.0.0.1" in s and "--main_process_port 29400" in s
    assert cmd[-3:] == ["deepspec_cli.main", "train", "tiny-dflash"]


@pytest.mark.parametrize("kw", [dict(gpus=0), dict(gpus=2, nodes=2), dict(gpus=2, nodes=2, node_rank=2, main_addr="h")])
def test_launch_command_rejects_bad_arguments(kw):
    with pytest.raises(SpecError):
        launch_command(["train", "x"], **kw)


@pytest.fixture
def one_process_group(tmp_path, monkeypatch):
    """A real one-process gloo group, and a record of the barriers entered."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    barriers: list[int] = []
    real = dist.barrier
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: (barriers.append(1), real(*a, **k))[1])
    yield barriers
    if dist.is_initialized():
        dist.destroy_process_group()


def test_a_process_leaves_its_group_through_a_barrier_after_success(one_process_group):
    import torch.distributed as dist

    from deepspec_core.distributed import leaving_process_group

    with leaving_process_group():
        dist.all_reduce(torch.ones(2))
    assert one_process_group == [1] and not dist.is_initialized()


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_after_an_error_a_process_leaves_its_group_without_waiting_for_the_others(one_process_group, exc):
    import torch.distributed as dist

    from deepspec_core.distributed import leaving_process_group

    with pytest.raises(type(exc)), leaving_process_group():
        raise exc
    assert one_process_group == [] and not dist.is_initialized()


def test_a_group_this_process_did_not_join_is_left_alone(one_process_group):
    import torch.distributed as dist

    from deepspec_core.distributed import leaving_process_group

    with leaving_process_group(joined=False):
        pass
    assert one_process_group == [] and dist.is_initialized()
