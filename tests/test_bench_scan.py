"""``sslalm bench scan`` at a tiny scale: the numba rows sit beside the torch methods and agree with ref."""

from __future__ import annotations

import argparse

from sslalm.bench import scan


def test_scan_benchmark_rows():
    parser = argparse.ArgumentParser()
    scan.add_arguments(parser)
    args = parser.parse_args(
        ["--cases", "lm-demo-train", "dass-fwd", "--scale", "0.05", "--repeats", "1", "--warmup", "1"]
        + ["--methods", "ref", "chunked", "recurrent", "loop", "numba", "auto"]
    )
    result = scan.run(args)
    rows = {(r["case"], r["method"]): r for r in result["rows"]}
    assert ("lm-demo-train", "loop") not in rows  # inference only
    for case in ("lm-demo-train", "dass-fwd"):
        assert rows[(case, "auto")]["picks"] == "numba"
        for method in ("chunked", "recurrent", "numba", "auto"):
            assert rows[(case, method)]["rel_err"] < 1e-5
            assert rows[(case, method)]["wall_s"] > 0 and rows[(case, method)]["first_call_s"] > 0
