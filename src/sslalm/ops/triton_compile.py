"""Compile every Triton kernel of ``sslalm.ops`` for a CUDA GPU architecture, without a GPU.

Triton's CPU interpreter (what the tests run) checks a kernel's arithmetic but not its code generation: a
kernel can be correct there and still fail to compile for a GPU, or compile with register spills that cost
much of its speed. Triton's NVIDIA backend ships ``ptxas`` and ``cuobjdump``, so the whole pipeline down to
a cubin runs on any Linux machine. This module compiles each kernel at the block sizes the wrappers launch
(bf16 activations, every optional input on: the heaviest variant) and reads the registers and stack
(spill) bytes of each from the cubin::

    python -m sslalm.ops.triton_compile --arch 90    # one JSON line per kernel; 80/86 for A100/A6000

It must run in a process where TRITON_INTERPRET is not set (the kernels must be decorated for the GPU).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

from sslalm.ops.triton_support import interpret_requested, require_triton

SCAN = "sslalm.ops.scan_triton_kernels"
CONV = "sslalm.ops.conv1d_triton_kernels"
_FP32_POINTERS = {
    "A_ptr", "D_ptr", "bias_ptr", "h0_ptr", "last_ptr", "ckpt_ptr", "dlast_ptr", "dA_ptr", "dB_ptr", "dC_ptr",
    "dD_ptr", "dbias_ptr", "dh0_ptr", "state_ptr", "w_ptr", "g_ptr", "dw_ptr",
}  # fmt: skip


@dataclass
class KernelConfig:
    """One kernel at one launch configuration (constexprs and warps)."""

    module: str
    kernel: str
    constexprs: dict[str, object]
    num_warps: int = 4
    label: str = ""
    fp32_pointers: set[str] = field(default_factory=lambda: set(_FP32_POINTERS))


def kernel_configs() -> list[KernelConfig]:
    """Each kernel at the block sizes its wrapper picks for the Mamba LM (N = 16) and DASS (N = 1) shapes."""
    from sslalm.ops import conv1d_triton, scan_triton

    scan_flags = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True)
    configs = []
    for n, groups in ((16, 1), (1, 4)):
        dg = 1536 // groups
        bd, bn, bt = scan_triton.fwd_blocks(dg, n, 2048)
        blocks = dict(BLOCK_N=bn, BLOCK_T=bt)
        fwd = dict(scan_flags, HAS_H0=True, SAVE_CKPT=True, SEGMENTED=False, SUMMARY=False, BLOCK_D=bd)
        fwd.update(blocks)
        segments, summary = dict(fwd, SEGMENTED=True), dict(fwd, SEGMENTED=True, SUMMARY=True)
        bwd_d = scan_triton.bwd_block_d(dg, bn)
        bwd = dict(scan_flags, HAS_DOUT=True, HAS_DLAST=True, BLOCK_D=bwd_d, **blocks)
        upd = dict(scan_flags, BLOCK_D=scan_triton.update_block_d(1536, bn), BLOCK_N=bn)
        configs += [
            KernelConfig(SCAN, "selective_scan_fwd_kernel", fwd, label=f"N={n}"),
            KernelConfig(SCAN, "selective_scan_fwd_kernel", segments, label=f"N={n} segments"),
            KernelConfig(SCAN, "selective_scan_fwd_kernel", summary, label=f"N={n} summaries"),
            KernelConfig(SCAN, "selective_scan_bwd_kernel", bwd, label=f"N={n}"),
            KernelConfig(SCAN, "selective_state_update_kernel", upd, label=f"N={n}"),
        ]
    width = 4
    conv = dict(W=width, HAS_BIAS=True, HAS_INIT=True, SILU=True, BLOCK_D=conv1d_triton._BLOCK_D)
    conv["BLOCK_T"] = conv1d_triton._BLOCK_T
    configs += [
        KernelConfig(CONV, "causal_conv1d_fwd_kernel", dict(conv, BACKWARD=False), label="forward"),
        KernelConfig(CONV, "causal_conv1d_fwd_kernel", dict(conv, BACKWARD=True), label="backward"),
        KernelConfig(
            CONV,
            "causal_conv1d_bwd_input_kernel",
            dict(W=width, HAS_INIT=True, BLOCK_D=conv1d_triton._BLOCK_D, BLOCK_E=conv1d_triton._BLOCK_T),
        ),
        KernelConfig(
            CONV,
            "causal_conv1d_update_kernel",
            dict(W=width, HAS_BIAS=True, SILU=True, BLOCK_D=conv1d_triton._UPDATE_BLOCK_D, BLOCK_W=width),
            fp32_pointers={"w_ptr", "bias_ptr"},
        ),
    ]
    return configs


def _resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers, stack (spill) and local bytes of the cubin's kernel, read with the backend's cuobjdump."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        cmd = [tool, "--dump-resource-usage", f.name]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", out)}
    return {"registers": found["REG"], "stack_bytes": found["STACK"], "local_bytes": found["LOCAL"]}


def compile_config(config: KernelConfig, arch: int = 90) -> dict[str, object]:
    """Compile one kernel configuration to a cubin for sm_<arch>; returns its resource usage."""
    triton = require_triton()
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(importlib.import_module(config.module), config.kernel)
    signature = {}
    for name in fn.arg_names:
        if name in config.constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in config.fp32_pointers else "*bf16"
        else:
            signature[name] = "i32"
    source = ASTSource(fn=fn, signature=signature, constexprs=config.constexprs)
    target = GPUTarget("cuda", arch, 32)
    compiled = triton.compile(source, target=target, options={"num_warps": config.num_warps})
    blocks = {k: v for k, v in config.constexprs.items() if k.startswith("BLOCK") or k == "BACKWARD"}
    return {
        "kernel": config.kernel,
        "label": config.label,
        "arch": arch,
        "num_warps": config.num_warps,
        **blocks,
        **_resource_usage(compiled.asm["cubin"]),
    }


def compile_kernels(arch: int = 90) -> list[dict[str, object]]:
    """Every configuration of :func:`kernel_configs`, compiled for sm_<arch>."""
    if interpret_requested():
        raise RuntimeError("unset TRITON_INTERPRET: the kernels must be decorated for a GPU to compile them")
    return [compile_config(config, arch) for config in kernel_configs()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 80, 86, 90")
    args = parser.parse_args(argv)
    for row in compile_kernels(args.arch):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
