"""bench/object_store.py at a tiny size: it runs end to end with the loader and the S3
server pinned to CPUs, says which, and leaves this process's CPUs as they were (the
timings themselves are the benchmark's business, not a test's)."""

from __future__ import annotations

import os

import pytest
from bench_scripts import bench_script


def test_cpu_lists_parse_and_name_the_cpus_that_can_be_used():
    bench = bench_script("object_store")
    usable = os.sched_getaffinity(0)
    first = min(usable)
    assert bench.cpu_set(str(first)) == {first}
    assert bench.cpu_set(f"{first}-{first}") == {first}
    assert bench.cpu_set(",".join(map(str, usable))) == usable
    for bad in ("x", "0-", "", "1-0", "0,,1", f"{max(usable) + 1}"):
        with pytest.raises(bench.argparse.ArgumentTypeError) as error:
            bench.cpu_set(bad)
        assert repr(bad) in str(error.value)


@pytest.mark.parametrize(("argv", "said"), [
    (["--loader-cpus", "1000000"],
     "error: argument --loader-cpus: '1000000': this process may use CPUs "),
    (["--server-cpus", "0", "--endpoint", "http://127.0.0.1:1"],
     "error: --server-cpus: only for the S3 server started here, not with --endpoint")])
def test_bad_cpu_options_are_one_error_line_and_exit_2(argv, said, capsys):
    with pytest.raises(SystemExit) as stopped:
        bench_script("object_store").main(argv)
    assert stopped.value.code == 2
    assert said in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_loader_and_the_server_run_on_the_cpus_given_and_cpus_are_restored(
        capsys, monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_DEFAULT_REGION"):  # the bench sets them for its server
        monkeypatch.setenv(name, os.environ.get(name, "x"))
    bench = bench_script("object_store")
    before = bench.cpus_of()
    cpu = str(min(before))
    bench.main(["--n", "64", "--repeats", "1", "--loader-cpus", cpu, "--server-cpus", cpu])
    out = capsys.readouterr().out
    assert f"loader on CPUs {cpu}, S3 server on CPUs {cpu};" in out
    assert out.count("s3/disk") == 4
    assert bench.cpus_of() == before
