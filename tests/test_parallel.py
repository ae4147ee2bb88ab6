"""training/studies/parallel.py: results in order, errors raised in the parent, thread counts, logs, and children that
die with their parent."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT
from training.core.errors import UserError
from training.studies import parallel


def square_and_threads(x):
    import torch
    print(f"item {x}")
    return x * x, torch.get_num_threads(), os.getpid()


def nap(seconds):
    time.sleep(seconds)
    return seconds


def crash(x):
    return 1 / 0


def fail_on_two(x):
    if x == 2:
        raise UserError("item 2 is bad")
    return x


def test_plan_jobs():
    cores = parallel.cpu_count()
    assert parallel.plan_jobs(3, None, "cpu") == (min(3, 4 * cores), max(1, cores // min(3, 4 * cores)))
    assert parallel.plan_jobs(100, None, "cpu") == (4 * cores, 1)        # all at once, up to 4 per core
    assert parallel.plan_jobs(3, 1, "cpu") == (1, cores)
    assert parallel.plan_jobs(2, 8, "cpu") == (2, max(1, cores // 2))     # never more processes than runs
    assert parallel.plan_jobs(3, None, "cuda")[0] == 1                    # one process on an accelerator
    with pytest.raises(UserError, match="at least 1"):
        parallel.plan_jobs(3, 0, "cpu")


def test_children_return_in_order_with_their_threads_and_logs(tmp_path):
    seen = []
    out = parallel.run_jobs(square_and_threads, [3, 1, 2], jobs=2, threads=1,
                            log_path=lambda x: tmp_path / f"{x}.log", on_done=lambda x, r: seen.append(x))
    assert [r[0] for r in out] == [9, 1, 4]
    assert all(r[1] == 1 for r in out)                      # each child got the thread count asked for
    assert all(r[2] != os.getpid() for r in out)            # and ran in another process
    assert sorted(seen) == [1, 2, 3]
    for x in (1, 2, 3):
        assert (tmp_path / f"{x}.log").read_text() == f"item {x}\n"


def test_each_result_is_reported_as_soon_as_it_is_ready():
    seen = []
    parallel.run_jobs(nap, [4.0, 0.0], jobs=2, threads=1, on_done=lambda x, r: seen.append((x, time.monotonic())))
    assert [x for x, _ in seen] == [0.0, 4.0] and seen[1][1] - seen[0][1] > 2.0


def test_one_job_runs_in_this_process():
    out = parallel.run_jobs(square_and_threads, [2, 5], jobs=1, threads=1)
    assert [r[0] for r in out] == [4, 25] and {r[2] for r in out} == {os.getpid()}


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failed_item_is_one_line_and_the_others_finish(jobs, tmp_path, capsys):
    """An item's error (a UserError or any other) is reported in one line naming its log, which holds the details;
    the other items still run; then one UserError (JobsFailed) with the results of the others."""
    with pytest.raises(UserError, match="1 of 3 items failed") as e:
        parallel.run_jobs(fail_on_two, [1, 2, 3], jobs=jobs, threads=1, log_path=lambda x: tmp_path / f"{x}.log")
    assert isinstance(e.value, parallel.JobsFailed) and e.value.results == [1, None, 3]
    assert [f.message for f in e.value.failures] == ["item 2 is bad"]
    err = capsys.readouterr().err
    assert err == f"failed: 2: item 2 is bad (log: {tmp_path / '2.log'})\n" and "Traceback" not in err
    assert (tmp_path / "2.log").read_text().splitlines()[-1] == "error: item 2 is bad"
    with pytest.raises(UserError, match="2 of 2 items failed"):
        parallel.run_jobs(crash, [0, 1], jobs=jobs, threads=1, log_path=lambda x: tmp_path / f"c{x}.log")
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "ZeroDivisionError: division by zero" in err and "Traceback" not in err
    assert "Traceback" in (tmp_path / "c0.log").read_text()        # the details are in the log


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_children_die_with_a_killed_parent(tmp_path):
    """SIGKILL the parent while its children sleep: no child survives it."""
    pids = tmp_path / "pids"
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time

        from training.studies import parallel
        import child_mod
        if __name__ == "__main__":            # spawned children import this file again
            parallel.run_jobs(child_mod.sleeper, [{str(pids)!r}] * 2, jobs=2, threads=1)
    """))
    (tmp_path / "child_mod.py").write_text(textwrap.dedent("""
        import os, time
        def sleeper(path):
            with open(path, "a") as fh:
                fh.write(f"{os.getpid()}\\n")
            time.sleep(120)
    """))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if pids.exists() and len(pids.read_text().split()) == 2:
            break
        time.sleep(0.2)
    assert pids.exists(), "the children never started"
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        time.sleep(0.2)
    assert not alive, f"children {alive} outlived their killed parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"          # a zombie has exited
    except FileNotFoundError:
        return False
